"""The content schema of each artifact type.

An artifact's `content` must match the schema of its type; every length is bounded so that no
content can grow without limit. Agents write it (`app.agents.outputs`), the store checks it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from app.artifacts.models import ArtifactType

Text = Annotated[str, Meta(max_length=20_000)]
Short = Annotated[str, Meta(min_length=1, max_length=300)]
Code = Annotated[str, Meta(max_length=200_000)]
UUIDText = Annotated[str, Meta(pattern=r"^[0-9a-fA-F-]{32,36}$")]
# A relative path in normal form: no `..`, no empty or `.` segment (`a//b`, `./a`, `a/`), no newline
# (a `$` alone would accept one at the end). The form is checked by `check_path`, the pattern
# keeps what a JSON Schema reader can check.
Path = Annotated[str, Meta(min_length=1, max_length=300, pattern=r"^(?!/)(?!.*\.\.)(?![\s\S]*\n)(?!.*//)[\w./ -]+$")]


def check_path(path: str) -> None:
    segments = path.split("/")
    if path != path.strip() or "\n" in path or any(segment in ("", ".", "..") for segment in segments):
        raise ValueError(f"path {path!r} is not a relative path in normal form (no '', '.' or '..' segment)")


def check_unique(what: str, files: list[SourceFile]) -> None:
    seen: set[str] = set()
    for file in files:
        if file.path in seen:
            raise ValueError(f"{what}: the path {file.path!r} is given twice")
        seen.add(file.path)


class Content(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of every artifact content."""


# -- analyst ---------------------------------------------------------------------------------


class UserPersona(Content):
    name: Short
    description: Text
    needs: Annotated[list[Short], Meta(max_length=20)] = msgspec.field(default_factory=list)


class Requirement(Content):
    id: Short
    description: Text
    priority: Literal["must", "should", "could"] = "must"


class Feature(Content):
    name: Short
    description: Text
    requirement_ids: Annotated[list[Short], Meta(max_length=50)] = msgspec.field(default_factory=list)


class SoftwareSpecification(Content):
    """A PRD: why, for whom, what."""

    vision: Text
    personas: Annotated[list[UserPersona], Meta(max_length=20)]
    business_requirements: Annotated[list[Requirement], Meta(max_length=200)]
    feature_map: Annotated[list[Feature], Meta(max_length=100)]
    success_criteria: Annotated[list[Text], Meta(max_length=50)]
    open_questions: Annotated[list[Text], Meta(max_length=50)] = msgspec.field(default_factory=list)


class Milestone(Content):
    name: Short
    description: Text
    deliverables: Annotated[list[Short], Meta(max_length=50)] = msgspec.field(default_factory=list)


class ProjectPlan(Content):
    goals: Annotated[list[Text], Meta(max_length=50)]
    milestones: Annotated[list[Milestone], Meta(max_length=50)]
    risks: Annotated[list[Text], Meta(max_length=50)] = msgspec.field(default_factory=list)


# -- architect -------------------------------------------------------------------------------


class Component(Content):
    name: Short
    responsibility: Text
    technology: Short


class Endpoint(Content):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: Short
    description: Text


class Entity(Content):
    name: Short
    fields: Annotated[list[Short], Meta(max_length=100)]


class Risk(Content):
    description: Text
    severity: Literal["low", "medium", "high"]
    mitigation: Text


class SystemArchitecture(Content):
    overview: Text
    components: Annotated[list[Component], Meta(max_length=100)]
    api_spec: Annotated[list[Endpoint], Meta(max_length=200)]
    data_model: Annotated[list[Entity], Meta(max_length=100)]
    risks: Annotated[list[Risk], Meta(max_length=50)]


class WorkItem(Content):
    id: Short
    title: Short
    description: Text
    depends_on: Annotated[list[Short], Meta(max_length=50)] = msgspec.field(default_factory=list)
    estimate_hours: Annotated[float, Meta(ge=0, le=10_000)] = 0.0


class ImplementationPlan(Content):
    tasks: Annotated[list[WorkItem], Meta(max_length=300)]


# -- coder, tester, deployer -----------------------------------------------------------------


class SourceFile(Content):
    path: Path
    language: Short
    content: Code

    def __post_init__(self) -> None:
        check_path(self.path)


class SourceCode(Content):
    files: Annotated[list[SourceFile], Meta(max_length=200)]
    tests: Annotated[list[SourceFile], Meta(max_length=200)] = msgspec.field(default_factory=list)
    dependencies: Annotated[list[Short], Meta(max_length=200)] = msgspec.field(default_factory=list)
    notes: Text = ""

    def __post_init__(self) -> None:
        check_unique("files and tests", [*self.files, *self.tests])


class TestCase(Content):
    id: Short
    title: Short
    steps: Annotated[list[Text], Meta(max_length=50)]
    expected: Text
    status: Literal["passed", "failed", "not_run"] = "not_run"


class Defect(Content):
    id: Short
    title: Short
    severity: Literal["low", "medium", "high", "critical"]
    reproduction_steps: Annotated[list[Text], Meta(max_length=50)]


class TestResults(Content):
    test_plan: Text
    cases: Annotated[list[TestCase], Meta(max_length=500)]
    defects: Annotated[list[Defect], Meta(max_length=200)] = msgspec.field(default_factory=list)
    summary: Text = ""


class EnvironmentVariable(Content):
    name: Annotated[str, Meta(pattern=r"^[A-Z][A-Z0-9_]{0,99}$")]
    description: Text
    required: bool = True


class DeploymentPackage(Content):
    container_files: Annotated[list[SourceFile], Meta(max_length=50)]
    health_checks: Annotated[list[Text], Meta(max_length=50)]
    rollback_steps: Annotated[list[Text], Meta(max_length=50)]
    run_files: Annotated[list[SourceFile], Meta(max_length=50)] = msgspec.field(default_factory=list)
    environment: Annotated[list[EnvironmentVariable], Meta(max_length=100)] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        check_unique("container_files and run_files", [*self.container_files, *self.run_files])


class DeploymentLog(Content):
    steps: Annotated[list[Text], Meta(max_length=200)]
    outcome: Literal["succeeded", "failed", "planned"]
    notes: Text = ""


# -- product owner, scrum master, reviewers --------------------------------------------------


class StoryOutline(Content):
    id: Short
    title: Short
    description: Text = ""


class Epic(Content):
    """One epic of a sharded PRD: what it delivers, the requirements and components it covers."""

    id: Short
    title: Short
    goal: Text
    requirement_ids: Annotated[list[Short], Meta(max_length=100)] = msgspec.field(default_factory=list)
    components: Annotated[list[Short], Meta(max_length=50)] = msgspec.field(default_factory=list)
    stories: Annotated[list[StoryOutline], Meta(max_length=50)] = msgspec.field(default_factory=list)


class Story(Content):
    """A user story ready for development (BMAD's story.md)."""

    id: Short
    epic_id: Short
    title: Short
    as_a: Text
    i_want: Text
    so_that: Text
    acceptance_criteria: Annotated[list[Text], Meta(min_length=1, max_length=50)]
    tasks: Annotated[list[Text], Meta(max_length=100)] = msgspec.field(default_factory=list)
    components: Annotated[list[Short], Meta(max_length=50)] = msgspec.field(default_factory=list)
    status: Literal["draft", "approved", "review", "done"] = "draft"


class Finding(Content):
    """One checked item: a checklist line or an aspect of the work under review."""

    item: Text
    status: Literal["pass", "fail", "partial", "not_applicable"]
    note: Text = ""


class Review(Content):
    """A validation or review of other artifacts; the reviewed ones are linked in its metadata."""

    verdict: Literal["approved", "changes_requested"]
    summary: Text
    findings: Annotated[list[Finding], Meta(max_length=500)] = msgspec.field(default_factory=list)
    checklist: Short | None = None


# -- orchestrator ----------------------------------------------------------------------------


class AgentOutput(Content):
    """The orchestrator's plans, routing decisions and answers."""

    summary: Text
    plan: Annotated[list[Text], Meta(max_length=100)] = msgspec.field(default_factory=list)
    routed_to: Annotated[list[Short], Meta(max_length=20)] = msgspec.field(default_factory=list)
    answer: Text = ""


CONTENT_TYPES: dict[ArtifactType, type[Content]] = {
    ArtifactType.SOFTWARE_SPECIFICATION: SoftwareSpecification,
    ArtifactType.PROJECT_PLAN: ProjectPlan,
    ArtifactType.SYSTEM_ARCHITECTURE: SystemArchitecture,
    ArtifactType.IMPLEMENTATION_PLAN: ImplementationPlan,
    ArtifactType.SOURCE_CODE: SourceCode,
    ArtifactType.TEST_RESULTS: TestResults,
    ArtifactType.DEPLOYMENT_PACKAGE: DeploymentPackage,
    ArtifactType.DEPLOYMENT_LOG: DeploymentLog,
    ArtifactType.AGENT_OUTPUT: AgentOutput,
    ArtifactType.REVIEW: Review,
    ArtifactType.EPIC: Epic,
    ArtifactType.STORY: Story,
}
# Whose text is code or files: kept as written (escaped wherever it is shown), never rewritten.
CODE_TYPES = frozenset({ArtifactType.SOURCE_CODE, ArtifactType.DEPLOYMENT_PACKAGE})


def content_schema(artifact_type: ArtifactType) -> dict[str, Any]:
    schema: dict[str, Any] = msgspec.json.schema(CONTENT_TYPES[artifact_type])
    return schema
