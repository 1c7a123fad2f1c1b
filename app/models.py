"""Imports every domain's models, so that mappers, Alembic and tests see the whole schema."""

from app.agents.models import AgentStatus, LlmUsage
from app.artifacts.models import Artifact, ArtifactVersion
from app.db.base import metadata
from app.events.models import Event
from app.hitl.models import HitlHistory, HitlRequest
from app.projects.models import Project
from app.tasks.models import AgentTask
from app.tokens.models import ApiToken
from app.workflows.models import Handoff, WorkflowExecution

__all__ = (
    "AgentStatus",
    "AgentTask",
    "ApiToken",
    "Artifact",
    "ArtifactVersion",
    "Event",
    "Handoff",
    "HitlHistory",
    "HitlRequest",
    "LlmUsage",
    "Project",
    "WorkflowExecution",
    "metadata",
)
