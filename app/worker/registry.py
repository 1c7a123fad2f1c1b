"""Imports every domain's jobs module so the worker knows every job by name."""

from app.tasks import jobs as task_jobs

__all__ = ("task_jobs",)
