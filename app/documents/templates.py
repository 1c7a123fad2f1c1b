"""BMAD-METHOD v4 document templates (``*-tmpl.yaml``), read into typed structs.

A BMAD v4 template is a YAML mapping::

    template:
      id: prd-template-v2
      name: Product Requirements Document
      version: 2.0
      output: {format: markdown, filename: docs/prd.md, title: "{{project_name}} PRD"}
    workflow: {...}            # not interpreted here, kept in Template.unknown
    sections:
      - id: goals
        title: Goals
        type: bullet-list
        instruction: ...
        sections: [...]        # nested sections, same shape

Only the keys the renderer needs become fields; every other key is kept untouched
(``Template.unknown`` for the document, ``TemplateSection.extra`` for a section), so a
template with keys this module does not know (``choices``, ``owner``, ``agent_config``, ...)
still loads. Problems raise `TemplateError`, whose message starts with the template's source.

The YAML is read with ``yaml.safe_load`` only (without aliases, `app.core.safe_yaml`): no tags that
build Python objects, no alias bombs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import yaml

from app.core.safe_yaml import load_yaml

__all__ = [
    "VARIABLE_PATTERN",
    "Template",
    "TemplateError",
    "TemplateSection",
    "iter_sections",
    "load_template",
    "parse_template",
    "template_variables",
]

#: ``{{name}}`` (spaces inside the braces allowed). Other brace forms, such as BMAD's
#: ``{None|WCAG AA}`` choice hints, are plain text.
VARIABLE_PATTERN = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*\}\}")

#: Limits that keep a hostile or broken file (YAML alias bombs, self-referencing anchors)
#: from taking the process down. Real BMAD templates are a few KiB, nested four deep.
MAX_TEMPLATE_CHARS = 2_000_000
MAX_SECTION_DEPTH = 32
MAX_SECTIONS = 5_000

_SECTION_FIELDS = frozenset(
    {
        "id",
        "title",
        "type",
        "instruction",
        "template",
        "item_template",
        "prefix",
        "columns",
        "condition",
        "repeatable",
        "elicit",
        "examples",
        "sections",
    }
)
_TEMPLATE_FIELDS = frozenset({"id", "name", "version", "output"})
_OUTPUT_FIELDS = frozenset({"format", "filename", "title"})
_TOP_FIELDS = frozenset({"template", "sections"})


class TemplateError(ValueError):
    """A template that cannot be used; the message is ``"<source>: <why>"``."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class TemplateSection(msgspec.Struct, kw_only=True, frozen=True):
    """One section of a template; ``extra`` holds the keys not interpreted here."""

    id: str
    title: str | None = None
    type: str | None = None
    instruction: str | None = None
    template: str | None = None
    item_template: str | None = None
    prefix: str | None = None
    columns: list[str] = msgspec.field(default_factory=list)
    condition: str | None = None
    repeatable: bool = False
    elicit: bool = False
    examples: list[Any] = msgspec.field(default_factory=list)
    sections: list[TemplateSection] = msgspec.field(default_factory=list)
    extra: dict[str, Any] = msgspec.field(default_factory=dict)


class Template(msgspec.Struct, kw_only=True, frozen=True):
    """A whole template.

    ``unknown`` holds the top-level keys not interpreted here (``workflow``, ...) under their
    own names, and unknown keys inside ``template:`` / ``template.output:`` under dotted names
    (``"template.description"``, ``"template.output.encoding"``). ``unsupported`` says, one line
    each, what of the file is kept but not used (those keys; the body of a non-Markdown template).
    """

    id: str
    name: str
    version: str
    output_format: str = "markdown"
    output_filename: str = ""
    output_title: str = ""
    sections: list[TemplateSection] = msgspec.field(default_factory=list)
    unknown: dict[str, Any] = msgspec.field(default_factory=dict)
    unsupported: list[str] = msgspec.field(default_factory=list)


def load_template(path: Path) -> Template:
    """Read and parse a template file; any problem raises `TemplateError` naming ``path``."""
    source = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_TEMPLATE_CHARS * 4:
            raise TemplateError(source, f"file is too large ({size} bytes)")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TemplateError(source, f"not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise TemplateError(source, f"cannot read the file: {exc.strerror or exc}") from exc
    return parse_template(text, source)


def parse_template(text: str, source: str) -> Template:
    """Parse template YAML; ``source`` (a path or a name) starts every error message."""
    if len(text) > MAX_TEMPLATE_CHARS:
        raise TemplateError(source, f"template is too large ({len(text)} characters)")
    try:
        data = load_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        why = exc.problem or exc.context or "syntax error"
        raise TemplateError(source, f"invalid YAML{where}: {why}") from exc
    except yaml.YAMLError as exc:
        raise TemplateError(source, f"invalid YAML: {exc}") from exc
    except RecursionError as exc:
        raise TemplateError(source, "invalid YAML: nested too deeply") from exc

    if data is None:
        raise TemplateError(source, "empty document: expected a mapping with 'template:' and 'sections:'")
    if not isinstance(data, dict):
        raise TemplateError(source, f"expected a mapping at the top level, got {_kind(data)}")
    if "template" not in data:
        raise TemplateError(source, "missing 'template:' (the id, name, version and output of the document)")
    header = data["template"]
    if not isinstance(header, dict):
        raise TemplateError(source, f"'template' must be a mapping, got {_kind(header)}")
    output = header.get("output")
    if output is None:
        output = {}
    if not isinstance(output, dict):
        raise TemplateError(source, f"'template.output' must be a mapping, got {_kind(output)}")
    output_format = _text(output.get("format"), source, "template.output.format") or "markdown"
    # A template of a data file (`format: yaml`, e.g. BMAD's qa-gate) describes the file by its
    # keys, not by sections: they are kept in `unknown` and the template has no sections.
    if "sections" not in data and output_format == "markdown":
        raise TemplateError(source, "missing 'sections:' (the list of document sections)")
    unknown: dict[str, Any] = {str(k): v for k, v in data.items() if k not in _TOP_FIELDS}
    unknown.update({f"template.{k}": v for k, v in header.items() if k not in _TEMPLATE_FIELDS})

    template_id = _text(header.get("id"), source, "template.id")
    if not template_id:
        raise TemplateError(source, "'template.id' is missing or empty")
    name = _text(header.get("name"), source, "template.name") or template_id
    version = _text(header.get("version"), source, "template.version") or ""

    unknown.update({f"template.output.{k}": v for k, v in output.items() if k not in _OUTPUT_FIELDS})

    raw_sections = data.get("sections", [])
    if not isinstance(raw_sections, list):
        raise TemplateError(source, f"'sections' must be a list, got {_kind(raw_sections)}")
    counter = [0]
    sections = [_section(item, source, f"sections[{i}]", 1, counter) for i, item in enumerate(raw_sections)]

    return Template(
        id=template_id,
        name=name,
        version=version,
        output_format=output_format,
        output_filename=_text(output.get("filename"), source, "template.output.filename") or "",
        output_title=_text(output.get("title"), source, "template.output.title") or "",
        sections=sections,
        unknown=unknown,
        unsupported=_unsupported(output_format, data, unknown),
    )


def _unsupported(output_format: str, data: dict[Any, Any], unknown: dict[str, Any]) -> list[str]:
    """What of the file the renderer does not use (kept in `unknown`, shown by the API)."""
    if output_format != "markdown":
        body = ", ".join(str(key) for key in data if key not in _TOP_FIELDS) or "nothing"
        return [f"output format {output_format!r}: its body ({body}) is kept, not rendered (only Markdown renders)"]
    return [f"{key!r} is kept, not interpreted" for key in unknown]


def iter_sections(sections: list[TemplateSection]) -> Iterator[TemplateSection]:
    """Every section, depth first, parents before their children."""
    for section in sections:
        yield section
        yield from iter_sections(section.sections)


def template_variables(template: Template) -> list[str]:
    """Every ``{{name}}`` the document uses, in document order, each once.

    Looks at the output title, then each section's title, template and item_template, and the
    static ``content`` text and table ``rows`` that some templates carry (kept in ``extra``).
    """
    texts = [template.output_title]
    for section in iter_sections(template.sections):
        texts.extend(t for t in (section.title, section.template, section.item_template) if t)
        content = section.extra.get("content")
        if isinstance(content, str):
            texts.append(content)
        rows = section.extra.get("rows")
        if isinstance(rows, list):
            texts.extend(cell for row in rows if isinstance(row, list) for cell in row if isinstance(cell, str))
    names: dict[str, None] = {}
    for text in texts:
        for match in VARIABLE_PATTERN.finditer(text):
            names.setdefault(match.group(1), None)
    return list(names)


# ---------------------------------------------------------------------------------------------
# parsing helpers


def _kind(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _text(value: object, source: str, where: str) -> str | None:
    """A scalar as text: strings as they are, numbers (``version: 2.0``) as written; else an error."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise TemplateError(source, f"'{where}' must be text, got {_kind(value)}")


def _flag(value: object, source: str, where: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    raise TemplateError(source, f"'{where}' must be true or false, got {_kind(value)}")


def _section(raw: object, source: str, where: str, depth: int, counter: list[int]) -> TemplateSection:
    if depth > MAX_SECTION_DEPTH:
        raise TemplateError(source, f"{where}: sections are nested more than {MAX_SECTION_DEPTH} deep")
    counter[0] += 1
    if counter[0] > MAX_SECTIONS:
        raise TemplateError(source, f"more than {MAX_SECTIONS} sections")
    if not isinstance(raw, dict):
        raise TemplateError(source, f"{where}: a section must be a mapping, got {_kind(raw)}")

    section_id = _text(raw.get("id"), source, f"{where}.id")
    if not section_id or not section_id.strip():
        title = raw.get("title")
        named = f" (title {title!r})" if isinstance(title, str) else ""
        raise TemplateError(source, f"{where}{named}: section has no 'id'")
    where = f"{where} (id {section_id!r})"

    def text(key: str) -> str | None:
        return _text(raw.get(key), source, f"{where}.{key}")

    columns_raw = raw.get("columns")
    columns: list[str] = []
    if columns_raw is not None:
        if not isinstance(columns_raw, list):
            raise TemplateError(source, f"'{where}.columns' must be a list, got {_kind(columns_raw)}")
        for i, column in enumerate(columns_raw):
            columns.append(_text(column, source, f"{where}.columns[{i}]") or "")

    examples_raw = raw.get("examples")
    if examples_raw is None:
        examples: list[Any] = []
    elif isinstance(examples_raw, list):
        examples = list(examples_raw)
    else:
        examples = [examples_raw]

    children_raw = raw.get("sections")
    if children_raw is None:
        children_raw = []
    if not isinstance(children_raw, list):
        raise TemplateError(source, f"'{where}.sections' must be a list, got {_kind(children_raw)}")
    children = [
        _section(child, source, f"{where}.sections[{i}]", depth + 1, counter) for i, child in enumerate(children_raw)
    ]

    return TemplateSection(
        id=section_id,
        title=text("title"),
        type=text("type"),
        instruction=text("instruction"),
        template=text("template"),
        item_template=text("item_template"),
        prefix=text("prefix"),
        columns=columns,
        condition=text("condition"),
        repeatable=_flag(raw.get("repeatable"), source, f"{where}.repeatable"),
        elicit=_flag(raw.get("elicit"), source, f"{where}.elicit"),
        examples=examples,
        sections=children,
        extra={str(k): v for k, v in raw.items() if k not in _SECTION_FIELDS},
    )
