"""Which tokens this process knows to be revoked, heard from the `token_revoked` events.

The token is checked against the database when a request or a stream begins; a stream then lives
for hours. The live hub (`app.events.hub`) hands every `token_revoked` event it hears of to
`RevokedTokens.observe`, on every api process, within the hub's ordering delay: the listeners end
the token's open streams (WebSocket close 4401, an SSE `error` event) and what a stream receives
afterwards is refused without a database lookup (`token_id in revoked`). Ids are only ever added
(a revoked token stays revoked), and a token that is revoked again adds nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

import msgspec
import structlog

from app.events.live import LiveEvent

logger = structlog.get_logger(__name__)

TOKEN_REVOKED = "token_revoked"
REVOKED_REASON = "The token was revoked."
EXPIRED_REASON = "The token expired."


class TokenRevokedError(Exception):
    """The token of what is being done was revoked meanwhile: nothing is done."""


class _RevokedData(msgspec.Struct):
    token_id: UUID


class _Revoked(msgspec.Struct):
    data: _RevokedData


_decoder = msgspec.json.Decoder(_Revoked)


class RevokedTokens:
    """A process's set of revoked token ids, and who to tell when one is added."""

    def __init__(self) -> None:
        self._ids: set[UUID] = set()
        self._listeners: list[Callable[[UUID], object]] = []

    def __contains__(self, token_id: object) -> bool:
        return token_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def on_revoked(self, listener: Callable[[UUID], object]) -> None:
        """Call `listener(token_id)` (it must not raise) when a token is revoked."""
        self._listeners.append(listener)

    def add(self, token_id: UUID) -> None:
        if token_id in self._ids:
            return
        self._ids.add(token_id)
        for listener in self._listeners:
            listener(token_id)

    def observe(self, event: LiveEvent) -> None:
        """A `token_revoked` event as the hub hands it on (`LiveHub.watch`). Never raises."""
        try:
            token_id = _decoder.decode(event.text).data.token_id
        except (msgspec.DecodeError, msgspec.ValidationError):
            logger.warning("token_revoked_event_undecodable", event_id=event.id)
            return
        self.add(token_id)
