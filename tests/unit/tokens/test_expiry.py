"""A token's expiry: `botarmy token create --expires-in` durations, and a principal past its expiry."""

from __future__ import annotations

import datetime
import uuid

import click
import pytest

from app.cli.tokens import DurationParam
from app.core.security import Principal, Role


@pytest.mark.parametrize(
    ("text", "seconds"), [("3600", 3600), ("45s", 45), ("30m", 1800), ("12h", 43200), ("90D", 90 * 86400)]
)
def test_durations(text: str, seconds: int) -> None:
    assert DurationParam().convert(text, None, None) == datetime.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0", "-5", "1.5h", "2w", "h", "99999d"])
def test_bad_durations_are_refused_with_an_example(text: str) -> None:
    with pytest.raises(click.BadParameter, match="such as 3600, 30m"):
        DurationParam().convert(text, None, None)


def test_a_principal_knows_when_its_token_expires() -> None:
    now = datetime.datetime.now(datetime.UTC)
    never = Principal(token_id=uuid.uuid4(), name="n", role=Role.VIEWER)
    soon = Principal(token_id=uuid.uuid4(), name="s", role=Role.VIEWER, expires_at=now + datetime.timedelta(hours=1))
    past = Principal(token_id=uuid.uuid4(), name="p", role=Role.VIEWER, expires_at=now - datetime.timedelta(seconds=1))
    assert (never.expired(), never.seconds_left()) == (False, None)
    assert not soon.expired()
    assert 3590 < (soon.seconds_left() or 0) <= 3600
    assert past.expired()
