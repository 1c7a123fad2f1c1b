"""Events recorded before a savepoint outlive its release (SQLAlchemy calls `after_commit` for it too)."""

from __future__ import annotations

from sqlalchemy import select

from app.config import Settings
from app.db.engine import build_db_config, upgrade_database_async
from app.events.models import Event
from app.events.services import EventService
from app.projects.models import Project


async def test_events_before_a_savepoint_are_written_at_the_commit(isolated_settings: Settings) -> None:
    await upgrade_database_async(isolated_settings.db)
    config = build_db_config(isolated_settings.db)
    try:
        async with config.get_session() as session:
            project = Project(name="savepoint", description="")
            session.add(project)
            await session.flush()
            events = EventService(session=session)
            await events.record("project_updated", project_id=project.id, data=_update(project.id, "before"))
            async with session.begin_nested():  # released, not rolled back
                await events.record("project_updated", project_id=project.id, data=_update(project.id, "inside"))
            await events.record("project_updated", project_id=project.id, data=_update(project.id, "after"))
            await session.commit()
        async with config.get_session() as session:
            written = await session.scalars(select(Event).where(Event.project_id == project.id).order_by(Event.id))
            assert [event.data["changes"] for event in written] == [["before"], ["inside"], ["after"]]
    finally:
        await config.get_engine().dispose()


def _update(project_id: object, change: str) -> dict[str, object]:
    return {"project_id": str(project_id), "changes": [change], "status": "active"}
