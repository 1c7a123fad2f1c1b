"""Publish events after their transaction commits, never before and never for a rollback.

Services add Event rows to the session through `EventService.record`, which also notes them in
`session.info`. When the outermost transaction commits, the rows (ids assigned by then) are
encoded and handed to the publisher that the sessionmaker put in `session.info`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, SessionTransaction

from app.core.channels import EventPublisher, event_channels
from app.events.schemas import EventMessage

if TYPE_CHECKING:
    from app.events.models import Event

OUTBOX_KEY = "botarmy.outbox"
PUBLISHER_KEY = "botarmy.publisher"

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
    session.info.setdefault(OUTBOX_KEY, []).append(event)


@sa_event.listens_for(Session, "after_commit")
def _publish_after_commit(session: Session) -> None:
    events: list[Event] | None = session.info.pop(OUTBOX_KEY, None)
    publisher: EventPublisher | None = session.info.get(PUBLISHER_KEY)
    if not events or publisher is None:
        return
    for event in events:
        publisher.publish(encode_event(event), event_channels(event.project_id))


@sa_event.listens_for(Session, "after_soft_rollback")
def _discard_after_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(OUTBOX_KEY, None)
