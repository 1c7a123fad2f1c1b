"""Objects the tests make over and over, made one way through the api."""

from __future__ import annotations

from typing import Any

from httpx import AsyncClient


async def new_project(client: AsyncClient, name: str = "project", **fields: Any) -> str:
    """A project made through `POST /api/v1/projects`; its id."""
    response = await client.post("/api/v1/projects", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])
