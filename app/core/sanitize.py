"""Text that comes from outside (API bodies, model output) is cleaned before it is stored.

Stored text keeps its meaning: code stays code. What goes is what no person types and what can
disguise content: C0/C1 control characters (except tab, newline, carriage return), and the
Unicode bidirectional overrides and zero-width characters used to hide text ("Trojan Source").
Markup is made harmless where it is rendered (every HTML output escapes), not by mangling it here;
`strip_active_content` is for text that is meant to be prose, never code.
"""

from __future__ import annotations

import re
import unicodedata
from enum import Enum
from typing import Any

_INVISIBLE = re.compile(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)
_ACTIVE_BLOCK = re.compile(
    r"<\s*(script|style|iframe|object|embed)\b[^>]*>.*?<\s*/\s*\1\s*>", re.IGNORECASE | re.DOTALL
)
_ACTIVE_TAG = re.compile(r"<\s*/?\s*(script|style|iframe|object|embed|meta|link|base)\b[^>]*>", re.IGNORECASE)
_EVENT_ATTRIBUTE = re.compile(r"""\son[a-z]+\s*=\s*("[^"]*"|'[^']*'|[^\s>]+)""", re.IGNORECASE)
_SCRIPT_URL = re.compile(r"(?:java|vb)script\s*:", re.IGNORECASE)


def clean_text(text: str) -> str:
    return _INVISIBLE.sub("", unicodedata.normalize("NFC", text))


def clean_json(value: Any) -> Any:
    """`clean_text` on every string of a JSON value, keys included (enum members are already clean)."""
    if isinstance(value, Enum):
        return value
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(key)): clean_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [clean_json(item) for item in value]
    return value


def strip_active_content(text: str) -> str:
    """Prose only: drop script/style/frame elements, event-handler attributes and script: URLs."""
    text = _ACTIVE_BLOCK.sub("", text)
    text = _ACTIVE_TAG.sub("", text)
    text = _EVENT_ATTRIBUTE.sub("", text)
    return _SCRIPT_URL.sub("", text)
