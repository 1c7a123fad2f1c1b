"""Tasks with effects outside the server are at most once: `agent_task.at_most_once`.

Revision ID: 3f8b1c6e2a47
Revises: 7c2e4a9d5b13
Create Date: 2026-11-25 00:30:00+00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "3f8b1c6e2a47"
down_revision = "7c2e4a9d5b13"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("agent_task", sa.Column("at_most_once", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("agent_task") as batch:
        batch.drop_column("at_most_once")
