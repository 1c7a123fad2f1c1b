"""State machines: a table of legal moves per machine, checked in one place.

Each domain writes its table (`state -> the states it may move to`); every change of state goes
through `Transitions.check`, so an illegal move is a bug that fails loudly instead of a row left
in a state nothing expects. Staying in the same state is always allowed (a no-op).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Generic, TypeVar

from app.core.exceptions import ConflictError

S = TypeVar("S", bound=StrEnum)


class IllegalTransition(ConflictError):
    """A move the machine's table does not allow."""


class Transitions(Generic[S]):
    def __init__(self, name: str, moves: Mapping[S, frozenset[S]]) -> None:
        self.name = name
        self.moves = dict(moves)

    def allows(self, current: S, target: S) -> bool:
        return current == target or target in self.moves.get(current, frozenset())

    def check(self, current: S, target: S) -> S:
        """`target`, if the table allows the move from `current`; else IllegalTransition."""
        if not self.allows(current, target):
            raise IllegalTransition(
                f"{self.name}: {current.value} cannot become {target.value}.",
                extra={"machine": self.name, "from": current.value, "to": target.value},
            )
        return target

    def terminal(self, state: S) -> bool:
        return not self.moves.get(state)
