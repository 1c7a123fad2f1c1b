"""Step briefs and the review, epic and story artifact types.

`agent_task.brief` holds what a workflow step asks of its task beyond the agent's defaults (the
artifact types to write, the BMAD persona, the task file and checklist, what it reviews, the parent
of what it writes). The artifact type check gains `review`, `epic` and `story`.

Revision ID: 5b7e3c9a1d24
Revises: 9a4d2f7c1e85
Create Date: 2026-12-06 21:40:00+00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import JsonB
from alembic import op

revision = "5b7e3c9a1d24"
down_revision = "9a4d2f7c1e85"
branch_labels = None
depends_on = None

OLD_TYPES = (
    "user_input",
    "project_plan",
    "software_specification",
    "system_architecture",
    "implementation_plan",
    "source_code",
    "test_results",
    "deployment_log",
    "deployment_package",
    "agent_output",
    "hitl_response",
)
NEW_TYPES = (*OLD_TYPES, "review", "epic", "story")


def _check(types: tuple[str, ...]) -> str:
    return "artifact_type IN (" + ", ".join(f"'{name}'" for name in types) + ")"


def upgrade() -> None:
    with op.batch_alter_table("agent_task") as batch:
        batch.add_column(sa.Column("brief", JsonB, nullable=True))
    with op.batch_alter_table("artifact") as batch:
        batch.drop_constraint(op.f("ck_artifact_artifact_type_allowed"), type_="check")
        batch.create_check_constraint(op.f("ck_artifact_artifact_type_allowed"), _check(NEW_TYPES))


def downgrade() -> None:
    with op.batch_alter_table("artifact") as batch:
        batch.drop_constraint(op.f("ck_artifact_artifact_type_allowed"), type_="check")
        batch.create_check_constraint(op.f("ck_artifact_artifact_type_allowed"), _check(OLD_TYPES))
    with op.batch_alter_table("agent_task") as batch:
        batch.drop_column("brief")
