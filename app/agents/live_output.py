"""Model output as it streams, sent to clients as `agent_output_delta` messages.

Live only: they are not stored (the stored record is the finished artifact) and have no event id,
so they are never replayed. Small pieces are sent together (every `FLUSH_SECONDS`, or sooner once
`FLUSH_CHARS` characters wait), so that a model streaming token by token does not flood the channels;
a fast stream (the offline provider writes a whole answer at once) is one or a few messages, not one
per piece: each message is a Redis round trip of the worker.
"""

from __future__ import annotations

import datetime
import time

import msgspec

from app.core.channels import EventPublisher, event_channels
from app.events.schemas import EventMessage
from app.tasks.models import AgentTask

FLUSH_CHARS = 16_000
FLUSH_SECONDS = 0.1

_encoder = msgspec.json.Encoder()


class LiveOutput:
    def __init__(self, publisher: EventPublisher, task: AgentTask, attempt: int) -> None:
        self.publisher = publisher
        self.task = task
        self.attempt = attempt
        self.sequence = 0
        self.pending: list[str] = []
        self.pending_chars = 0
        self.last_flush = time.monotonic()

    async def __call__(self, piece: str) -> None:
        self.pending.append(piece)
        self.pending_chars += len(piece)
        if self.pending_chars >= FLUSH_CHARS or time.monotonic() - self.last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        text = "".join(self.pending)
        self.pending, self.pending_chars, self.last_flush = [], 0, time.monotonic()
        self.sequence += 1
        message = EventMessage(
            id=None,
            event_type="agent_output_delta",
            project_id=self.task.project_id,
            data={
                "task_id": str(self.task.id),
                "agent_type": self.task.agent_type,
                "attempt": self.attempt,
                "sequence": self.sequence,
                "text": text,
            },
            timestamp=datetime.datetime.now(datetime.UTC),
        )
        self.publisher.publish(_encoder.encode(message), event_channels(self.task.project_id))
