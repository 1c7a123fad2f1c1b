"""How the coordination reaches the domains: the services of one session, each built once.

`services(session).tasks` instead of `TaskService(session=session)` at every turn: one provider, and
every service of a transaction shares its session (the services keep nothing else).
"""

from __future__ import annotations

from functools import cached_property

from sqlalchemy.ext.asyncio import AsyncSession

from app.agents.services import AgentService
from app.artifacts.services import ArtifactService
from app.events.services import EventService
from app.hitl.services import HitlService
from app.tasks.services import TaskService

_KEY = "botarmy.services"


class DomainServices:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @cached_property
    def tasks(self) -> TaskService:
        return TaskService(session=self.session)

    @cached_property
    def agents(self) -> AgentService:
        return AgentService(session=self.session)

    @cached_property
    def artifacts(self) -> ArtifactService:
        return ArtifactService(session=self.session)

    @cached_property
    def events(self) -> EventService:
        return EventService.of(self.session)

    @cached_property
    def hitl(self) -> HitlService:
        return HitlService(session=self.session)


def services(session: AsyncSession) -> DomainServices:
    """The domain services of `session`, made on first use and kept with it."""
    found = session.info.get(_KEY)
    if not isinstance(found, DomainServices) or found.session is not session:
        found = session.info[_KEY] = DomainServices(session)
    return found
