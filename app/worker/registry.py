"""Imports every domain's jobs module so the worker knows every job by name."""

from app.runs import jobs as task_jobs

__all__ = ("task_jobs",)
