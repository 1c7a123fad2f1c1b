"""The documents' stages: each stage's BMAD template of ours (`app/bmad_core/templates/`) and the
function that turns its artifacts' content into the template's values."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgspec

from app.artifacts.models import ArtifactType
from app.documents.templates import Template, load_template

if TYPE_CHECKING:
    from app.documents.services import StoredArtifact

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "bmad_core" / "templates"


class Stage(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    template_file: str
    artifact_types: tuple[ArtifactType, ...]
    values: Callable[[dict[ArtifactType, Any]], dict[str, Any]]


def _prd(content: dict[ArtifactType, Any]) -> dict[str, Any]:
    spec = content[ArtifactType.SOFTWARE_SPECIFICATION]
    return {
        "vision": spec.get("vision", ""),
        "persona": [
            {"name": p["name"], "description": p.get("description", ""), "sections": {"needs": p.get("needs", [])}}
            for p in spec.get("personas", [])
        ],
        "requirements": [
            f"{r['id']} ({r.get('priority', 'must')}): {r['description']}"
            for r in spec.get("business_requirements", [])
        ],
        "features": [
            [f["name"], f.get("description", ""), ", ".join(f.get("requirement_ids", []))]
            for f in spec.get("feature_map", [])
        ],
        "success-criteria": spec.get("success_criteria", []),
        "open-questions": spec.get("open_questions", []),
    }


def _architecture(content: dict[ArtifactType, Any]) -> dict[str, Any]:
    arch = content[ArtifactType.SYSTEM_ARCHITECTURE]
    return {
        "overview": arch.get("overview", ""),
        "components": [[c["name"], c["responsibility"], c["technology"]] for c in arch.get("components", [])],
        "api": [[e["method"], e["path"], e["description"]] for e in arch.get("api_spec", [])],
        "data-model": [[e["name"], ", ".join(e.get("fields", []))] for e in arch.get("data_model", [])],
        "risks": [[r["description"], r["severity"], r["mitigation"]] for r in arch.get("risks", [])],
    }


def _implementation_plan(content: dict[ArtifactType, Any]) -> dict[str, Any]:
    plan = content[ArtifactType.IMPLEMENTATION_PLAN]
    return {
        "tasks": [
            [
                t["id"],
                t["title"],
                t.get("description", ""),
                ", ".join(t.get("depends_on", [])),
                f"{t.get('estimate_hours', 0):g}",
            ]
            for t in plan.get("tasks", [])
        ]
    }


def _test_report(content: dict[ArtifactType, Any]) -> dict[str, Any]:
    report = content[ArtifactType.TEST_RESULTS]
    return {
        "plan": report.get("test_plan", ""),
        "summary": report.get("summary", ""),
        "cases": [[c["id"], c["title"], c.get("expected", ""), c.get("status", "")] for c in report.get("cases", [])],
        "defect": [
            {
                **{key: d[key] for key in ("id", "title", "severity")},
                "sections": {"reproduction": d["reproduction_steps"]},
            }
            for d in report.get("defects", [])
        ],
    }


def _deployment_guide(content: dict[ArtifactType, Any]) -> dict[str, Any]:
    package = content.get(ArtifactType.DEPLOYMENT_PACKAGE, {})
    log = content.get(ArtifactType.DEPLOYMENT_LOG, {})
    files = [[f["path"], "container"] for f in package.get("container_files", [])]
    files += [[f["path"], "run"] for f in package.get("run_files", [])]
    return {
        "files": files,
        "environment": [
            [v["name"], v.get("description", ""), "yes" if v.get("required", True) else "no"]
            for v in package.get("environment", [])
        ],
        "health-checks": package.get("health_checks", []),
        "rollback": package.get("rollback_steps", []),
        "log": log.get("steps", []),
    }


STAGES = (
    Stage(
        name="prd", template_file="prd-tmpl.yaml", artifact_types=(ArtifactType.SOFTWARE_SPECIFICATION,), values=_prd
    ),
    Stage(
        name="architecture",
        template_file="architecture-tmpl.yaml",
        artifact_types=(ArtifactType.SYSTEM_ARCHITECTURE,),
        values=_architecture,
    ),
    Stage(
        name="implementation_plan",
        template_file="implementation-plan-tmpl.yaml",
        artifact_types=(ArtifactType.IMPLEMENTATION_PLAN,),
        values=_implementation_plan,
    ),
    Stage(
        name="test_report",
        template_file="test-report-tmpl.yaml",
        artifact_types=(ArtifactType.TEST_RESULTS,),
        values=_test_report,
    ),
    Stage(
        name="deployment_guide",
        template_file="deployment-guide-tmpl.yaml",
        artifact_types=(ArtifactType.DEPLOYMENT_PACKAGE, ArtifactType.DEPLOYMENT_LOG),
        values=_deployment_guide,
    ),
)


STORIES_TEMPLATE = "stories-tmpl.yaml"


def _narrative(story: dict[str, Any]) -> str:
    parts = [str(story.get(key, "")).strip().rstrip(".") for key in ("as_a", "i_want", "so_that")]
    return f"As {parts[0]}, I want {parts[1]}, so that {parts[2][:1].lower()}{parts[2][1:]}."


def _stories(epics: list[StoredArtifact], stories: list[StoredArtifact]) -> dict[str, Any]:
    """Each epic of the newest sharding with the stories written for it."""
    by_epic: dict[UUID | None, list[StoredArtifact]] = {}
    for story in stories:
        by_epic.setdefault(story.parent_id, []).append(story)
    return {
        "epic": [
            {
                "id": epic.content.get("id", ""),
                "title": epic.content.get("title", epic.title),
                "sections": {
                    "goal": epic.content.get("goal", ""),
                    "requirements": epic.content.get("requirement_ids", []),
                    "components": epic.content.get("components", []),
                    "story": [
                        {
                            "id": story.content.get("id", ""),
                            "title": story.content.get("title", story.title),
                            "status": story.content.get("status", "draft"),
                            "sections": {
                                "narrative": _narrative(story.content),
                                "acceptance-criteria": story.content.get("acceptance_criteria", []),
                                "tasks": story.content.get("tasks", []),
                            },
                        }
                        for story in by_epic.get(epic.id, [])
                    ],
                },
            }
            for epic in epics
        ]
    }


@cache
def stage_template(file_name: str) -> Template:
    return load_template(TEMPLATES_DIR / file_name)
