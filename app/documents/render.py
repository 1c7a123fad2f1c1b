"""Render a BMAD template with content into Markdown, and Markdown into a standalone HTML page.

The ``values`` contract
=======================

``values`` is a mapping. Its keys:

``values["sections"]``
    Maps a section id to that section's content (see below). Sections nested under a
    non-repeatable section are looked up in the same mapping, by their id (``"functional"``)
    or, where ids repeat, by their dotted path from the mapping's level
    (``"requirements.functional"``).
``values["conditions"]``
    Maps a section's ``condition`` text (``"PRD has UX/UI requirements"``) or its id
    (``"ui-goals"``) to ``True`` to render that section. A section with a ``condition`` is
    left out unless one of the two is exactly ``True``.
any other key
    A variable: ``{{project_name}}`` in the document title, a section title, ``template`` or
    ``item_template`` is replaced by ``values["project_name"]`` (text; numbers are written as
    they print). A variable nobody gives stays in the output as ``{{project_name}}``, visibly,
    and is listed by `missing_variables`.

A section's content, by the section's ``type``:

* ``paragraphs`` or no type (and any type not listed here): a string, or a list of strings
  (one paragraph each). The text is Markdown and is inserted as it is.
* ``bullet-list``: a list of strings, one ``- item`` each.
* ``numbered-list``: a list of strings, numbered ``1.``, ``2.``, ... (an item that starts with
  its own number, ``3: item`` as BMAD's ``{{criterion_number}}: {{criteria}}`` writes it, keeps
  that number: ``3. item``) or, when the section has a ``prefix``, written as ``- FR1: item``,
  ``- FR2: item`` (an item that already starts with ``FR<n>:`` is kept as it is).
* ``table``: a list of rows, each a list of cells (in the order of the section's
  ``columns``) or a mapping from column name to cell. The ``columns`` are the header row.
  A ``|`` inside a cell is escaped and a line break becomes a space.
* ``code`` / ``mermaid``: a string, put in a fenced block (language from the section's
  ``language`` key, or ``mermaid``).

In a list or table section, an item that is a mapping is written with the section's
``item_template`` (``"{{criterion_number}}: {{criteria}}"``), its keys being the variables.
``repeatable: true`` on a list or table section means "any number of items": the content is
still one list.

A mapping as a section's content is a *section object*:

* its keys other than ``content`` and ``sections`` are variables for this section's title and
  ``template`` and for everything below it (they override outer variables);
* ``content`` (optional) is the section's content as above; without it, the section's own
  ``template`` (``"As a {{user_type}}, I want {{action}}, ..."``) is filled with the variables,
  so ``{}`` fills a template from the variables already in scope;
* ``sections`` (optional) maps the ids of the section's children to their content; without
  it the children are looked up where the section itself was.

A ``repeatable: true`` section of any other type takes a list of section objects, one per
instance: each is rendered as its own copy of the section (title
``Epic {{epic_number}} {{epic_title}}`` filled from that object), and its children are looked up
only in that object's ``sections``, so every epic carries its own stories. A plain string as an
entry is taken as that instance's ``content``. When the title has no variables
(``"Critical Fullstack Rules"`` with ``template: "- **{{rule_name}}:** {{rule_description}}"``)
the heading is written once and the entries follow under it (one-line list items as one list).

The template's own text: a section's ``template``, or the static ``content`` text and table
``rows`` some v4 templates carry, is used when the values give the section a section object
without ``content`` (missing variables are then reported), or when the values say nothing about
the section and every variable in that text is known (so fixed text, with no variables, is
always shown). For ``code``/``mermaid`` sections the filled text is fenced.

Layout: the document title (``template.output.title``, else the template name) is ``#``,
top-level sections ``##``, their children ``###``, and so on down to ``######``. A section
with no content and no child with content is left out; a section without content of its own
keeps its heading when a child has content. ``instruction``, ``examples`` and ``elicit`` are
guidance for the agent and are never rendered.

Nothing is expanded twice: a ``{{x}}`` inside a value or inside content text stays as written.

`validate_values` lists what does not fit this contract, each problem as
``{"path": "sections.requirements.functional", "message": "..."}``; the path names sections
by id from the top, with ``[i]`` for the i-th instance of a repeatable section
(``sections.epic-details[0].story[1]``).
"""

from __future__ import annotations

import html
import re
from collections import ChainMap
from collections.abc import Mapping, Sequence
from typing import Any, Final

from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

from app.documents.templates import VARIABLE_PATTERN, Template, TemplateSection, iter_sections

__all__ = ["markdown_to_html", "missing_variables", "render_markdown", "validate_values"]

_LIST_TYPES: Final = frozenset({"bullet-list", "numbered-list", "table"})
# An item of a numbered list that starts with its own number: "3: text", "3. text", "3) text".
_OWN_NUMBER: Final = re.compile(r"^(\d{1,9})\s*[:.)]\s+")
_CODE_TYPES: Final = frozenset({"code", "mermaid"})
_RESERVED_TOP: Final = frozenset({"sections", "conditions"})
_RESERVED_OBJECT: Final = frozenset({"sections", "content"})

_LIST_ITEM: Final = re.compile(r"(?:[-*+]|\d{1,9}[.)]) ")

Variables = ChainMap[str, Any]


def render_markdown(template: Template, values: Mapping[str, Any]) -> str:
    """The document as Markdown, ending with one newline (see the module doc for ``values``)."""
    return _Renderer(template, values).render()


def missing_variables(template: Template, values: Mapping[str, Any]) -> list[str]:
    """Names of the ``{{variables}}`` left unfilled in the rendered document, in order, each once.

    Only what is rendered counts: a variable of an omitted section is not missing.
    """
    renderer = _Renderer(template, values)
    renderer.render()
    return list(renderer.missing)


def validate_values(template: Template, values: Mapping[str, Any]) -> list[dict[str, str]]:
    """Where ``values`` does not fit the template: ``[{"path": ..., "message": ...}, ...]``.

    Reported: missing variables, text where a list is expected and the other way round, table
    rows with the wrong number of cells or unknown columns, repeatable sections not given a
    list, section ids that the template does not have at that level, and condition entries
    that are not ``true``/``false`` or match no condition. An empty list means it fits.
    """
    renderer = _Renderer(template, values)
    renderer.render()
    return list(renderer.problems)


# ---------------------------------------------------------------------------------------------
# HTML

_md = MarkdownIt("commonmark", {"html": False}).enable("table")


def _inline_images_only(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    """An image is shown only when it is inline (`data:image/...`); any other is its alt text, so
    that opening an export never fetches anything from anywhere."""
    token = tokens[idx]
    if str(token.attrGet("src") or "").lower().startswith("data:image/"):
        return RendererHTML.image(self, tokens, idx, options, env)
    alt = self.renderInlineAsText(token.children or [], options, env)
    return f"[image: {html.escape(alt)}]"


_md.add_render_rule("image", _inline_images_only)

_CSS: Final = """
:root { color-scheme: light dark; }
body { margin: 0; padding: 2rem 1rem; font: 16px/1.6 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #1f2328; background: #fff; }
main { max-width: 50rem; margin: 0 auto; }
h1, h2, h3, h4, h5, h6 { line-height: 1.25; margin: 1.6em 0 0.6em; }
h1 { font-size: 2em; border-bottom: 1px solid #d1d9e0; padding-bottom: 0.3em; margin-top: 0; }
h2 { font-size: 1.5em; border-bottom: 1px solid #d1d9e0; padding-bottom: 0.3em; }
h3 { font-size: 1.25em; }
h4, h5, h6 { font-size: 1em; }
p, ul, ol, table, pre, blockquote { margin: 0 0 1em; }
ul, ol { padding-left: 2em; }
table { border-collapse: collapse; display: block; overflow-x: auto; }
th, td { border: 1px solid #d1d9e0; padding: 0.35em 0.8em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em; }
code { background: #f6f8fa; padding: 0.1em 0.3em; border-radius: 4px; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; border-radius: 6px; }
pre code { padding: 0; background: none; }
blockquote { border-left: 4px solid #d1d9e0; padding: 0 1em; color: #59636e; }
a { color: #0969da; }
@media (prefers-color-scheme: dark) {
  body { color: #e6edf3; background: #0d1117; }
  th, code, pre { background: #161b22; }
  th, td, h1, h2 { border-color: #3d444d; }
  a { color: #4493f8; }
}
""".strip()

# No scripts at all, styles only from the page itself; images only inline (data URIs).
_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def markdown_to_html(markdown: str, title: str) -> str:
    """A standalone HTML5 page for ``markdown``.

    Raw HTML in the Markdown is shown as text (markdown-it with ``html`` off), links with
    ``javascript:``/``vbscript:``/``file:`` (and non-image ``data:``) targets are not made into
    links (markdown-it's ``validateLink``), and a Content-Security-Policy forbids scripts anyway.
    """
    body = _md.render(markdown)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n'
        "<head>\n"
        '<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        f"<title>{html.escape(title, quote=True)}</title>\n"
        f"<style>\n{_CSS}\n</style>\n"
        "</head>\n"
        "<body>\n"
        f"<main>\n{body}</main>\n"
        "</body>\n"
        "</html>\n"
    )


# ---------------------------------------------------------------------------------------------
# rendering


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


class _Renderer:
    def __init__(self, template: Template, values: Mapping[str, Any]) -> None:
        self.template = template
        self.values = values
        self.missing: dict[str, None] = {}
        self.problems: list[dict[str, str]] = []
        self._seen: set[tuple[str, str]] = set()
        self._ids = _all_paths(template.sections)

        conditions = values.get("conditions")
        if conditions is None:
            conditions = {}
        elif not isinstance(conditions, Mapping):
            self.problem(
                "conditions", f"expected a mapping of condition or section id to true/false, got {_kind(conditions)}"
            )
            conditions = {}
        self.conditions: Mapping[Any, Any] = conditions

    # -- bookkeeping

    def problem(self, path: str, message: str) -> None:
        if (path, message) not in self._seen:
            self._seen.add((path, message))
            self.problems.append({"path": path, "message": message})

    def check_conditions(self) -> None:
        known: set[str] = set()
        for section in iter_sections(self.template.sections):
            if section.condition:
                known.add(section.condition)
                known.add(section.id)
        for key, value in self.conditions.items():
            if not isinstance(value, bool):
                self.problem(f"conditions.{key}", f"expected true or false, got {_kind(value)}")
            if key not in known:
                self.problem(f"conditions.{key}", f"no section has the condition or conditional id {key!r}")

    def check_keys(self, given: Mapping[Any, Any], sections: Sequence[TemplateSection], path: str) -> None:
        known = _scope_keys(sections)
        for key in given:
            if key in known:
                continue
            key_text = str(key)
            where = self._ids.get(key_text)
            hint = f" (the template has it at {where})" if where else ""
            self.problem(f"{path}.{key_text}", f"unknown section id {key_text!r} at this level{hint}")

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

    # -- document

    def render(self) -> str:
        self.check_conditions()
        variables: Variables = ChainMap({k: v for k, v in self.values.items() if k not in _RESERVED_TOP})
        title = self.fill(
            self.template.output_title or self.template.name, variables, "template.output.title", "document title"
        )
        blocks = [f"# {_one_line(title)}"] if title.strip() else []

        given = self.values.get("sections")
        if given is None:
            given = {}
        elif not isinstance(given, Mapping):
            self.problem("sections", f"expected a mapping of section id to content, got {_kind(given)}")
            given = {}
        self.check_keys(given, self.template.sections, "sections")

        for section in self.template.sections:
            blocks += self.section(section, 2, given, "", variables, "sections")
        return "\n\n".join(blocks) + "\n"

    def enabled(self, section: TemplateSection) -> bool:
        if not section.condition:
            return True
        return self.conditions.get(section.condition) is True or self.conditions.get(section.id) is True

    def section(
        self,
        section: TemplateSection,
        level: int,
        given: Mapping[Any, Any],
        prefix: str,
        variables: Variables,
        parent_path: str,
    ) -> list[str]:
        path = f"{parent_path}.{section.id}"
        if not self.enabled(section):
            return []
        key = prefix + section.id
        content: Any = given[key] if key in given else given.get(section.id, _ABSENT)

        if _repeats_itself(section):
            return self.repeated(section, content, level, variables, path)

        if isinstance(content, Mapping):
            return self.section_object(section, content, level, variables, path, (given, f"{key}."))

        if content is _ABSENT:
            body = self.template_body(section, variables, path, only_if_complete=True)
        else:
            body = self.body(section, content, variables, path)
        children: list[str] = []
        for child in section.sections:
            children += self.section(child, _child_level(section, level), given, f"{key}.", variables, path)
        return self.assemble(section, level, variables, path, body, children)

    def repeated(
        self, section: TemplateSection, content: Any, level: int, variables: Variables, path: str
    ) -> list[str]:
        """One copy per entry; a title without variables is written once, above all the entries."""
        if content is _ABSENT or content is None:
            return []
        if not _is_list(content):
            self.problem(path, f"repeatable section: expected a list of entries, got {_kind(content)}")
            content = [content]
        title_repeats = not section.title or VARIABLE_PATTERN.search(section.title) is not None
        blocks: list[str] = []
        for index, entry in enumerate(content):
            entry_path = f"{path}[{index}]"
            if isinstance(entry, str):
                entry = {"content": entry}
            if not isinstance(entry, Mapping):
                self.problem(entry_path, f"expected a mapping (one instance of the section), got {_kind(entry)}")
                continue
            blocks += self.section_object(
                section, entry, level, variables, entry_path, None, always=True, heading=title_repeats
            )
        if title_repeats or not blocks:
            return blocks
        if all(_LIST_ITEM.match(block) for block in blocks):  # one list, not a list per entry
            blocks = ["\n".join(blocks)]
        return self.assemble(section, level, variables, path, blocks, [])

    def section_object(
        self,
        section: TemplateSection,
        obj: Mapping[Any, Any],
        level: int,
        variables: Variables,
        path: str,
        outer: tuple[Mapping[Any, Any], str] | None,
        *,
        always: bool = False,
        heading: bool = True,
    ) -> list[str]:
        scope = variables.new_child({str(k): v for k, v in obj.items() if k not in _RESERVED_OBJECT})
        if "content" in obj:
            body = self.body(section, obj["content"], scope, path)
        else:
            body = self.template_body(section, scope, path, only_if_complete=False)

        if "sections" in obj:
            given = obj["sections"]
            if given is None:
                given = {}
            elif not isinstance(given, Mapping):
                self.problem(f"{path}.sections", f"expected a mapping of section id to content, got {_kind(given)}")
                given = {}
            self.check_keys(given, section.sections, path)
            prefix = ""
        elif outer is not None:
            given, prefix = outer
        else:
            given, prefix = {}, ""

        children: list[str] = []
        for child in section.sections:
            children += self.section(child, _child_level(section, level), given, prefix, scope, path)
        if not heading:
            return body + children
        return self.assemble(section, level, scope, path, body, children, always=always)

    def assemble(
        self,
        section: TemplateSection,
        level: int,
        variables: Variables,
        path: str,
        body: list[str],
        children: list[str],
        *,
        always: bool = False,
    ) -> list[str]:
        if not (body or children or always):
            return []
        blocks: list[str] = []
        if section.title:
            heading = _one_line(self.fill(section.title, variables, path, "title"))
            if heading:
                blocks.append(f"{'#' * min(level, 6)} {heading}")
        return blocks + body + children

    # -- the template's own text: `template`, static `content`, table `rows`

    def template_body(
        self, section: TemplateSection, variables: Variables, path: str, *, only_if_complete: bool
    ) -> list[str]:
        """The section's own text filled with ``variables``.

        With ``only_if_complete`` (the values name nothing for this section) the text is used
        only when every variable in it is known, so static text always shows and a template
        waiting for content does not show half-filled.
        """
        text = section.template
        if text is None and isinstance(section.extra.get("content"), str):
            text = section.extra["content"]
        raw_rows = section.extra.get("rows")
        rows: list[Any] = list(raw_rows) if section.type == "table" and isinstance(raw_rows, list | tuple) else []
        if text is None and not rows:
            return []
        if only_if_complete:
            sources = [text] if text is not None else [c for r in rows if _is_list(r) for c in r if isinstance(c, str)]
            names = {name for source in sources for name in VARIABLE_PATTERN.findall(source)}
            if any(variables.get(name) is None for name in names):
                return []
        if text is None:
            filled_rows = [
                [self.fill(c, variables, path, "table rows") if isinstance(c, str) else c for c in row]
                if _is_list(row)
                else row
                for row in rows
            ]
            return self.table_body(section, filled_rows, variables, path)
        filled = self.fill(text, variables, path, "template")
        if not filled.strip():
            return []
        if (section.type or "") in _CODE_TYPES:
            return [_fence(filled.strip("\n"), self.language(section))]
        return [filled.strip()]

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


def _cell_text(text: str) -> str:
    return _one_line(text).replace("|", "\\|")


def _child_level(section: TemplateSection, level: int) -> int:
    """Children sit one level below their parent's heading; an untitled section writes none."""
    return level + 1 if section.title else level
