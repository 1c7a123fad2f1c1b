"""Events get their ids in commit order, and are published after their transaction commits.

Services record events through `EventService.record`, which only notes them in `session.info`.
At the very end of the transaction (SQLAlchemy's `before_commit`, after everything else has been
flushed) they are written under the event-order lock, which is held until the commit ends:
PostgreSQL's transaction-scoped advisory lock on one key; SQLite already lets one writer at a
time. Under that lock each event gets the next id after the highest one in the table. So:

- ids are assigned in commit order: a transaction that commits later never has a smaller id;
- ids have no gaps: a rolled-back transaction's ids are given again to the next one;
- once an event is visible, every event with a smaller id is visible too (the lock is released
  only after the commit is visible).

Streams rely on this (`app.events.hub`): the table read up to an id and the live events after it
form one sequence, with nothing missing and nothing twice. After the commit the written rows are
encoded and handed to the publisher that the sessionmaker put in `session.info`.
"""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import event as sa_event
from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session, SessionTransaction

from app.core.channels import EventPublisher, event_channels
from app.events.models import Event
from app.events.schemas import EventMessage

PENDING_KEY = "botarmy.events.pending"  # recorded, not yet written
WRITTEN_KEY = "botarmy.events.written"  # written in this transaction, published once it commits
PUBLISHER_KEY = "botarmy.publisher"
# The key of the PostgreSQL advisory lock that orders event-writing commits ("BotArmy" as a number).
EVENT_ORDER_LOCK = 0x426F7441726D79

_encoder = msgspec.json.Encoder()


def to_message(event: Event) -> EventMessage:
    return EventMessage(
        id=event.id,
        event_type=event.event_type,
        project_id=event.project_id,
        data=event.data,
        timestamp=event.created_at,
    )


def encode_event(event: Event) -> bytes:
    return _encoder.encode(to_message(event))


def session_info(publisher: EventPublisher | None) -> dict[str, Any]:
    """The `info` a sessionmaker needs for its sessions to publish their events."""
    return {PUBLISHER_KEY: publisher} if publisher is not None else {}


def add_to_outbox(session: Session, event: Event) -> None:
    session.info.setdefault(PENDING_KEY, []).append(event)


def write_pending(session: Session) -> None:
    """Write the session's recorded events now, in commit order; the order lock is held until the commit.

    Called at commit; called earlier only by a transaction that needs an event's id before it ends
    (then only its last few statements may follow, none that waits for another transaction's row).
    """
    pending: list[Event] | None = session.info.pop(PENDING_KEY, None)
    if not pending:
        return
    # Everything else first: while holding the order lock, a transaction never waits for a row lock.
    session.flush()
    rows: list[dict[str, Any]] = [
        {
            "event_type": event.event_type,
            "project_id": event.project_id,
            "task_id": event.task_id,
            "actor": event.actor,
            "data": event.data,
            "created_at": event.created_at,
        }
        for event in pending
    ]
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": EVENT_ORDER_LOCK})
    # Under the lock, as little as possible: the highest id, one insert, then the commit.
    highest = connection.execute(select(func.max(Event.id))).scalar() or 0
    for offset, (event, row) in enumerate(zip(pending, rows, strict=True), start=1):
        event.id = row["id"] = highest + offset  # the objects stay out of the session: they carry what was written
    connection.execute(insert(Event), rows)
    session.info.setdefault(WRITTEN_KEY, []).extend(pending)


@sa_event.listens_for(Session, "before_commit")
def _write_before_commit(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint's release: the transaction goes on
        return
    write_pending(session)


@sa_event.listens_for(Session, "after_commit")
def _publish_after_commit(session: Session) -> None:
    session.info.pop(PENDING_KEY, None)
    events: list[Event] | None = session.info.pop(WRITTEN_KEY, None)
    publisher: EventPublisher | None = session.info.get(PUBLISHER_KEY)
    if not events or publisher is None:
        return
    for event in events:
        publisher.publish(encode_event(event), event_channels(event.project_id))


@sa_event.listens_for(Session, "after_soft_rollback")
def _discard_after_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(PENDING_KEY, None)
        session.info.pop(WRITTEN_KEY, None)
