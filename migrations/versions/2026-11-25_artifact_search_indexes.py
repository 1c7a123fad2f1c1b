"""Artifact retrieval indexes: (project_id, id) for lists, trigram indexes for text search.

Measured in bench/README.md ("Context store retrieval"): without them a project's first page and
unindexed filters walk the primary key through older projects' rows, and `q` converts every
candidate row's content to text. The trigram indexes are PostgreSQL only; `pg_trgm` is a trusted
extension (PostgreSQL 13+), so the database owner may create it.

Revision ID: 7c2e4a9d5b13
Revises: 1df08b06f01f
Create Date: 2026-11-25 00:00:00+00:00
"""

from __future__ import annotations

from alembic import op

revision = "7c2e4a9d5b13"
down_revision = "1df08b06f01f"
branch_labels = None
depends_on = None

TRIGRAM_INDEXES = {
    "ix_artifact_title_trgm": "lower(title)",
    "ix_artifact_content_trgm": "lower(content::text)",
}


def upgrade() -> None:
    op.create_index("ix_artifact_project_id_id", "artifact", ["project_id", "id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        for name, expression in TRIGRAM_INDEXES.items():
            op.execute(f"CREATE INDEX {name} ON artifact USING gin ({expression} gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in TRIGRAM_INDEXES:
            op.drop_index(name, table_name="artifact")
    op.drop_index("ix_artifact_project_id_id", table_name="artifact")
