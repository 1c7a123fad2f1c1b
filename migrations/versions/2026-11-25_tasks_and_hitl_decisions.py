"""Decisions around tasks: at-most-once tasks, redo feedback, and HITL expiry warnings.

- `agent_task.at_most_once`: work with effects outside the server is never retried blindly.
- `agent_task.feedback`, `agent_task.redo_of`: a rejected result is redone by a new task that
  carries the reviewer's comment.
- `agent_task.mediates`: an orchestrator task mediating the disagreement another task reported.
- `hitl_request.warned_at`: the expiry warning is sent once.

Revision ID: 3f8b1c6e2a47
Revises: 7c2e4a9d5b13
Create Date: 2026-11-25 00:30:00+00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

revision = "3f8b1c6e2a47"
down_revision = "7c2e4a9d5b13"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("agent_task", sa.Column("at_most_once", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("agent_task", sa.Column("feedback", sa.Text(), nullable=True))
    op.add_column("agent_task", sa.Column("redo_of", GUID(length=16), nullable=True))
    op.add_column("agent_task", sa.Column("mediates", GUID(length=16), nullable=True))
    op.add_column("hitl_request", sa.Column("warned_at", DateTimeUTC(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hitl_request") as batch:
        batch.drop_column("warned_at")
    with op.batch_alter_table("agent_task") as batch:
        batch.drop_column("mediates")
        batch.drop_column("redo_of")
        batch.drop_column("feedback")
        batch.drop_column("at_most_once")
