"""Artifact search text: text search reads one lowercased column instead of converting content.

`artifact.search_text` holds the title and every string and number of the content, lowercased
(`app.artifacts.models.search_text_of`, kept current on every write). On PostgreSQL one trigram index
on it replaces the two on `lower(title)` and `lower(content::text)`. Filled here for existing rows
by the same function, so that old and new rows are searched alike.

Revision ID: 9a4d2f7c1e85
Revises: 3f8b1c6e2a47
Create Date: 2026-11-25 02:30:00+00:00
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

from app.artifacts.models import search_text_of

revision = "9a4d2f7c1e85"
down_revision = "3f8b1c6e2a47"
branch_labels = None
depends_on = None

BATCH = 1000
OLD_TRIGRAM_INDEXES = {
    "ix_artifact_title_trgm": "lower(title)",
    "ix_artifact_content_trgm": "lower(content::text)",
}


def _content(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value  # SQLite returns JSON text


def upgrade() -> None:
    op.add_column("artifact", sa.Column("search_text", sa.Text(), server_default="", nullable=False))
    bind = op.get_bind()
    artifact = sa.table(
        "artifact", sa.column("id"), sa.column("title"), sa.column("content"), sa.column("search_text")
    )
    last_id = None
    while True:
        page = sa.select(artifact.c.id, artifact.c.title, artifact.c.content).order_by(artifact.c.id).limit(BATCH)
        if last_id is not None:
            page = page.where(artifact.c.id > last_id)
        rows = bind.execute(page).all()
        if not rows:
            break
        bind.execute(
            artifact.update().where(artifact.c.id == sa.bindparam("row_id")).values(search_text=sa.bindparam("text")),
            [{"row_id": row.id, "text": search_text_of(row.title, _content(row.content))} for row in rows],
        )
        last_id = rows[-1].id
    if bind.dialect.name == "postgresql":
        for name in OLD_TRIGRAM_INDEXES:
            op.drop_index(name, table_name="artifact")
        op.execute("CREATE INDEX ix_artifact_search_text_trgm ON artifact USING gin (search_text gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_artifact_search_text_trgm", table_name="artifact")
        for name, expression in OLD_TRIGRAM_INDEXES.items():
            op.execute(f"CREATE INDEX {name} ON artifact USING gin ({expression} gin_trgm_ops)")
    op.drop_column("artifact", "search_text")
