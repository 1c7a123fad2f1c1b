"""YAML from files we do not control (BMAD directories, templates): `yaml.safe_load` without aliases.

`safe_load` builds no Python objects, but it does resolve aliases, and a few hundred bytes of
nested aliases (`a: &a [x, x, ...]`, `b: &b [*a, *a, ...]`, ...) stand for millions of nodes
once they are walked: a 443-byte file became a 79 MB API response. No BMAD file uses anchors, so
an alias (`*name`) is refused as a parse error with its position; nesting deeper than Python's
recursion limit is a parse error too.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.events import AliasEvent
from yaml.nodes import Node


class NoAliasLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses aliases."""

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise ComposerError(None, None, f"YAML aliases (*{event.anchor}) are not accepted", event.start_mark)
        node: Node | None = super().compose_node(parent, index)
        return node


def load_yaml(text: str) -> Any:
    """Like `yaml.safe_load(text)`, without aliases; every failure is a `yaml.YAMLError`."""
    try:
        return yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise yaml.YAMLError("the YAML is nested too deeply") from None
