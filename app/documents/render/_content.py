"""The bookkeeping every part of the renderer writes into, and a section's content by its type."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from app.documents.render._values import (
    _CODE_TYPES,
    _OWN_NUMBER,
    Variables,
    _cell_text,
    _fence,
    _indent_rest,
    _is_list,
    _kind,
    _one_line,
)
from app.documents.templates import VARIABLE_PATTERN, TemplateSection


class _ContentWriter:
    """Writes section content by type; records missing variables and problems as it goes."""

    def __init__(self) -> None:
        self.missing: dict[str, None] = {}
        self.problems: list[dict[str, str]] = []
        self._seen: set[tuple[str, str]] = set()

    # -- bookkeeping

    def problem(self, path: str, message: str) -> None:
        if (path, message) not in self._seen:
            self._seen.add((path, message))
            self.problems.append({"path": path, "message": message})

    # -- text

    def as_text(self, value: Any, path: str, what: str) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return str(value)
        if _is_list(value):
            self.problem(path, f"{what} is a list where text is expected")
            scalars = [item for item in value if isinstance(item, str | int | float)]
            if len(scalars) == len(value):  # a flat list reads well joined; anything deeper is dropped
                return ", ".join(self.as_text(item, path, what) for item in scalars)
            return ""
        self.problem(path, f"{what} is {_kind(value)} where text is expected")
        return ""

    def fill(self, text: str, variables: Variables, path: str, where: str) -> str:
        """Replace ``{{name}}`` in one pass; values are inserted as text and never expanded again."""

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            value = variables.get(name)
            if value is None:
                self.missing.setdefault(name, None)
                self.problem(path, f"missing variable {{{{{name}}}}} in the {where}")
                return match.group(0)
            return self.as_text(value, path, f"variable {name!r}")

        return VARIABLE_PATTERN.sub(replace, text)

    # -- content by type

    def body(self, section: TemplateSection, content: Any, variables: Variables, path: str) -> list[str]:
        if content is None:
            return []
        kind = (section.type or "paragraphs").strip().lower()
        if kind in ("bullet-list", "numbered-list"):
            return self.list_body(section, kind, content, variables, path)
        if kind == "table":
            return self.table_body(section, content, variables, path)
        if kind in _CODE_TYPES:
            text = self.as_text(content, path, "the content").strip("\n")
            return [_fence(text, self.language(section))] if text.strip() else []
        if _is_list(content):
            paragraphs = [self.item(section, item, variables, f"{path}[{i}]") for i, item in enumerate(content)]
            return [p for p in paragraphs if p]
        text = self.as_text(content, path, "the content").strip()
        return [text] if text else []

    @staticmethod
    def language(section: TemplateSection) -> str:
        language = section.extra.get("language")
        if isinstance(language, str):
            return _one_line(language)
        return "mermaid" if section.type == "mermaid" else ""

    def item(self, section: TemplateSection, item: Any, variables: Variables, path: str) -> str:
        if isinstance(item, Mapping):
            if section.item_template:
                scope = variables.new_child({str(k): v for k, v in item.items()})
                return self.fill(section.item_template, scope, path, "item template").strip()
            self.problem(path, "a mapping where text is expected (the section has no item_template)")
            return "; ".join(f"{k}: {self.as_text(v, path, 'the item')}" for k, v in item.items())
        if item is None:
            return ""
        return self.as_text(item, path, "the item").strip()

    def list_body(
        self, section: TemplateSection, kind: str, content: Any, variables: Variables, path: str
    ) -> list[str]:
        if isinstance(content, str):
            self.problem(path, f"text where a list is expected ({kind})")
            content = [content]
        elif not _is_list(content):
            self.problem(path, f"{_kind(content)} where a list is expected ({kind})")
            return []
        items = [self.item(section, item, variables, f"{path}[{i}]") for i, item in enumerate(content)]
        items = [item for item in items if item]
        lines: list[str] = []
        prefix = (section.prefix or "").strip()
        numbered_already = re.compile(rf"{re.escape(prefix)}\d+\s*[:.)]") if prefix else None
        for number, text in enumerate(items, start=1):
            own_number = _OWN_NUMBER.match(text) if kind != "bullet-list" and numbered_already is None else None
            if kind == "bullet-list":
                marker = "- "
            elif own_number is not None:  # "1: text" (an item_template's number): "1. text", not "1. 1: text"
                marker, text = f"{own_number.group(1)}. ", text[own_number.end() :]
            elif numbered_already is None:
                marker = f"{number}. "
            elif numbered_already.match(text):
                marker = "- "
            else:
                marker = f"- {prefix}{number}: "
            lines.append(marker + _indent_rest(text, 2 if marker.startswith("-") else len(marker)))
        return ["\n".join(lines)] if lines else []

    def table_body(self, section: TemplateSection, content: Any, variables: Variables, path: str) -> list[str]:
        if not _is_list(content):
            self.problem(path, f"{_kind(content)} where a list of table rows is expected")
            return []
        header = list(section.columns)
        if not header:  # no columns in the template: the keys of mapping rows, in order of appearance
            seen: dict[str, None] = {}
            for row in content:
                if isinstance(row, Mapping):
                    seen.update({str(k): None for k in row})
            header = list(seen)

        rows: list[list[str]] = []
        for index, row in enumerate(content):
            row_path = f"{path}[{index}]"
            if isinstance(row, Mapping):
                names = {str(k): v for k, v in row.items()}
                for name in names:
                    if name not in header:
                        self.problem(row_path, f"unknown column {name!r} (columns: {', '.join(header)})")
                absent = [c for c in header if c not in names]
                if absent:
                    self.problem(row_path, f"row has no {', '.join(repr(c) for c in absent)}")
                rows.append([self.cell(names.get(c), row_path) for c in header])
            elif _is_list(row):
                cells = [self.cell(cell, row_path) for cell in row]
                if header and len(cells) != len(header):
                    self.problem(row_path, f"row has {len(cells)} cells, the table has {len(header)} columns")
                rows.append(cells)
            else:
                self.problem(row_path, f"a table row must be a list of cells or a mapping, got {_kind(row)}")
        if not rows:
            return []

        width = max([len(header), *(len(r) for r in rows)])
        header_cells = [_cell_text(c) for c in header] + [""] * (width - len(header))
        lines = [
            "| " + " | ".join(header_cells) + " |",
            "| " + " | ".join(["---"] * width) + " |",
        ]
        lines += ["| " + " | ".join(r + [""] * (width - len(r))) + " |" for r in rows]
        return ["\n".join(lines)]

    def cell(self, value: Any, path: str) -> str:
        if value is None:
            return ""
        return _cell_text(self.as_text(value, path, "a cell"))
