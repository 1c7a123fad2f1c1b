"""What a writer is given: the job (product, documents, hints) and the features the documents plan."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import msgspec

from app.llm.offline._product import (
    FeatureIdea,
    Product,
    feature_from_name,
    sentence,
)

MAX_ARTIFACTS = 10
MAX_EPICS = 8
INFRASTRUCTURE = {"api": ("HTTP API and validation", "Python"), "database": ("persistent state", "PostgreSQL")}
_EVERY = re.compile(r"^Every ([a-z][a-z ]*?) has ")
_WORDS = re.compile(r"[a-z]{4,}")
_BASE_FIELDS = ("id", "title", "created_at")
_encoder = msgspec.json.Encoder()

Produced = list[tuple[str, dict[str, Any]]]


@dataclass
class Job:
    """What one call is about: the product, the documents given, and the call's hints."""

    product: Product
    context: list[dict[str, Any]]
    hints: dict[str, Any]
    feedback: str = ""
    brief: bool = False
    budget: int = MAX_ARTIFACTS
    revised: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.revised = f" (revised: {self.feedback[:80]})" if self.feedback else ""

    def items(self, kind: str) -> list[dict[str, Any]]:
        return [item for item in self.context if item.get("artifact_type") == kind]

    def content(self, kind: str) -> dict[str, Any] | None:
        for item in self.items(kind):
            if isinstance(item.get("content"), dict):
                return dict(item["content"])
        return None

    def title(self, label: str) -> str:
        return f"{label}: {self.product.name}{self.revised}"[:300]


@dataclass
class Planned:
    """A feature as the documents carry it: its idea, description and requirement ids."""

    idea: FeatureIdea
    description: str
    requirement_ids: list[str]


def _article(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1] if words else ""


def _describe(product: Product, feature: FeatureIdea) -> str:
    if feature.parent:
        has = f"Every {feature.parent} has {_article(feature.entity)}"
        return f"{has}: set it, change it and see it on the {feature.parent}."
    if feature.verbs:
        return f"{sentence(product.audience)} {_join(feature.verbs)} {feature.things}."
    if feature.entity in ("team", "family", "group", "club", "household", "company", "organization"):
        return f"Create {feature.things}, invite members and share the work within each {feature.entity}."
    return f"Create, list, update and remove {feature.things}."


def _planned(job: Job) -> list[Planned]:
    """The features of the PRD (or brief) given, else those of the idea."""
    spec = job.content("software_specification")
    found: list[Planned] = []
    if spec is not None:
        for entry in spec.get("feature_map") or []:
            if not isinstance(entry, dict) or not entry.get("name"):
                continue
            description = str(entry.get("description") or "")
            idea = feature_from_name(str(entry["name"]))
            parent = _EVERY.match(description)
            idea.parent = parent.group(1) if parent else None
            ids = [str(ident) for ident in entry.get("requirement_ids") or []]
            if all(known.idea.module != idea.module for known in found):
                found.append(Planned(idea, description, ids))
    if found:
        return found
    return [
        Planned(feature, _describe(job.product, feature), [f"BR-{index}"])
        for index, feature in enumerate(job.product.features, start=1)
    ]
