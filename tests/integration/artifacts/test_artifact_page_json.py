"""The unfiltered artifact page that PostgreSQL renders (`app.artifacts.search.page_json`) is the page
the api renders from rows (`list_page`, then msgspec): the same summaries, fields and cursors."""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any

import msgspec
from sqlalchemy import update

from app.api.artifacts import summary_of_row
from app.artifacts.models import Artifact
from app.artifacts.search import ArtifactFilters, list_page, page_json
from app.config import load_settings
from app.db.engine import build_db_config
from tests import factories
from tests.helpers import app_client

SPEC = factories.SPECIFICATION
TITLES = ['Café ☕ 𝄞 "quoted" \\ back', "tab\tand\nnewline", "ascii", "emoji 🧪 and ünïcödé", "</script>&<b>"]
UTC = datetime.UTC


async def test_rendered_pages_are_the_pages_built_from_rows(services_env: dict[str, str]) -> None:
    settings = load_settings(services_env)
    async with app_client(settings) as client:
        project_id = await factories.new_project(client, name="rendered pages")
        empty_project = await factories.new_project(client, name="no artifacts")
        ids = []
        for number, title in enumerate(TITLES):
            body: dict[str, Any] = {"artifact_type": "user_input", "title": title, "content": {"text": title}}
            body["metadata"] = {"tags": [f"t{number}"], "confidence": 1 / 3}
            response = await client.post(f"/api/v1/projects/{project_id}/artifacts", json=body)
            assert response.status_code == 201, response.text
            ids.append(uuid.UUID(response.json()["id"]))
        spec = {"artifact_type": "software_specification", "title": "PRD", "content": SPEC}
        response = await client.post(f"/api/v1/projects/{project_id}/artifacts", json=spec)
        assert response.status_code == 201, response.text  # a document and its sections (parent_id set)
    project = uuid.UUID(project_id)
    config = build_db_config(settings.db)
    engine = config.get_engine()
    try:
        async with engine.begin() as connection:
            # Timestamps msgspec renders without microseconds, with trailing zeros, before 1970; a stale
            # one with its reason; a deleted one, left out.
            at = {
                ids[0]: datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                ids[1]: datetime.datetime(2026, 1, 2, 3, 4, 5, 1000, tzinfo=UTC),
                ids[2]: datetime.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            }
            for artifact_id, moment in at.items():
                values = {"created_at": moment, "updated_at": moment + datetime.timedelta(microseconds=1)}
                await connection.execute(update(Artifact).where(Artifact.id == artifact_id).values(**values))
            # Metadata as JSON of any shape, whatever the api accepts today.
            meta = {"tags": ["ü"], "note": TITLES[0], "nested": {"list": [1, 2.5, None, True, 1e16, -0.0]}}
            await connection.execute(update(Artifact).where(Artifact.id == ids[2]).values(meta=meta))
            stale = {"stale": True, "stale_reason": "upstream «PRD» changed"}
            await connection.execute(update(Artifact).where(Artifact.id == ids[3]).values(**stale))
            deleted = datetime.datetime.now(UTC)
            await connection.execute(update(Artifact).where(Artifact.id == ids[4]).values(deleted_at=deleted))
        everything = ArtifactFilters()
        async with engine.connect() as connection:
            assert connection.dialect.name == "postgresql"
            for limit in (1, 2, 3, 7, 50):
                cursor: uuid.UUID | None = None
                seen: list[str] = []
                while True:
                    rendered = await page_json(connection, project, everything, limit=limit, cursor=cursor)
                    assert rendered is not None
                    items_json, count, next_cursor = rendered
                    rows, row_cursor = await list_page(connection, project, everything, limit=limit, cursor=cursor)
                    built = msgspec.json.decode(msgspec.json.encode([summary_of_row(row) for row in rows]))
                    assert json.loads(items_json) == built
                    assert (count, next_cursor) == (len(rows), row_cursor)
                    seen += [item["id"] for item in built]
                    if next_cursor is None:
                        break
                    cursor = next_cursor
                assert str(ids[4]) not in seen and {str(i) for i in ids[:4]} <= set(seen)
                assert len(seen) == len(set(seen)) > len(TITLES)  # the sections too, each once
            rendered = await page_json(connection, uuid.UUID(empty_project), everything, limit=50, cursor=None)
            assert rendered == (b"[]", 0, None)
            # A filtered page is built from rows.
            assert await page_json(connection, project, ArtifactFilters(stale=True), limit=50, cursor=None) is None
    finally:
        await engine.dispose()
