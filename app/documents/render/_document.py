"""The walk over a template's sections: conditions, section objects, repeated sections, headings."""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping, Sequence
from typing import Any

from app.documents.render._content import _ContentWriter
from app.documents.render._values import (
    _ABSENT,
    _CODE_TYPES,
    _LIST_ITEM,
    _RESERVED_OBJECT,
    _RESERVED_TOP,
    Variables,
    _all_paths,
    _child_level,
    _fence,
    _is_list,
    _kind,
    _one_line,
    _repeats_itself,
    _scope_keys,
)
from app.documents.templates import VARIABLE_PATTERN, Template, TemplateSection, iter_sections


class _Renderer(_ContentWriter):
    def __init__(self, template: Template, values: Mapping[str, Any]) -> None:
        super().__init__()
        self.template = template
        self.values = values
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

    # -- checks on the values

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
