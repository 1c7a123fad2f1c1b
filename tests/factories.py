"""Objects the tests make over and over, made one way through the api."""

from __future__ import annotations

from typing import Any

from httpx import AsyncClient

# A valid `software_specification` content (a document whose sections the store splits out).
SPECIFICATION: dict[str, Any] = {
    "vision": "Families share recipes.",
    "personas": [{"name": "Cook", "description": "Cooks daily.", "needs": ["speed"]}],
    "business_requirements": [{"id": "BR-1", "description": "Store recipes.", "priority": "must"}],
    "feature_map": [{"name": "Recipes", "description": "CRUD for recipes.", "requirement_ids": ["BR-1"]}],
    "success_criteria": ["A recipe is saved in under a minute."],
}


async def new_project(client: AsyncClient, name: str = "project", **fields: Any) -> str:
    """A project made through `POST /api/v1/projects`; its id."""
    response = await client.post("/api/v1/projects", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])
