"""Text from outside is cleaned before storage; markup is kept as text (it is escaped where rendered)."""

from __future__ import annotations

from httpx import AsyncClient

from app.core.sanitize import clean_json, clean_text, strip_active_content


def test_clean_text_removes_invisible_and_control_characters() -> None:
    hidden = "admin\u202e\u2066 = true\x00\x07\x1b[31m\ufeff\u200b"
    assert clean_text(hidden) == "admin = true[31m"
    assert clean_text("tabs\tand\nnewlines\r\nstay") == "tabs\tand\nnewlines\r\nstay"
    assert clean_text("cafe\u0301") == "caf\u00e9"  # one form for equal text (NFC)


def test_clean_json_reaches_keys_and_nested_values() -> None:
    assert clean_json({"k\x00ey": ["v\x01", {"x": "y\u202e"}], "n": 3, "b": None}) == {
        "key": ["v", {"x": "y"}],
        "n": 3,
        "b": None,
    }


def test_strip_active_content_for_prose() -> None:
    prose = (
        'Intro <script>alert(1)</script><b onclick="steal()">bold</b> '
        "<a href='javascript:alert(2)'>x</a><iframe src=x></iframe><STYLE>p{}</STYLE> end"
    )
    cleaned = strip_active_content(prose)
    for needle in ("<script", "alert(1)", "onclick", "javascript:", "<iframe", "<STYLE"):
        assert needle not in cleaned
    assert cleaned.startswith("Intro ")
    assert "<b>bold</b>" in cleaned
    assert cleaned.endswith(" end")


async def test_request_bodies_are_cleaned_before_storage(client: AsyncClient) -> None:
    created = await client.post(
        "/api/v1/projects",
        json={"name": "Todo\u202e\x00", "description": "line one\nline\x07 two", "settings": {"t\x1bag": ["a\u200b"]}},
    )
    assert created.status_code == 201, created.text
    project = (await client.get(f"/api/v1/projects/{created.json()['id']}")).json()
    assert project["name"] == "Todo"
    assert project["description"] == "line one\nline two"
    assert project["settings"] == {"tag": ["a"]}
    # Code is content, not an attack on us: a task may talk about <script> and keeps it.
    instructions = "Render <script src='app.js'></script> in index.html"
    task = await client.post(
        f"/api/v1/projects/{project['id']}/tasks", json={"agent_type": "coder", "instructions": instructions}
    )
    stored = (await client.get(f"/api/v1/tasks/{task.json()['task_id']}")).json()
    assert stored["instructions"] == instructions
