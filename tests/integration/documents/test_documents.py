"""Documents assembled from the context store, rendered through templates, exported as md, html, zip."""

from __future__ import annotations

import io
import zipfile
from typing import Any

from httpx import AsyncClient

from app.config import load_settings
from app.tasks.models import AgentType
from tests.helpers import app_client, wait_for_task

SPEC: dict[str, Any] = {
    "vision": "Families share recipes. <script>alert('x')</script>",
    "personas": [{"name": "Cook", "description": "Cooks daily.", "needs": ["speed", "photos"]}],
    "business_requirements": [{"id": "BR-1", "description": "Store recipes.", "priority": "must"}],
    "feature_map": [{"name": "Recipes", "description": "CRUD | for recipes.", "requirement_ids": ["BR-1"]}],
    "success_criteria": ["A recipe is saved in under a minute."],
}


async def project_with_work(client: AsyncClient) -> str:
    project_id = str(
        (await client.post("/api/v1/projects", json={"name": "Recipe Box", "description": "Recipes"})).json()["id"]
    )
    for agent in AgentType:
        submitted = await client.post(
            f"/api/v1/projects/{project_id}/tasks", json={"agent_type": agent.value, "instructions": "recipe box"}
        )
        await wait_for_task(client, submitted.json()["task_id"], "completed")
    return project_id


async def test_documents_per_stage_and_combined(client: AsyncClient) -> None:
    project_id = await project_with_work(client)
    body = (await client.get(f"/api/v1/projects/{project_id}/documents")).json()
    stages = [document["stage"] for document in body["documents"]]
    assert stages == ["prd", "architecture", "implementation_plan", "test_report", "deployment_guide"]
    prd = body["documents"][0]["markdown"]
    lines = prd.splitlines()
    assert lines[0] == "# Recipe Box Product Requirements Document (PRD)"
    headings = [line for line in lines if line.startswith("#")]
    assert headings[1:4] == ["## Vision", "## Personas", "### Primary user"]
    assert "{{" not in prd
    architecture = body["documents"][1]["markdown"]
    assert "| Component | Responsibility | Technology |" in architecture
    assert "| api | HTTP API and validation | Python |" in architecture
    combined = body["combined"]["markdown"]
    assert combined.startswith("# Recipe Box\n")
    assert "## Recipe Box Product Requirements Document (PRD)" in combined
    assert "## Recipe Box Deployment Guide" in combined
    assert body["combined"]["artifact_ids"] == [a for d in body["documents"] for a in d["artifact_ids"]]


async def test_a_newer_version_is_what_the_documents_show(client: AsyncClient) -> None:
    project_id = str((await client.post("/api/v1/projects", json={"name": "Versions"})).json()["id"])
    created = await client.post(
        f"/api/v1/projects/{project_id}/artifacts",
        json={"artifact_type": "software_specification", "title": "PRD", "content": SPEC},
    )
    await client.patch(
        f"/api/v1/artifacts/{created.json()['id']}", json={"content": {**SPEC, "vision": "Version two."}}
    )
    prd = (await client.get(f"/api/v1/projects/{project_id}/documents")).json()["documents"][0]["markdown"]
    assert "Version two." in prd
    assert "Families share" not in prd


async def test_exports_stream_with_type_and_name(client: AsyncClient) -> None:
    project_id = await project_with_work(client)
    # A document a person wrote, with markup in it: the HTML export must not carry script.
    await client.post(
        f"/api/v1/projects/{project_id}/artifacts",
        json={"artifact_type": "software_specification", "title": "PRD by hand", "content": SPEC},
    )
    base = f"/api/v1/projects/{project_id}/documents/export"

    markdown = await client.get(base, params={"format": "md"})
    assert markdown.status_code == 200
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.headers["content-disposition"] == 'attachment; filename="recipe-box.md"'
    assert markdown.text.startswith("# Recipe Box")

    html = await client.get(base, params={"format": "html"})
    assert html.headers["content-type"].startswith("text/html")
    assert html.text.lstrip().lower().startswith("<!doctype html>")
    assert "<script>alert" not in html.text
    assert "&lt;script&gt;alert" in html.text
    assert "<table>" in html.text

    archive = await client.get(base, params={"format": "zip"})
    assert archive.headers["content-type"] == "application/zip"
    assert archive.headers["content-disposition"] == 'attachment; filename="recipe-box.zip"'
    names = set(zipfile.ZipFile(io.BytesIO(archive.content)).namelist())
    assert {"docs/prd.md", "docs/prd.html", "docs/architecture.md", "docs/all-documents.md", "README.md"} <= names
    assert any(name.startswith("src/app/") and name.endswith(".py") for name in names)
    assert any(name.startswith("src/tests/test_") for name in names)
    assert "src/Containerfile" in names
    assert all(".." not in name and not name.startswith("/") for name in names)

    bad = await client.get(base, params={"format": "pdf"})
    assert bad.status_code == 400
    assert "format" in bad.text


async def test_an_empty_project_has_no_documents(client: AsyncClient) -> None:
    project_id = str((await client.post("/api/v1/projects", json={"name": "Empty"})).json()["id"])
    body = (await client.get(f"/api/v1/projects/{project_id}/documents")).json()
    assert body["documents"] == []
    assert body["combined"]["markdown"].startswith("# Empty")


def code(*paths: str, size: int = 10) -> dict[str, Any]:
    return {"files": [{"path": path, "language": "python", "content": "x = 1\n" * size} for path in paths]}


async def post_code(client: AsyncClient, project_id: str, content: dict[str, Any]) -> Any:
    return await client.post(
        f"/api/v1/projects/{project_id}/artifacts",
        json={"artifact_type": "source_code", "title": "code", "content": content},
    )


async def test_file_paths_are_normal_and_unique(client: AsyncClient) -> None:
    project_id = str((await client.post("/api/v1/projects", json={"name": "Paths"})).json()["id"])
    for paths in (["x\n"], ["x/"], ["./././x"], ["a//b"], ["x", "./x"], ["x", "x"], ["/etc/passwd"], ["a/../b"]):
        refused = await post_code(client, project_id, code(*paths))
        assert refused.status_code in (400, 422), (paths, refused.text)
    assert (await post_code(client, project_id, code("app/main.py", "README.md"))).status_code == 201
    archive = await client.get(f"/api/v1/projects/{project_id}/documents/export", params={"format": "zip"})
    names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
    assert len(names) == len(set(names))
    assert {"src/app/main.py", "src/README.md"} <= set(names)


async def test_html_export_shows_only_inline_images(client: AsyncClient) -> None:
    project_id = str((await client.post("/api/v1/projects", json={"name": "Images"})).json()["id"])
    pixel = "data:image/png;base64,iVBORw0KGgo="
    vision = f"See ![tracker](https://evil.example/t.png) and ![logo]({pixel})."
    await client.post(
        f"/api/v1/projects/{project_id}/artifacts",
        json={"artifact_type": "software_specification", "title": "PRD", "content": {**SPEC, "vision": vision}},
    )
    page = (await client.get(f"/api/v1/projects/{project_id}/documents/export", params={"format": "html"})).text
    assert "evil.example" not in page.split("<body>")[1].split("[image: tracker]")[0]
    assert '<img src="https:' not in page
    assert f'<img src="{pixel}"' in page
    assert "img-src data:;" in page
    assert "https:" not in page.split("img-src")[1].split(";")[0]


async def test_exports_over_the_limits_are_413_naming_them(embedded_env: dict[str, str]) -> None:
    settings = load_settings({**embedded_env, "BOTARMY_EXPORT_MAX_FILES": "12", "BOTARMY_EXPORT_MAX_BYTES": "20000"})
    async with app_client(settings) as client:
        project_id = str((await client.post("/api/v1/projects", json={"name": "Big"})).json()["id"])
        export = f"/api/v1/projects/{project_id}/documents/export"
        assert (await post_code(client, project_id, code("a.py", "b.py"))).status_code == 201
        assert (await client.get(export, params={"format": "zip"})).status_code == 200
        assert (await post_code(client, project_id, code(*(f"m{i}.py" for i in range(10))))).status_code == 201
        too_many = await client.get(export, params={"format": "zip"})
        assert too_many.status_code == 413, too_many.text
        assert "BOTARMY_EXPORT_MAX_FILES" in too_many.json()["detail"]
        assert too_many.json()["extra"]["max_files"] == 12
        big_id = str((await client.post("/api/v1/projects", json={"name": "Bigger"})).json()["id"])
        assert (await post_code(client, big_id, code("big.py", size=5000))).status_code == 201
        too_big = await client.get(f"/api/v1/projects/{big_id}/documents/export", params={"format": "zip"})
        assert too_big.status_code == 413
        assert "BOTARMY_EXPORT_MAX_BYTES" in too_big.json()["detail"]
        # Counted by the database before anything is read: the stored documents the zip would read.
        assert "bytes of stored documents" in too_big.json()["detail"], too_big.json()
        assert too_big.json()["extra"]["max_bytes"] == 20000
        # The Markdown export reads no code: the same project exports.
        markdown = await client.get(f"/api/v1/projects/{big_id}/documents/export", params={"format": "md"})
        assert markdown.status_code == 200, markdown.text
