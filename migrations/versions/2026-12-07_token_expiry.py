"""Tokens may expire: `api_token.expires_at` (null: never).

Revision ID: 4c9e1b7a2f58
Revises: 8e2a5c7f1d63
Create Date: 2026-12-07 04:30:00+00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision = "4c9e1b7a2f58"
down_revision = "8e2a5c7f1d63"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema_upgrades()
    data_upgrades()


def downgrade() -> None:
    data_downgrades()
    schema_downgrades()


def schema_upgrades() -> None:
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", DateTimeUTC(timezone=True), nullable=True))


def schema_downgrades() -> None:
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.drop_column("expires_at")


def data_upgrades() -> None:
    """Existing tokens never expire (null)."""


def data_downgrades() -> None:
    """Nothing to undo."""
