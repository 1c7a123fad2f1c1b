"""How a request's session ends: advanced-alchemy's autocommit, except that a read has nothing to commit.

A GET or HEAD runs `reading_only` (`app.db.engine`): on PostgreSQL its statements run without a
transaction, on SQLite in a deferred one. Committing it only walked SQLAlchemy's commit machinery and
its listeners (6 % of a status read); closing the session is all it needs. A read that left something
to write (objects added or changed, events recorded) is committed as any other request.
"""

from __future__ import annotations

import structlog
from advanced_alchemy.extensions.litestar import async_autocommit_handler_maker
from advanced_alchemy.extensions.litestar._utils import delete_aa_scope_state, get_aa_scope_state
from advanced_alchemy.extensions.litestar.plugins.init.config.common import SESSION_TERMINUS_ASGI_EVENTS
from litestar.types import BeforeMessageSendHookHandler, Message, Scope
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.engine import is_reading_only
from app.events.outbox import PENDING_KEY

logger = structlog.get_logger("app.api")


def _only_read(session: AsyncSession) -> bool:
    return (
        is_reading_only()
        and not session.info.get(PENDING_KEY)
        and not (session.new or session.dirty or session.deleted)
    )


def request_session_finisher(session_scope_key: str) -> BeforeMessageSendHookHandler:
    """The before-send handler of the database config whose sessions live under `session_scope_key`
    (advanced-alchemy makes the key unique per config in a process)."""
    autocommit = async_autocommit_handler_maker(session_scope_key=session_scope_key)

    async def finish_request_session(message: Message, scope: Scope) -> None:
        session: AsyncSession | None = get_aa_scope_state(scope, session_scope_key)
        if session is None or not _only_read(session):
            await autocommit(message, scope)
            return
        if message["type"] in SESSION_TERMINUS_ASGI_EVENTS:
            try:
                await session.close()
            except Exception:  # the read succeeded; a connection that fails now is the pool's to replace
                logger.warning("session_close_failed", exc_info=True)
            delete_aa_scope_state(scope, session_scope_key)

    return finish_request_session
