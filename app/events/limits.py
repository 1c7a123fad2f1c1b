"""How many event streams (WebSocket and Server-Sent Events) a process keeps open: per token, and in all.

The process's limits (`BOTARMY_WS_MAX_CONNECTIONS_PER_TOKEN`, `BOTARMY_WS_MAX_CONNECTIONS`) are
counted in this process: a stream is a live connection to it, gone when it closes or the process
ends, so nothing needs sharing (several api instances each hold their own share). A socket past a
limit is accepted and closed at once with the reason: 4429 for a token at its cap (its client opens
too many), 1013 (try again later) for a process at its cap. An SSE request past a limit is answered
429 or 503 with the reason (`check`, before its response starts).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from uuid import UUID

CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_TOO_MANY = 4429


class StreamRefusedError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class StreamLimits:
    def __init__(self, per_token: int, total: int) -> None:
        self.per_token = per_token
        self.total = total
        self.open = 0
        self._of_token: dict[UUID, int] = {}

    def open_of(self, token_id: UUID) -> int:
        return self._of_token.get(token_id, 0)

    def check(self, token_id: UUID) -> None:
        """StreamRefusedError if one more stream of `token_id` would be past a limit."""
        if self.open >= self.total:
            raise StreamRefusedError(
                CLOSE_TRY_AGAIN_LATER, f"this server has {self.total} streams open, its limit; try again later"
            )
        if self._of_token.get(token_id, 0) >= self.per_token:
            raise StreamRefusedError(CLOSE_TOO_MANY, f"this token has {self.per_token} streams open, its limit")

    @contextlib.contextmanager
    def hold(self, token_id: UUID) -> Iterator[None]:
        """Count a stream of `token_id` while it is open; StreamRefusedError past a limit."""
        self.check(token_id)
        self._of_token[token_id] = self._of_token.get(token_id, 0) + 1
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1
            left = self._of_token[token_id] - 1
            if left:
                self._of_token[token_id] = left
            else:
                del self._of_token[token_id]
