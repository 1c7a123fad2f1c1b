"""One artifact as a person reads it: the export's document for its stage, or its content written
out as plain Markdown (headings for fields, lists for lists, code blocks for files)."""

from __future__ import annotations

import re
from typing import Any

from app.artifacts.models import ArtifactType
from app.documents.render import render_markdown
from app.documents.stages import STAGES, stage_template

__all__ = ["artifact_markdown"]

_DEEPEST = 6  # Markdown's last heading level: deeper fields become bold labels
_TEXT_KEYS = ("markdown", "text", "content", "body")


def artifact_markdown(artifact_type: str, title: str, content: Any, project_name: str) -> str:
    """`content` as Markdown: a stage's document through its template, as the export writes it, when
    the content is complete enough for it (an amended or partial one may not be); otherwise each field."""
    kind = next((kind for kind in ArtifactType if kind.value == artifact_type), None)
    if kind is not None and isinstance(content, dict):
        for stage in STAGES:
            if kind not in stage.artifact_types:
                continue
            try:
                values = stage.values({kind: content})
            except (KeyError, TypeError, AttributeError, ValueError):
                break  # not the shape the template expects: shown field by field instead
            return render_markdown(
                stage_template(stage.template_file), {"project_name": project_name, "sections": values}
            )
    if kind is ArtifactType.SOURCE_CODE and isinstance(content, dict):
        return _source_files(title, content)
    text = _single_text(content)
    if text is not None:
        return text
    return f"# {title}\n\n" + _fields(content, 2)


def _single_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, dict) and len(content) == 1:
        value = next(iter(content.values()))
        if next(iter(content)) in _TEXT_KEYS and isinstance(value, str):
            return value
    return None


def _source_files(title: str, content: dict[str, Any]) -> str:
    parts = [f"# {title}"]
    for group in ("files", "tests"):
        for item in content.get(group) or []:
            if isinstance(item, dict) and isinstance(item.get("path"), str):
                extension = item["path"].rsplit(".", 1)[-1] if "." in item["path"] else ""
                language = extension if re.fullmatch(r"[A-Za-z0-9+-]{1,20}", extension) else ""
                parts.append(f"## `{item['path']}`\n\n{_fence(str(item.get('content', '')), language)}")
    rest = {key: value for key, value in content.items() if key not in ("files", "tests")}
    if rest:
        parts.append(_fields(rest, 2))
    return "\n\n".join(parts)


def _label(key: str) -> str:
    words = str(key).replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:]


def _fields(value: Any, level: int) -> str:
    """A JSON value as Markdown, its fields as headings from `level` down."""
    if isinstance(value, dict):
        parts = []
        for key, item in value.items():
            heading = f"{'#' * level} {_label(key)}" if level <= _DEEPEST else f"**{_label(key)}**"
            parts.append(f"{heading}\n\n{_fields(item, level + 1)}".rstrip())
        return "\n\n".join(parts)
    if isinstance(value, list):
        if not value:
            return "_(none)_"
        return "\n".join(f"- {_indent(_list_item(item), 2)}" for item in value)
    return _scalar(value)


def _list_item(item: Any) -> str:
    if isinstance(item, dict):
        return "\n".join(f"**{_label(key)}**: {_inline(value)}" + "  " for key, value in item.items()).rstrip()
    if isinstance(item, list):
        return ", ".join(_inline(part) for part in item)
    return _scalar(item)


def _inline(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_inline(part) for part in value) or "_(none)_"
    if isinstance(value, dict):
        return "; ".join(f"{_label(key)}: {_inline(part)}" for key, part in value.items())
    return " ".join(_scalar(value).split())


def _scalar(value: Any) -> str:
    if value is None:
        return "_(none)_"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _indent(text: str, width: int) -> str:
    return text.replace("\n", "\n" + " " * width)


def _fence(text: str, language: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"
