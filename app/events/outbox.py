"""Events get their ids in commit order, and are published after their transaction commits.

Services record events through `EventService.record`, which only notes them in `session.info`.
At the very end of the transaction (SQLAlchemy's `before_commit`, after everything else has been
flushed) they are written under the event-order lock, which is held until the commit ends:
PostgreSQL's transaction-scoped advisory lock on one key, taken by the statement that inserts
them (ids from the sequence once the lock is held); SQLite lets one writer at a time anyway. So:

- ids are assigned in commit order: a transaction that commits later never has a smaller id;
- once an event is visible, every event with a smaller id that will ever exist is visible too
  (the lock is released only after the commit is visible);
- a gap in the ids is a transaction that failed after writing its events: it never fills.

Streams rely on this (`app.events.hub`): the table read up to an id and the live events after it
form one sequence, with nothing missing and nothing twice. After the commit the written rows are
encoded and handed to the publisher that the sessionmaker put in `session.info`.

The lock is held from the statement that inserts the events to the end of the commit, so every
event-writing commit waits for the one before. In a transaction of several statements that hold
includes a round trip to the client (the result of the insert, then COMMIT) and whatever keeps the
client's event loop from sending COMMIT at once: under load, milliseconds. A write that fits in one
statement (a task submission, `app.tasks.services`) runs it on its own, outside a transaction
block (`INSERT_ORDERED_AFTER_WRITTEN`, `committed`): PostgreSQL commits it at the end of that
statement, and the lock is held only while the server executes and commits it, with no round trip
inside.
"""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import Executable, func, insert, select, text
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, SessionTransaction

from app.core.channels import PUBLISHER_KEY, EventPublisher, event_channels
from app.core.instruments import count_published
from app.events.models import Event
from app.events.schemas import EventMessage

PENDING_KEY = "botarmy.events.pending"  # recorded, not yet written
WRITTEN_KEY = "botarmy.events.written"  # written in this transaction, published once it commits
# The key of the PostgreSQL advisory lock that orders event-writing commits ("BotArmy" as a number).
EVENT_ORDER_LOCK = 0x426F7441726D79

_encoder = msgspec.json.Encoder()
# After a CTE `ordered` (which takes the order lock): the events of `{rows}` inserted in their order,
# `{only}` a condition on them or nothing, returning their ids in order. `{rows}` is `EVENT_ROWS`, the
# JSON array in the bind parameter `event_rows` (`event_rows()`), or a relation `r` of the same columns.
# The lock key is the bind parameter `event_order_lock` (`EVENT_ORDER_LOCK`).
_INSERT_EVENTS_AFTER_ORDERED = """
    INSERT INTO event (id, event_type, project_id, task_id, actor, data, created_at)
    SELECT nextval('event_id_seq'), e.event_type, e.project_id, e.task_id, e.actor, e.data, e.created_at
    FROM (
        SELECT r.* FROM ordered, {rows}
        {only}
        ORDER BY r.n
    ) AS e
    RETURNING id
"""
EVENT_ROWS = """jsonb_to_recordset(CAST(:event_rows AS jsonb)) AS r(
            n int, event_type text, project_id uuid, task_id uuid, actor text, data jsonb, created_at timestamptz
        )"""
# The end of a `WITH written AS (…)` statement: once `written` has a row, take the order lock and
# insert the events. If `written` has no row, nothing is inserted and no lock is taken.
INSERT_ORDERED_AFTER_WRITTEN = """
    , ordered AS MATERIALIZED (
        SELECT pg_advisory_xact_lock(:event_order_lock) FROM (SELECT 1 FROM written LIMIT 1) AS one
    )""" + _INSERT_EVENTS_AFTER_ORDERED.format(rows=EVENT_ROWS, only="")  # noqa: S608 - fixed text, no value formatted in
# After a `WITH changed AS (…)` whose one row counts, in `changed.changed_rows`, the rows its statement
# changed (no row: nothing written at all): the body of the CTE `ordered`, which takes the order lock
# after the count (so after the statement's row locks), and only if an event is inserted; then the
# insert of the events of `{rows}` (`insert_events_if_changed`): those numbered below the bind
# parameter `always_written` in any case, the others only if that count is not 0.
ORDERED_AFTER_CHANGED = """
        SELECT pg_advisory_xact_lock(:event_order_lock), c.changed_rows FROM changed AS c
        WHERE c.changed_rows > 0 OR :always_written > 0"""


def insert_events_if_changed(rows: str = EVENT_ROWS) -> str:
    """The events' INSERT after `ORDERED_AFTER_CHANGED`, from `rows` (`EVENT_ROWS` or a relation `r`)."""
    only = "WHERE r.n < :always_written OR ordered.changed_rows > 0"
    return _INSERT_EVENTS_AFTER_ORDERED.format(rows=rows, only=only)


# The end of a `WITH changed AS (…)` statement: `ORDERED_AFTER_CHANGED`, then the events of `EVENT_ROWS`.
INSERT_ORDERED_AFTER_CHANGED = f"""
    , ordered AS MATERIALIZED ({ORDERED_AFTER_CHANGED}
    )""" + insert_events_if_changed()
_NOTHING_ELSE_WRITTEN = "WITH written AS (SELECT 1)"
_LOCK_AND_INSERT = text(_NOTHING_ELSE_WRITTEN + INSERT_ORDERED_AFTER_WRITTEN)


def event_rows(events: list[Event]) -> str:
    """The JSON of `events` for `INSERT_ORDERED_AFTER_WRITTEN`'s `event_rows` parameter."""
    return _encoder.encode(
        [
            {
                "n": n,
                "event_type": event.event_type,
                "project_id": event.project_id,
                "task_id": event.task_id,
                "actor": event.actor,
                "data": event.data,
                "created_at": event.created_at,
            }
            for n, event in enumerate(events)
        ]
    ).decode()


def written_in(session: Session, events: list[Event], ids: list[int]) -> None:
    """`events` were written in the session's transaction and got `ids`: they are published once it
    commits."""
    for event, event_id in zip(events, ids, strict=True):
        event.id = event_id
    session.info.setdefault(WRITTEN_KEY, []).extend(events)


def committed(session: Session, events: list[Event], ids: list[int]) -> None:
    """`events` were written with `INSERT_ORDERED_AFTER_WRITTEN` by a statement that committed on its
    own and got `ids`: publish them now, with the publisher of `session`."""
    for event, event_id in zip(events, ids, strict=True):
        event.id = event_id
    publish(session, events)


def publish(session: Session, events: list[Event]) -> None:
    publisher: EventPublisher | None = session.info.get(PUBLISHER_KEY)
    if not events or publisher is None:
        return
    for event in events:
        publisher.publish(encode_event(event), event_channels(event.project_id))
    count_published(len(events))


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


def add_to_outbox(session: Session, event: Event) -> None:
    session.info.setdefault(PENDING_KEY, []).append(event)


def write_pending(session: Session) -> None:
    """Write the session's recorded events now, in commit order; the order lock is held until the commit.

    Called at commit; called earlier only by a transaction that needs an event's id before it ends
    (then only its last few statements may follow, none that waits for another transaction's row).
    """
    pending = take_pending(session)
    if not pending:
        return
    # Everything else first: while holding the order lock, a transaction never waits for a row lock.
    session.flush()
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # One statement takes the lock and inserts: the ids come from the sequence once the lock is
        # held, and the lock is held from there to the commit, not across a round trip per statement.
        params = {"event_order_lock": EVENT_ORDER_LOCK, "event_rows": event_rows(pending)}
        ids = list(connection.execute(_LOCK_AND_INSERT, params).scalars())
    else:
        # SQLite: one writer at a time already; the next ids after the highest.
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
        highest = connection.execute(select(func.max(Event.id))).scalar() or 0
        ids = list(range(highest + 1, highest + 1 + len(rows)))
        connection.execute(insert(Event), [{**row, "id": event_id} for row, event_id in zip(rows, ids, strict=True)])
    written_in(session, pending, ids)  # the objects stay out of the session: they carry what was written


def take_pending(session: Session) -> list[Event]:
    """The events recorded so far, taken out for the caller's own statement to write (then `written_in`)."""
    pending: list[Event] | None = session.info.pop(PENDING_KEY, None)
    return pending or []


def write_pending_with(session: Session, statement: Executable, params: dict[str, Any], if_changed: Event) -> bool:
    """Write the transaction's last change and its events in one statement (PostgreSQL): `statement`
    is `WITH changed AS (…)` + `INSERT_ORDERED_AFTER_CHANGED`; the events recorded so far are written
    in any case, `if_changed` after them only if the change changed a row (returned: did it).

    One round trip instead of two (the change, then the events at commit). The order lock is held
    from here to the commit, as after `write_pending`: only the commit may follow.
    """
    pending = take_pending(session)
    session.flush()  # as in write_pending: no row lock waited for under the order lock
    events = [*pending, if_changed]
    params = {
        **params,
        "event_order_lock": EVENT_ORDER_LOCK,
        "event_rows": event_rows(events),
        "always_written": len(pending),
    }
    ids = list(session.connection().execute(statement, params).scalars())
    written_in(session, events[: len(ids)], ids)
    return len(ids) > len(pending)


@sa_event.listens_for(Session, "before_commit")
def _write_before_commit(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint's release: the transaction goes on
        return
    write_pending(session)


@sa_event.listens_for(Session, "after_commit")
def _publish_after_commit(session: Session) -> None:
    # SQLAlchemy also calls this when a savepoint is released: the transaction, and what it recorded,
    # go on (dropping the pending events here lost those recorded before the savepoint).
    if session.in_nested_transaction():
        return
    session.info.pop(PENDING_KEY, None)
    events: list[Event] | None = session.info.pop(WRITTEN_KEY, None)
    if events:
        publish(session, events)


@sa_event.listens_for(Session, "after_soft_rollback")
def _discard_after_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(PENDING_KEY, None)
        session.info.pop(WRITTEN_KEY, None)
