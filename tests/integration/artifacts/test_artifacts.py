"""The context store on both modes: create, filters, sections, versions, staleness, delete, retention."""

from __future__ import annotations

import asyncio
import datetime
import functools
import uuid
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import func, select, update

from app.artifacts.models import Artifact
from app.config import Settings
from app.db.engine import build_db_config
from app.events.models import Event
from tests import factories
from tests.helpers import wait_for_task

SPEC = factories.SPECIFICATION


new_project = functools.partial(factories.new_project, name="store")


async def create(client: AsyncClient, project_id: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"/api/v1/projects/{project_id}/artifacts", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def count_artifacts(settings: Settings, project_id: str) -> int:
    config = build_db_config(settings.db)
    try:
        async with config.get_session() as session:
            statement = select(func.count()).select_from(Artifact).where(Artifact.project_id == uuid.UUID(project_id))
            return int(await session.scalar(statement) or 0)
    finally:
        await config.get_engine().dispose()


async def test_create_read_and_split_into_sections(client: AsyncClient) -> None:
    project_id = await new_project(client)
    spec = await create(
        client,
        project_id,
        artifact_type="software_specification",
        title="PRD",
        content=SPEC,
        metadata={"confidence": 0.8, "tags": ["prd", "v1"], "validation_status": "needs_review"},
    )
    assert spec["version"] == 1
    assert spec["granularity"] == "document"
    assert spec["metadata"]["tags"] == ["prd", "v1"]
    assert (await client.get(f"/api/v1/artifacts/{spec['id']}")).json() == spec

    tree = (await client.get(f"/api/v1/projects/{project_id}/context")).json()
    [document] = tree["documents"]
    assert document["id"] == spec["id"]
    assert [s["title"] for s in document["sections"]] == [
        "Vision",
        "Personas",
        "Business requirements",
        "Feature map",
        "Success criteria",
    ]
    vision = (await client.get(f"/api/v1/artifacts/{document['sections'][0]['id']}")).json()
    assert vision["content"] == {"vision": "Families share recipes."}
    assert vision["parent_id"] == spec["id"]
    assert vision["granularity"] == "section"

    notes = await create(
        client, project_id, artifact_type="user_input", title="Notes", content="# Goals\nShare.\n## Risks\nNone yet."
    )
    sections = (await client.get(f"/api/v1/projects/{project_id}/artifacts", params={"parent_id": notes["id"]})).json()[
        "items"
    ]
    assert [s["title"] for s in sections] == ["Goals", "Risks"]
    concept = await create(
        client,
        project_id,
        artifact_type="agent_output",
        title="Database: PostgreSQL",
        content={"summary": "We chose PostgreSQL for transactions."},
        granularity="concept",
    )
    assert concept["granularity"] == "concept"


async def test_list_filters_and_pages(client: AsyncClient) -> None:
    project_id = await new_project(client)
    before = datetime.datetime.now(datetime.UTC).isoformat()
    await asyncio.sleep(0.01)
    first = await create(client, project_id, artifact_type="user_input", title="Alpha idea", content={"text": "kanban"})
    second = await create(
        client,
        project_id,
        artifact_type="user_input",
        title="Beta",
        content={"text": "a Kanban board"},
        metadata={"tags": ["ui"]},
    )
    third = await create(client, project_id, artifact_type="software_specification", title="PRD", content=SPEC)
    path = f"/api/v1/projects/{project_id}/artifacts"

    async def ids(**params: Any) -> list[str]:
        response = await client.get(path, params={"granularity": "document", **params})
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert await ids() == [first["id"], second["id"], third["id"]]
    assert await ids(artifact_type="user_input") == [first["id"], second["id"]]
    assert await ids(tag="ui") == [second["id"]]
    assert await ids(tag="u") == []  # a tag matches whole
    assert await ids(q="KANBAN") == [first["id"], second["id"]]
    assert await ids(q="alpha") == [first["id"]]
    assert await ids(created_after=before) == [first["id"], second["id"], third["id"]]
    assert await ids(created_before=before) == []
    assert await ids(stale="true") == []
    page = (await client.get(path, params={"granularity": "document", "limit": 2})).json()
    assert len(page["items"]) == 2
    rest = (await client.get(path, params={"granularity": "document", "cursor": page["next_cursor"]})).json()
    assert [item["id"] for item in rest["items"]] == [third["id"]]
    assert rest["next_cursor"] is None
    assert "content" not in page["items"][0]
    # Unfiltered (the pages built once, `app.artifacts.search`): the same pages, every summary field.
    unfiltered = (await client.get(path, params={"limit": 2})).json()
    assert unfiltered == page
    after = (await client.get(path, params={"cursor": unfiltered["next_cursor"]})).json()["items"]
    assert after[0] == {key: value for key, value in third.items() if key not in ("content", "task_id")}
    sections = after[1:]
    assert sections and all(item["granularity"] == "section" and item["parent_id"] == third["id"] for item in sections)
    assert await ids(stale="false") == [first["id"], second["id"], third["id"]]
    # A project without artifacts is an empty page; one that does not exist, a 404.
    empty = await new_project(client)
    assert (await client.get(f"/api/v1/projects/{empty}/artifacts")).json() == {"items": [], "next_cursor": None}
    assert (await client.get(f"/api/v1/projects/{uuid.uuid4()}/artifacts")).status_code == 404
    bad_params: list[tuple[dict[str, str | int], str]] = [
        ({"artifact_type": "poem"}, "artifact_type"),
        ({"limit": 0}, "limit"),
        ({"tag": "no spaces"}, "tag"),
        ({"created_after": "yesterday"}, "created_after"),
    ]
    for params, field in bad_params:
        bad = await client.get(path, params=params)
        assert bad.status_code == 400, params
        assert field in bad.text


async def test_bad_artifacts_are_refused_and_nothing_is_stored(client: AsyncClient, settings: Settings) -> None:
    project_id = await new_project(client)
    other_project = await new_project(client)
    elsewhere = await create(client, other_project, artifact_type="user_input", title="x", content={"text": "x"})
    cases: list[tuple[dict[str, Any], str]] = [
        ({"artifact_type": "software_specification", "title": "PRD", "content": {"vision": "only"}}, "personas"),
        (
            {
                "artifact_type": "source_code",
                "title": "c",
                "content": {"files": [{"path": "../etc/passwd", "language": "x", "content": ""}]},
            },
            "path",
        ),
        ({"artifact_type": "software_specification", "title": "t", "content": "text"}, "JSON object"),
        ({"artifact_type": "user_input", "title": "", "content": {}}, "title"),
        ({"artifact_type": "sonnet", "title": "t", "content": {}}, "artifact_type"),
        ({"artifact_type": "user_input", "title": "t", "content": {}, "metadata": {"confidence": 1.5}}, "confidence"),
        (
            {"artifact_type": "user_input", "title": "t", "content": {}, "metadata": {"validation_status": "great"}},
            "validation_status",
        ),
        (
            {
                "artifact_type": "user_input",
                "title": "t",
                "content": {},
                "metadata": {"related_artifacts": [elsewhere["id"]]},
            },
            "not in this project",
        ),
        ({"artifact_type": "user_input", "title": "t", "content": {}, "granularity": "section"}, "parent_id"),
        ({"artifact_type": "user_input", "title": "t", "content": {"x": "y" * 600_000}}, "larger than"),
    ]
    for body, reason in cases:
        response = await client.post(f"/api/v1/projects/{project_id}/artifacts", json=body)
        assert response.status_code in (400, 413, 422), (body, response.text)
        assert reason in response.text, (reason, response.text)
    assert await count_artifacts(settings, project_id) == 0
    assert (await client.post(f"/api/v1/projects/{uuid.uuid4()}/artifacts", json=cases[3][0])).status_code in (400, 404)


async def test_versions_and_staleness(client: AsyncClient) -> None:
    project_id = await new_project(client)
    spec = await create(client, project_id, artifact_type="software_specification", title="PRD", content=SPEC)
    design = await create(
        client,
        project_id,
        artifact_type="user_input",
        title="Design notes",
        content={"text": "Follows the PRD"},
        metadata={"derived_from": [spec["id"]]},
    )
    changed = {**SPEC, "vision": "Families and friends share recipes."}
    response = await client.patch(
        f"/api/v1/artifacts/{spec['id']}", json={"content": changed, "change_note": "wider audience"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 2

    versions = (await client.get(f"/api/v1/artifacts/{spec['id']}/versions")).json()["items"]
    assert [(v["version"], v["change_note"]) for v in versions] == [(1, "created"), (2, "wider audience")]
    assert versions[1]["changed_by"].startswith("test-admin-")
    old = (await client.get(f"/api/v1/artifacts/{spec['id']}/versions/1")).json()
    assert old["content"]["vision"] == "Families share recipes."
    assert (await client.get(f"/api/v1/artifacts/{spec['id']}/versions/3")).status_code == 404

    stale = (await client.get(f"/api/v1/projects/{project_id}/artifacts", params={"stale": "true"})).json()["items"]
    assert [item["id"] for item in stale] == [design["id"]]
    assert "PRD" in stale[0]["stale_reason"]
    # Sections follow the new content; the old ones are gone from the tree.
    [document] = [
        d
        for d in (await client.get(f"/api/v1/projects/{project_id}/context")).json()["documents"]
        if d["id"] == spec["id"]
    ]
    vision = (await client.get(f"/api/v1/artifacts/{document['sections'][0]['id']}")).json()
    assert vision["content"]["vision"].startswith("Families and friends")

    invalid = await client.patch(f"/api/v1/artifacts/{spec['id']}", json={"content": {"vision": "broken"}})
    assert invalid.status_code in (400, 422)
    assert "personas" in invalid.text
    assert (await client.get(f"/api/v1/artifacts/{spec['id']}")).json()["version"] == 2  # nothing stored


async def test_concurrent_patches_each_make_a_version(client: AsyncClient) -> None:
    project_id = await new_project(client)
    notes = await create(client, project_id, artifact_type="user_input", title="n", content={"text": "0"})
    responses = await asyncio.gather(
        *(client.patch(f"/api/v1/artifacts/{notes['id']}", json={"content": {"text": str(n)}}) for n in range(1, 6))
    )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    versions = (await client.get(f"/api/v1/artifacts/{notes['id']}/versions")).json()["items"]
    assert [v["version"] for v in versions] == [1, 2, 3, 4, 5, 6]
    final = (await client.get(f"/api/v1/artifacts/{notes['id']}")).json()
    assert final["version"] == 6
    assert final["content"] == (await client.get(f"/api/v1/artifacts/{notes['id']}/versions/6")).json()["content"]


async def test_delete_is_soft_and_recorded(client: AsyncClient, settings: Settings) -> None:
    project_id = await new_project(client)
    spec = await create(client, project_id, artifact_type="software_specification", title="PRD", content=SPEC)
    assert (await client.delete(f"/api/v1/artifacts/{spec['id']}")).status_code == 200
    assert (await client.get(f"/api/v1/artifacts/{spec['id']}")).status_code == 404
    assert (await client.delete(f"/api/v1/artifacts/{spec['id']}")).status_code == 404
    assert (await client.get(f"/api/v1/projects/{project_id}/context")).json()["documents"] == []
    assert await count_artifacts(settings, project_id) == 6  # the rows stay, with their sections
    config = build_db_config(settings.db)
    try:
        async with config.get_session() as session:
            kinds = list(
                await session.scalars(
                    select(Event.event_type).where(Event.project_id == uuid.UUID(project_id)).order_by(Event.id)
                )
            )
    finally:
        await config.get_engine().dispose()
    assert kinds[-1] == "artifact_deleted"


async def test_retention_never_purges_what_is_in_use(client: AsyncClient, settings: Settings) -> None:
    project_id = await new_project(client)
    old_used = await create(client, project_id, artifact_type="user_input", title="used", content={"text": "u"})
    old_free = await create(client, project_id, artifact_type="user_input", title="free", content={"text": "f"})
    fresh = await create(client, project_id, artifact_type="user_input", title="fresh", content={"text": "n"})
    # A task that waits for a human keeps its context alive.
    task = await client.post(
        f"/api/v1/projects/{project_id}/tasks",
        json={"agent_type": "analyst", "instructions": "x [[offline:question=ok?]]", "context_ids": [old_used["id"]]},
    )
    await wait_for_task(client, task.json()["task_id"], "waiting_for_hitl")
    config = build_db_config(settings.db)
    try:
        async with config.get_session() as session:
            long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=200)
            await session.execute(
                update(Artifact)
                .where(Artifact.id.in_([uuid.UUID(old_used["id"]), uuid.UUID(old_free["id"])]))
                .values(created_at=long_ago)
            )
            await session.commit()
    finally:
        await config.get_engine().dispose()
    purged = await client.post("/api/v1/artifacts/purge", params={"older_than_days": 90})
    assert purged.status_code == 200, purged.text
    # This call or the embedded server's own retention sweep (it may run meanwhile) purged it, as an event.
    assert (await client.get(f"/api/v1/artifacts/{old_free['id']}")).status_code == 404
    log = await client.get("/api/v1/audit/events", params={"project_id": project_id, "event_type": "artifacts_purged"})
    assert any(old_free["id"] in item["data"]["artifact_ids"] for item in log.json()["items"])
    assert (await client.get(f"/api/v1/artifacts/{old_used['id']}")).status_code == 200
    assert (await client.get(f"/api/v1/artifacts/{fresh['id']}")).status_code == 200


async def test_text_search_pages_across_the_walked_window(client: AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Search walks the first rows in id order, then asks the index past them: pages join up exactly."""
    monkeypatch.setattr("app.artifacts.search.SEARCH_WINDOW", 3)
    project_id = await new_project(client)
    matching: list[str] = []
    for n in range(12):
        word = "zanzibar" if n in (1, 2, 5, 8, 9, 11) else "plain"
        created = await create(
            client, project_id, artifact_type="user_input", title=f"note {n}", content={"text": f"a {word} note"}
        )
        if word == "zanzibar":
            matching.append(created["id"])
    found: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"q": "Zanzibar", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"/api/v1/projects/{project_id}/artifacts", params=params)).json()
        found += [item["id"] for item in page["items"] if item["granularity"] == "document"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert found == matching


async def test_text_search_reads_the_texts_lowercased_not_the_json(client: AsyncClient) -> None:
    project_id = await new_project(client)
    menu = await create(
        client,
        project_id,
        artifact_type="user_input",
        title="Menu",
        content={"text": "Café École", "items": [{"name": "Widget_42", "count": 17}]},
    )
    done = await create(client, project_id, artifact_type="user_input", title="Status", content={"text": "100% done"})
    path = f"/api/v1/projects/{project_id}/artifacts"

    async def ids(q: str) -> list[str]:
        response = await client.get(path, params={"granularity": "document", "q": q})
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert await ids("école") == [menu["id"]]  # beyond ASCII, in both databases
    assert await ids("ÉCOLE") == [menu["id"]]
    assert await ids("widget_42") == [menu["id"]]
    assert await ids("17") == [menu["id"]]  # numbers are text too
    assert await ids("count") == []  # the JSON's keys are not
    assert await ids("%") == [done["id"]]  # LIKE's wildcards are matched literally
    assert await ids("_") == [menu["id"]]
    assert await ids("menu") == [menu["id"]]
    updated = await client.patch(
        f"/api/v1/artifacts/{menu['id']}", json={"title": "Carte", "content": {"text": "Brasserie"}}
    )
    assert updated.status_code == 200, updated.text
    assert await ids("école") == []
    assert await ids("brasserie") == [menu["id"]]
    assert await ids("carte") == [menu["id"]]


async def test_a_parent_of_another_project_is_as_unknown_as_a_missing_one(client: AsyncClient) -> None:
    """No existence oracle: another project's artifact and an unknown id answer the same 404."""
    mine, theirs = [
        str((await client.post("/api/v1/projects", json={"name": name})).json()["id"]) for name in ("mine", "theirs")
    ]
    other = await client.post(
        f"/api/v1/projects/{theirs}/artifacts", json={"artifact_type": "user_input", "title": "t", "content": {}}
    )
    answers = []
    for parent_id in (other.json()["id"], str(uuid.uuid4())):
        answer = await client.post(
            f"/api/v1/projects/{mine}/artifacts",
            json={"artifact_type": "user_input", "title": "s", "content": {}, "parent_id": parent_id},
        )
        answers.append((answer.status_code, answer.json()["detail"].replace(parent_id, "ID")))
    assert answers[0] == answers[1]
    assert answers[0][0] == 404
