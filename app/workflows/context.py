"""What a workflow step reads and writes: BMAD artifact names, the step's inputs and its brief.

BMAD workflows name documents (`prd.md`, `sharded_docs`, `all_artifacts_in_project`); the engine
maps every such name onto one of our artifact types, or onto "all of the project's current
documents". A step's `requires` resolves, in order, to what an earlier step of this execution made,
else to the project's newest artifacts of that type; what is found for neither is reported as a
missing input. What a step writes comes from its `creates`/`updates` names; a validation or review
step (`validates:`, `review_*` actions, a retrospective) writes a review, linked to what it
reviewed, and never a new version of the reviewed document. A step that updates a document also
reads the latest review of it and the stories it was written for (a fix after QA).
"""

from __future__ import annotations

import re
from typing import Any, Final
from uuid import UUID

import msgspec
from sqlalchemy import Text, bindparam, cast, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.agents.personas import AGENT_ARTIFACTS
from app.artifacts.models import Artifact, ArtifactType, Granularity
from app.artifacts.search import quoted_element
from app.bmad.loader import BmadCore, Workflow, WorkflowStep, template_of
from app.tasks.models import AgentType


class AllDocuments:
    """The name of every current document of the project (`all_artifacts_in_project`, ...)."""

    def __repr__(self) -> str:
        return "ALL_DOCUMENTS"


ALL_DOCUMENTS: Final = AllDocuments()
DocumentKind = ArtifactType | AllDocuments

# BMAD artifact names onto our artifact types (ours are named by their type already).
ARTIFACT_NAMES: dict[str, DocumentKind] = {
    "project-brief.md": ArtifactType.SOFTWARE_SPECIFICATION,
    "prd.md": ArtifactType.SOFTWARE_SPECIFICATION,
    "brownfield-prd.md": ArtifactType.SOFTWARE_SPECIFICATION,
    "architecture.md": ArtifactType.SYSTEM_ARCHITECTURE,
    "fullstack-architecture.md": ArtifactType.SYSTEM_ARCHITECTURE,
    "front-end-architecture.md": ArtifactType.SYSTEM_ARCHITECTURE,
    "brownfield-architecture.md": ArtifactType.SYSTEM_ARCHITECTURE,
    "front-end-spec.md": ArtifactType.SYSTEM_ARCHITECTURE,
    # The analysis of an existing system (document-project) is an architecture of what is there.
    "existing_service_analysis": ArtifactType.SYSTEM_ARCHITECTURE,
    "existing_ui_analysis": ArtifactType.SYSTEM_ARCHITECTURE,
    "existing_documentation_or_analysis": ALL_DOCUMENTS,
    "sharded_docs": ArtifactType.EPIC,
    "sharded_docs_or_brownfield_docs": ArtifactType.EPIC,
    "story.md": ArtifactType.STORY,
    "implementation_files": ArtifactType.SOURCE_CODE,
    "v0_prompt": ArtifactType.AGENT_OUTPUT,
    "epic-retrospective.md": ArtifactType.REVIEW,
    "all_artifacts": ALL_DOCUMENTS,
    "all_artifacts_in_project": ALL_DOCUMENTS,
    "any_flagged_documents": ALL_DOCUMENTS,
}
# Actions whose step reviews or validates what it is given instead of writing it anew.
_REVIEW_ACTION = re.compile(r"^(review|validate|qa_|epic_retrospective)")
# Kinds read as a whole set (every epic of the sharding, every story of the stories step).
SET_KINDS = frozenset({ArtifactType.EPIC, ArtifactType.STORY, ArtifactType.SOURCE_CODE, ArtifactType.REVIEW})
# BMAD's dev agent always loads the architecture (core-config `devLoadAlwaysFiles`).
ALWAYS_READS: dict[AgentType, tuple[ArtifactType, ...]] = {AgentType.CODER: (ArtifactType.SYSTEM_ARCHITECTURE,)}


def artifact_name(name: str) -> str:
    """`prd.md (if needed)` → `prd.md`."""
    return name.split(" ")[0].strip()


def kind_of(name: str) -> DocumentKind | None:
    """The artifact type (or all documents) a BMAD name stands for; None when we have none."""
    name = artifact_name(name)
    if name in ARTIFACT_NAMES:
        return ARTIFACT_NAMES[name]
    if name.startswith("all_"):
        return ALL_DOCUMENTS
    try:
        return ArtifactType(name)
    except ValueError:
        return None


def artifact_type_of(name: str) -> ArtifactType | None:
    kind = kind_of(name)
    return kind if isinstance(kind, ArtifactType) else None


def is_review(step: WorkflowStep) -> bool:
    return bool(step.validates) or bool(step.action and _REVIEW_ACTION.match(step.action.replace(" ", "_")))


def output_types(step: WorkflowStep) -> list[ArtifactType]:
    """What the step writes: a review; else its agent's usual types when they cover what the step
    names in `creates`/`updates`; else exactly the named types (a PO's epics, an SM's stories)."""
    if is_review(step):
        return [ArtifactType.REVIEW]
    usual = list(AGENT_ARTIFACTS[step.agent_type]) if step.agent_type is not None else []
    named = [kind for name in [*step.creates, *step.updates] if (kind := artifact_type_of(name)) is not None]
    if not named or set(named) <= set(usual):
        return usual
    return list(dict.fromkeys(named))


def step_outputs(step: WorkflowStep) -> set[DocumentKind]:
    return set(output_types(step))


def depends_on(step: WorkflowStep, earlier: WorkflowStep) -> bool:
    """Whether `step` needs something `earlier` makes (or writes what `earlier` writes)."""
    made = step_outputs(earlier)
    for name in [*step.requires, *step.updates, *([step.validates] if step.validates else [])]:
        kind = kind_of(name)
        if kind is ALL_DOCUMENTS or kind in made:
            return True
    return False


def repeat_nouns(repeats: str | None) -> list[str]:
    """`for_each_epic_or_enhancement` → [epic, enhancement]."""
    return [noun for noun in (repeats or "").removeprefix("for_each_").split("_or_") if noun]


# BMAD closes its development cycle with a marker (`step: repeat_development_cycle`, `action:
# continue_for_all_stories`): SM → Dev → QA again for every story. We run that repetition as the
# cycle's dev steps repeating: the one that implements a story once per story, the one that
# fixes code once per story's code. The QA review between them reviews the whole set at once.
CYCLE_MARKERS = frozenset({"repeat_development_cycle", "continue_for_all_stories"})


def is_cycle_marker(step: WorkflowStep) -> bool:
    return step.agent_type is None and bool({step.step, step.action} & CYCLE_MARKERS)


def cycle_repeats(workflow: Workflow) -> dict[int, str]:
    """Per step index, the `repeats` the cycle marker gives a dev step of its cycle (the steps after
    the last one that writes stories, up to the marker) that has none of its own."""
    repeats: dict[int, str] = {}
    start = 0
    for step in workflow.steps:
        if is_cycle_marker(step):
            for earlier in workflow.steps[start : step.index]:
                if earlier.agent_type != AgentType.CODER or earlier.repeats:
                    continue
                reads = {kind_of(name) for name in [*earlier.requires, *earlier.updates]}
                if ArtifactType.STORY in reads:
                    repeats[earlier.index] = "for_each_story"
                elif ArtifactType.SOURCE_CODE in reads:
                    repeats[earlier.index] = "for_each_source_code"
            start = step.index + 1
        elif ArtifactType.STORY in output_types(step):
            start = step.index + 1
    return repeats


def repeats_of(workflow: Workflow, step: WorkflowStep) -> str | None:
    """What the step repeats over: its own `repeats`, else what the development cycle gives it."""
    return step.repeats or cycle_repeats(workflow).get(step.index)


def cycle_note(workflow: Workflow, step: WorkflowStep) -> str | None:
    """Why a cycle marker is skipped: the steps it repeats already ran once per item."""
    if not is_cycle_marker(step):
        return None
    repeated = sorted(cycle_repeats(workflow).items())
    if not repeated:
        return None
    runs = ", ".join(
        f"{workflow.steps[index].action or f'step {index}'} runs {repeats.replace('_', ' ')}"
        for index, repeats in repeated
    )
    return f"the development cycle repeats as its dev steps do: {runs}"


def noun_kind(noun: str) -> ArtifactType | None:
    try:
        return ArtifactType(noun)
    except ValueError:
        return None


class Inputs(msgspec.Struct, kw_only=True):
    """A step's resolved inputs: the context to inject, what it reviews, and what was not found."""

    context_ids: list[UUID]
    reviews: list[UUID]
    missing: list[str]
    # Each input artifact's type, to pick a run's own item out of the shared context.
    kinds: dict[UUID, str] = msgspec.field(default_factory=dict)
    # What belongs to one of the documents the step updates (its latest review, the story it was
    # written for): the document's id. A run over one of them gets only what belongs to it.
    belongs_to: dict[UUID, list[UUID]] = msgspec.field(default_factory=dict)


# A project's live documents (bind parameter `project_id`), and the reads of one type (`kind`) every
# step's inputs make, built once: building them and generating their cache keys on every read was
# most of what reading a step's inputs cost.
_DOCUMENTS = select(Artifact.id, Artifact.artifact_type, Artifact.task_id).where(
    Artifact.project_id == bindparam("project_id"),
    Artifact.granularity == Granularity.DOCUMENT.value,
    Artifact.deleted_at.is_(None),
)
_OF_KIND = _DOCUMENTS.where(Artifact.artifact_type == bindparam("kind"))
_OF_KIND_BY_TASKS = _OF_KIND.where(Artifact.task_id.in_(bindparam("task_ids", expanding=True)))
_NEWEST_OF_KIND = _OF_KIND.order_by(Artifact.id.desc()).limit(1)


class StepInputs:
    """Resolve a step's `requires` (and what it updates or validates) to artifacts."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def resolve(
        self,
        *,
        project_id: UUID,
        idea_id: UUID,
        step: WorkflowStep,
        made_by_earlier: dict[ArtifactType, list[UUID]],
    ) -> Inputs:
        """`made_by_earlier`: per type, the tasks of the latest earlier finished step that made it."""
        found: dict[UUID, str] = {}
        missing: list[str] = []
        reviews: list[UUID] = []
        belongs_to: dict[UUID, list[UUID]] = {}
        names = [(name, True) for name in step.requires]
        names += [(name, False) for name in step.updates]  # what a step updates it reads, if it exists
        if step.validates:
            names.append((step.validates, True))
        if not names and is_review(step):  # a review that names nothing (a retrospective): of everything
            names.append(("all_artifacts_in_project", False))
        for name, required in names:
            kind = kind_of(name)
            if kind is None:
                if required:
                    missing.append(f"{artifact_name(name)}: no artifact type of ours stands for it")
                continue
            rows = await self._of_kind(project_id, kind, made_by_earlier)
            if not rows and required:
                what = f"no {kind.value}" if isinstance(kind, ArtifactType) else "no document"
                missing.append(f"{artifact_name(name)}: {what} in the project yet")
            for artifact_id, artifact_type in rows:
                found.setdefault(artifact_id, artifact_type)
            if step.validates == name or (is_review(step) and required):
                reviews += [artifact_id for artifact_id, _ in rows]
            elif name in step.updates and not is_review(step):  # a fix reads what was said of it
                for artifact_id, _ in rows:
                    for extra_id, extra_type in await self._belonging_to(project_id, artifact_id):
                        found.setdefault(extra_id, extra_type)
                        belongs_to.setdefault(extra_id, []).append(artifact_id)
        if step.agent_type is not None:
            for kind in ALWAYS_READS.get(step.agent_type, ()):
                for artifact_id, artifact_type in await self._of_kind(project_id, kind, made_by_earlier):
                    found.setdefault(artifact_id, artifact_type)
        if is_review(step) and not reviews:  # a review of nothing named: of what it was given
            reviews = [artifact_id for artifact_id in found]
        found.pop(idea_id, None)
        return Inputs(
            context_ids=[*found, idea_id],
            reviews=list(dict.fromkeys(reviews)),
            missing=missing,
            kinds={**found, idea_id: ArtifactType.USER_INPUT.value},
            belongs_to={artifact_id: owners for artifact_id, owners in belongs_to.items() if artifact_id != idea_id},
        )

    async def _belonging_to(self, project_id: UUID, artifact_id: UUID) -> list[tuple[UUID, str]]:
        """What a step that updates `artifact_id` reads besides it: its latest review (QA's findings
        on the code it fixes) and the stories it was written for (so a fix keeps to its story)."""
        rows: list[tuple[UUID, str]] = []
        review = (
            await self.session.execute(
                _DOCUMENTS.where(
                    Artifact.artifact_type == ArtifactType.REVIEW.value,
                    cast(Artifact.meta["related_artifacts"], Text).like(quoted_element(str(artifact_id))),
                )
                .order_by(Artifact.id.desc())
                .limit(1),
                {"project_id": project_id},
            )
        ).first()
        if review is not None:
            rows.append((review.id, review.artifact_type))
        meta = await self.session.scalar(select(Artifact.meta).where(Artifact.id == artifact_id))
        made_from = [UUID(str(value)) for value in (meta or {}).get("derived_from") or []]
        if made_from:
            stories = _DOCUMENTS.where(Artifact.id.in_(made_from), Artifact.artifact_type == ArtifactType.STORY.value)
            found = await self.session.execute(stories.order_by(Artifact.id), {"project_id": project_id})
            rows += [(row.id, row.artifact_type) for row in found]
        return rows

    async def _of_kind(
        self, project_id: UUID, kind: DocumentKind, made_by_earlier: dict[ArtifactType, list[UUID]]
    ) -> list[tuple[UUID, str]]:
        if isinstance(kind, AllDocuments):
            return await self._current_documents(project_id, made_by_earlier)
        params: dict[str, Any] = {"project_id": project_id, "kind": kind.value}
        producers = made_by_earlier.get(kind)
        if producers:
            rows = (await self.session.execute(_OF_KIND_BY_TASKS, {**params, "task_ids": producers})).all()
            if rows:
                return [(row.id, row.artifact_type) for row in sorted(rows, key=lambda row: row.id)]
        newest = (await self.session.execute(_NEWEST_OF_KIND, params)).first()
        if newest is None:
            return []
        if kind in SET_KINDS and newest.task_id is not None:  # the whole set its task made
            rows = (await self.session.execute(_OF_KIND_BY_TASKS, {**params, "task_ids": [newest.task_id]})).all()
            return [(row.id, row.artifact_type) for row in sorted(rows, key=lambda row: row.id)]
        return [(newest.id, newest.artifact_type)]

    async def _current_documents(
        self, project_id: UUID, made_by_earlier: dict[ArtifactType, list[UUID]]
    ) -> list[tuple[UUID, str]]:
        """The newest document of every type (every one of the newest set for epics and stories);
        not reviews, and not the idea (always given anyway)."""
        kinds = (
            select(Artifact.artifact_type)
            .where(
                Artifact.project_id == project_id,
                Artifact.granularity == Granularity.DOCUMENT.value,
                Artifact.deleted_at.is_(None),
            )
            .distinct()
        )
        rows: list[tuple[UUID, str]] = []
        for value in sorted(await self.session.scalars(kinds)):
            kind = ArtifactType(value)
            if kind in (ArtifactType.USER_INPUT, ArtifactType.REVIEW, ArtifactType.HITL_RESPONSE):
                continue
            rows += await self._of_kind(project_id, kind, made_by_earlier)
        return rows


def made_by_earlier_steps(
    workflow: Workflow, step: WorkflowStep, runs_of: dict[int, tuple[str, list[UUID]]]
) -> dict[ArtifactType, list[UUID]]:
    """Per artifact type, the tasks of the latest earlier finished step of the execution that writes it.

    `runs_of`: a step index → (its status, its runs' task ids).
    """
    made: dict[ArtifactType, list[UUID]] = {}
    for earlier in workflow.steps[: step.index]:
        status, task_ids = runs_of.get(earlier.index, ("pending", []))
        if status != "completed" or not task_ids:
            continue
        for kind in output_types(earlier):
            made[kind] = task_ids
    return made


# -- what a step works from besides its documents -----------------------------------------------

MAX_TASK_TEXT = 8_000  # characters of a BMAD task file or template outline in the prompt
MAX_CHECKLIST_ITEMS = 200


class StepResources(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A step's persona, task file and checklist, resolved from the BMAD core when its execution
    starts and kept with the execution's definition, so that later edits do not move it."""

    persona_id: str | None = None
    persona: dict[str, Any] | None = None
    task_file: str | None = None
    task_text: str | None = None
    checklist: str | None = None
    checklist_items: list[str] = msgspec.field(default_factory=list)


def _outline(sections: Any, depth: int = 0) -> list[str]:
    lines: list[str] = []
    for section in sections:
        lines.append(f"{'  ' * depth}- {section.title or section.id}")
        if section.instruction:
            lines.append(f"{'  ' * depth}  ({' '.join(section.instruction.split())[:300]})")
        lines += _outline(section.sections, depth + 1)
    return lines


def _template_outline(core: BmadCore, name: str) -> tuple[str, str] | None:
    """A `uses:` that names a template (`brownfield-prd-tmpl`): its sections as an outline."""
    template = template_of(core, name)
    if template is None:
        return None
    heading = f"Follow the template {template.name} ({template.id}); its sections:"
    return template.id, "\n".join([heading, *_outline(template.sections)])


def step_resources(workflow: Workflow, core: BmadCore | None) -> dict[str, StepResources]:
    """Per step index: what the BMAD core has for it (persona file, `uses:` task, checklist)."""
    resources: dict[str, StepResources] = {}
    if core is None:
        return resources
    for step in workflow.steps:
        found = StepResources()
        persona_id = (step.agent or "").split("/")[0].strip() or None
        persona = core.persona(step.agent) if step.agent else None
        if persona is not None:
            found.persona_id, found.persona = persona_id, msgspec.to_builtins(persona)
        for name in (step.uses, step.validates):
            if not name:
                continue
            document = core.document(name)
            if document is not None and document.kind == "checklist":
                found.checklist = document.id
                found.checklist_items = [item[:300] for item in document.items[:MAX_CHECKLIST_ITEMS]]
            elif document is not None:
                found.task_file, found.task_text = document.id, document.text[:MAX_TASK_TEXT]
            elif (outline := _template_outline(core, name)) is not None:
                found.task_file, found.task_text = outline[0], outline[1][:MAX_TASK_TEXT]
        if found != StepResources():
            resources[str(step.index)] = found
    return resources
