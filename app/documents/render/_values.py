"""What the renderer shares: the section kinds, small checks on values and text helpers."""

from __future__ import annotations

import re
from collections import ChainMap
from collections.abc import Mapping, Sequence
from typing import Any, Final

from app.documents.templates import TemplateSection

_LIST_TYPES: Final = frozenset({"bullet-list", "numbered-list", "table"})
# An item of a numbered list that starts with its own number: "3: text", "3. text", "3) text".
_OWN_NUMBER: Final = re.compile(r"^(\d{1,9})\s*[:.)]\s+")
_CODE_TYPES: Final = frozenset({"code", "mermaid"})
_RESERVED_TOP: Final = frozenset({"sections", "conditions"})
_RESERVED_OBJECT: Final = frozenset({"sections", "content"})

_LIST_ITEM: Final = re.compile(r"(?:[-*+]|\d{1,9}[.)]) ")

Variables = ChainMap[str, Any]


class _Absent:
    """Marks a section with no entry in the values (``None`` is a given, empty entry)."""


_ABSENT: Final = _Absent()


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "text"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _is_list(value: object) -> bool:
    return isinstance(value, list | tuple)


def _repeats_itself(section: TemplateSection) -> bool:
    """A repeatable section that is rendered once per entry (not a list/table of items)."""
    return section.repeatable and (section.type or "") not in _LIST_TYPES


def _scope_keys(sections: Sequence[TemplateSection], prefix: str = "") -> set[str]:
    """Keys that may name content at one level: ids and dotted paths, not crossing repeatable sections."""
    keys: set[str] = set()
    for section in sections:
        keys.add(section.id)
        keys.add(prefix + section.id)
        if not _repeats_itself(section):
            keys |= _scope_keys(section.sections, f"{prefix}{section.id}.")
    return keys


def _all_paths(sections: Sequence[TemplateSection], prefix: str = "sections") -> dict[str, str]:
    """Every section id → the path of its first occurrence in the template."""
    paths: dict[str, str] = {}
    for section in sections:
        path = f"{prefix}.{section.id}"
        paths.setdefault(section.id, path)
        for key, value in _all_paths(section.sections, path).items():
            paths.setdefault(key, value)
    return paths


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _indent_rest(text: str, width: int) -> str:
    """Indent every line after the first so it stays inside a list item."""
    lines = text.split("\n")
    pad = " " * width
    return "\n".join([lines[0], *[pad + line if line.strip() else "" for line in lines[1:]]])


def _fence(text: str, language: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"


def _cell_text(text: str) -> str:
    return _one_line(text).replace("|", "\\|")


def _child_level(section: TemplateSection, level: int) -> int:
    """Children sit one level below their parent's heading; an untitled section writes none."""
    return level + 1 if section.title else level
