"""One attempt of one agent task, from prompt to stored artifacts.

The steps: load the task and the artifacts it names; build the prompt; check the budgets before
the call (a call that would pass a limit is not made: the task waits on a `budget` HITL request);
call the agent's model, retrying transient failures and invalid answers with backoff, recording
every call in `llm_usage`; validate and clean the answer; then, in one transaction, store the
artifacts, finish the task (or park it on a question for a human) and update the agent's status,
each with its events. Every finishing write is a compare-and-set on the lease, so an attempt
whose lease was taken away (cancelled, timed out, given to another worker) changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import UUID

import msgspec
import structlog
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.agents.live_output import LiveOutput
from app.agents.models import AgentState
from app.agents.outputs import AgentAnswer, InvalidAnswerError, parse_answer
from app.agents.personas import AGENT_ARTIFACTS, Persona, persona_for
from app.agents.prompts import ContextItem, PromptContext, build_prompt
from app.agents.services import BudgetExceededError, budget_limits
from app.artifacts.models import ArtifactType
from app.artifacts.services import NewArtifacts
from app.chat.services import is_chat_task
from app.config import HitlSettings
from app.core.runtime import Runtime
from app.db.rows import along_together
from app.hitl.models import HitlKind, HitlRequest, HitlStatus, Urgency
from app.llm.base import ModelError, ModelProvider, ModelResponse, TransientModelError
from app.llm.offline import estimate_tokens
from app.llm.pricing import cost_usd
from app.llm.registry import build_provider
from app.projects.models import OversightLevel, Project
from app.runs.outcome import AttemptOutcome, ErrorNotice, HumanHold, is_step_run, on_attempt_outcome
from app.runs.provider import services
from app.tasks.models import AgentTask, AgentType, TaskStatus
from app.tasks.schemas import StepBrief
from app.tasks.services import Lease

logger = structlog.get_logger(__name__)

# The answer's size is not known before the call: the budget check assumes this many output tokens.
OUTPUT_TOKENS_ESTIMATE = 1024
# The task's project, by a statement built once: `Session.get` builds (and annotates) its statement
# and generates its cache key on every call, 5 % of a worker's CPU per task.
_PROJECT = select(Project).where(Project.id == bindparam("id"))


class TaskFailedError(Exception):
    """Every attempt failed; the message is the last provider error (or the reason)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


def call_cost_limit(project: Project, policy: HitlSettings) -> float | None:
    """The project's own per-call limit (`settings.call_cost_limit_usd`), else the server's."""
    value = project.settings.get("call_cost_limit_usd") if isinstance(project.settings, dict) else None
    return float(value) if isinstance(value, int | float) else policy.call_cost_limit_usd


def confidence_threshold(project: Project, policy: HitlSettings) -> float:
    """The project's own threshold (`settings.confidence_threshold`, checked when it is set), else the server's."""
    value = project.settings.get("confidence_threshold") if isinstance(project.settings, dict) else None
    return float(value) if isinstance(value, int | float) else policy.confidence_threshold


class AgentExecutor:
    def __init__(self, runtime: Runtime, lease: Lease) -> None:
        self.runtime = runtime
        self.lease = lease
        # Set once the attempt starts writing its result: from then on it checks the lease itself
        # (under a row lock), and the watcher must not cancel it, or the follow-up tasks it
        # returns after its commit would be lost.
        self.finishing = asyncio.Event()
        # Held by the watcher's heartbeat (a lease renewal, a progress event) and by the writing of
        # the result: never one inside the other. The result's events are made before the statement
        # that finishes the task (`AgentService.finish_attempt`): a progress event committed in
        # between would have a smaller id and a later time, the task's story out of order.
        self.heartbeat = asyncio.Lock()
        self.task: AgentTask = lease.task
        self.agent_type = AgentType(self.task.agent_type)
        self.models = runtime.settings.models
        self.provider_name, self.model = self.models.for_agent(self.agent_type.value)
        self.calls = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self.cost = 0.0
        self.log = logger.bind(task_id=str(self.task.id), agent_type=self.agent_type.value)
        # A workflow step's brief: the types it writes, its persona, task file and checklist.
        self.brief = msgspec.convert(self.task.brief or {}, StepBrief)
        self.persona = persona_for(self.agent_type)
        self.project: Project | None = None
        self.context: list[ContextItem] = []
        # The successful call's llm_usage row, written with the result in one transaction.
        self.usage: dict[str, Any] | None = None

    async def load(self, session: AsyncSession) -> None:
        """Read the project (unless the claim did) and the artifacts the task names, after the claim."""
        self.project = self.lease.project or await session.scalar(_PROJECT, {"id": self.task.project_id})
        if self.project is None or not self.task.context_ids:
            return
        artifacts = await services(session).artifacts.by_ids(
            self.project.id, [UUID(value) for value in self.task.context_ids]
        )
        self.context = [
            ContextItem(
                artifact_id=artifact.id,
                artifact_type=artifact.artifact_type,
                title=artifact.title,
                content=artifact.content,
                source_agent=artifact.source_agent,
            )
            for artifact in artifacts
        ]

    async def execute(self) -> list[tuple[UUID, str]]:
        """Do the task; the workflow tasks its completion queued (with their job ids), for the caller
        to send once the attempt is over."""
        project = self.project
        if project is None:  # deleted meanwhile: nothing to work for
            raise TaskFailedError(f"project {self.task.project_id} no longer exists", code="project_gone")
        brief = self.brief
        allowed = tuple(ArtifactType(kind) for kind in brief.output_types) or AGENT_ARTIFACTS[self.agent_type]
        self.persona = msgspec.convert(brief.persona, Persona) if brief.persona else persona_for(self.agent_type)
        prompt = build_prompt(
            self.persona, self.task.instructions, allowed, self.context, feedback=self.task.feedback, brief=brief
        )
        if not await self._within_budget(project, prompt):
            return []
        try:
            provider = build_provider(self.provider_name, self.models)
            try:
                answer = await self._call_with_retries(provider, prompt, allowed)
            finally:
                await provider.aclose()
            return await self._finish(answer, prompt, confidence_threshold(project, self.runtime.settings.hitl))
        finally:
            if self.usage is not None:  # the last call, not written with a result: on its own
                await asyncio.shield(self._write_usage(self.usage))

    # -- budget ------------------------------------------------------------------------------

    async def _within_budget(self, project: Project, prompt: PromptContext) -> bool:
        estimate = estimate_tokens(prompt.request.system + prompt.request.prompt) + OUTPUT_TOKENS_ESTIMATE
        estimate_cost = cost_usd(self.model, estimate - OUTPUT_TOKENS_ESTIMATE, OUTPUT_TOKENS_ESTIMATE)
        limit = call_cost_limit(project, self.runtime.settings.hitl)
        call_checked = project.oversight_level == OversightLevel.HIGH.value and limit is not None
        limits = budget_limits(
            project,
            agent_type=self.agent_type.value,
            task_id=self.task.id,
            task_token_limit=self.models.task_token_limit,
        )
        if not limits and not call_checked:
            return True  # no limit applies: no session, no query
        async with self.runtime.session() as session:
            try:
                await services(session).agents.check_budget(
                    project,
                    agent_type=self.agent_type.value,
                    task_id=self.task.id,
                    estimate_tokens=estimate,
                    estimate_cost=estimate_cost,
                    task_token_limit=self.models.task_token_limit,
                )
            except BudgetExceededError as exc:
                self.log.warning("budget_exceeded", scope=exc.scope, limit=exc.limit, spent=exc.spent)
                hold = HumanHold(
                    kind=HitlKind.BUDGET,
                    question=f"{exc} Raise the budget and approve to continue, or reject to stop.",
                    options=("approve", "reject"),
                    urgency=Urgency.HIGH,
                )
                outcome = AttemptOutcome(
                    agent_state=AgentState.WAITING_FOR_HITL,
                    hold=hold,
                    notice=ErrorNotice(message=str(exc), code="budget_exceeded", severity="warning"),
                )
                await self._park(
                    session, outcome, {"blocked_by": "budget", "message": str(exc), "estimate_tokens": estimate}
                )
                return False
            if call_checked and limit is not None and estimate_cost > limit and not await self._call_approved(session):
                self.log.info("call_needs_approval", estimate_cost=estimate_cost, limit=limit)
                question = (
                    f"This {self.agent_type.value} call to {self.model} would cost about ${estimate_cost:.4f}, "
                    f"more than the ${limit:.4f} a call may cost without approval. Approve to make it, reject "
                    "to stop the task."
                )
                hold = HumanHold(kind=HitlKind.PRE_CALL, question=question, options=("approve", "reject"))
                await self._park(
                    session,
                    AttemptOutcome(agent_state=AgentState.WAITING_FOR_HITL, hold=hold),
                    {"blocked_by": "pre_call", "estimate_cost_usd": estimate_cost, "limit_usd": limit},
                )
                return False
        return True

    async def _call_approved(self, session: Any) -> bool:
        """A human already approved this task's costly call (the task came back from that approval)."""
        approved = select(HitlRequest.id).where(
            HitlRequest.task_id == self.task.id,
            HitlRequest.kind == HitlKind.PRE_CALL.value,
            HitlRequest.status == HitlStatus.APPROVED.value,
        )
        return await session.scalar(approved.limit(1)) is not None

    # -- the call ----------------------------------------------------------------------------

    async def _call_with_retries(
        self, provider: ModelProvider, prompt: PromptContext, allowed: tuple[ArtifactType, ...]
    ) -> AgentAnswer:
        delays = self.models.retry_delay_list
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            response: ModelResponse | None = None
            error: Exception | None = None
            live = LiveOutput(self.runtime.publisher, self.task, attempt) if self.runtime.publisher else None
            try:
                response = await provider.complete(prompt.request, model=self.model, on_delta=live)
                answer = parse_answer(response.text, allowed)
            except (ModelError, InvalidAnswerError) as exc:
                error = exc
            finally:
                if live is not None:
                    live.flush()
            outcome = "success" if error is None else getattr(error, "code", "invalid_output")
            await self._record_usage(response, outcome, time.perf_counter() - started, with_result=error is None)
            if error is None:
                return answer
            retriable = isinstance(error, TransientModelError | InvalidAnswerError)
            if not retriable or attempt > len(delays):
                self.log.warning("model_call_failed", attempts=attempt, outcome=outcome, error=str(error))
                message = str(error)
                if not message.startswith(f"{self.provider_name}:"):  # provider errors name themselves
                    message = f"{self.provider_name}: {message}"
                raise TaskFailedError(message, code=outcome)
            delay = delays[attempt - 1]
            self.log.info("model_call_retry", attempt=attempt, outcome=outcome, delay_s=delay)
            async with self.runtime.session() as session:
                await services(session).tasks.report_progress(
                    self.lease,
                    self.runtime.settings.worker.lease_seconds,
                    0,
                    f"attempt {attempt} failed ({outcome}); retrying in {delay:g} s",
                )
            await asyncio.sleep(delay)

    async def _record_usage(
        self, response: ModelResponse | None, outcome: str, latency_s: float, *, with_result: bool = False
    ) -> None:
        """Count the call and write its llm_usage row; `with_result`: keep the row for the result's
        transaction (`_finish`), which writes it, or `execute` does on its own if the result is not."""
        tokens_in = response.tokens_in if response else 0
        tokens_out = response.tokens_out if response else 0
        model = response.model if response else self.model
        cost = cost_usd(model, tokens_in, tokens_out)
        self.calls += 1
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out
        self.cost += cost
        usage = {
            "project_id": self.task.project_id,
            "task_id": self.task.id,
            "agent_type": self.agent_type.value,
            "provider": self.provider_name,
            "model": model,
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "cost_usd": cost,
            "latency_ms": round(latency_s * 1000, 2),
            "outcome": outcome,
        }
        if with_result:
            self.usage = usage
        else:
            await self._write_usage(usage)

    async def _write_usage(self, usage: dict[str, Any]) -> None:
        async with self.runtime.session() as session:
            await services(session).agents.record_usage(**usage)
            await session.commit()
        if usage is self.usage:
            self.usage = None

    # -- the result --------------------------------------------------------------------------

    def _output(self, answer: AgentAnswer, prompt: PromptContext, artifact_ids: list[UUID]) -> dict[str, Any]:
        return {
            "summary": answer.summary,
            "artifact_ids": [str(artifact_id) for artifact_id in artifact_ids],
            "confidence": answer.confidence,
            "open_questions": answer.open_questions,
            "flags": answer.flags,
            "conflicts": msgspec.to_builtins(answer.conflicts),
            "provider": self.provider_name,
            "model": self.model,
            "usage": {
                "calls": self.calls,
                "tokens_in": self.tokens_in,
                "tokens_out": self.tokens_out,
                "cost_usd": round(self.cost, 8),
            },
            "context": {
                "injected": [str(artifact_id) for artifact_id in prompt.injected],
                "omitted": [str(artifact_id) for artifact_id in prompt.omitted],
            },
            # Who spoke and from which BMAD files: the record of what went into the prompt.
            "prompt": {
                "persona": self.persona.name,
                "persona_source": self.persona.source,
                "output_types": [kind.value for kind in prompt.output_types],
                "task_file": self.brief.task_file,
                "checklist": self.brief.checklist,
            },
        }

    async def _finish(self, answer: AgentAnswer, prompt: PromptContext, threshold: float) -> list[tuple[UUID, str]]:
        unsure = answer.confidence < threshold
        mediating = self.task.mediates is not None
        chatting = is_chat_task(self.task)  # its questions go to the chat, not to a HITL request
        # A contradiction goes to the orchestrator first; questions wait for the person after that.
        disputes = bool(answer.conflicts) and not mediating and not chatting
        asks = (bool(answer.open_questions) or unsure) and not disputes and not chatting
        task = self.task
        # Nothing follows the task's completion but its agent's status (no question, dispute, chat,
        # mediation or workflow step): all of it in one statement (`AgentService.finish_attempt`).
        alone = not (asks or disputes or chatting or mediating or is_step_run(task))
        self.finishing.set()
        async with self.heartbeat, self.runtime.session() as session:
            usage = self.usage
            # Written by the completion's statement on PostgreSQL (rolled back with it if the lease is
            # gone; `alone`, guarded by it).
            usage_along = (
                await services(session).agents.record_usage_along(guarded=alone, **usage) if usage is not None else None
            )
            store = services(session).artifacts
            # Inserted by the completion's statement on PostgreSQL, as the usage row.
            new_artifacts = NewArtifacts(guarded=alone)
            artifact_ids: list[UUID] = []
            derived_from = [str(artifact_id) for artifact_id in prompt.injected]
            parent_id = UUID(self.brief.parent_id) if self.brief.parent_id else None
            for produced in answer.artifacts:
                review = produced.artifact_type == ArtifactType.REVIEW
                artifact = await store.store_generated(
                    project_id=task.project_id,
                    task_id=task.id,
                    source_agent=self.agent_type.value,
                    artifact_type=produced.artifact_type.value,
                    title=produced.title,
                    content=produced.content,
                    meta={
                        "confidence": answer.confidence,
                        "validation_status": "valid",
                        "tags": ["review"] if review else [],
                        # A review is linked to what it reviewed (and never replaces it).
                        "related_artifacts": list(dict.fromkeys(self.brief.reviews)) if review else derived_from,
                        "derived_from": derived_from,
                    },
                    parent_id=None if review else parent_id,
                    later=new_artifacts,
                )
                artifact_ids.append(artifact.id)
            status = TaskStatus.WAITING_FOR_HITL if asks or disputes else TaskStatus.COMPLETED
            output = self._output(answer, prompt, artifact_ids)
            # Compare-and-set on the lease: if it is gone (cancelled, timed out, given to another
            # worker), the whole transaction is rolled back and nothing of this attempt is written.
            along = along_together(usage_along, new_artifacts.along())
            if alone:  # commits
                finished = await services(session).agents.finish_attempt(
                    self.lease, output, agent_state=AgentState.IDLE, along=along
                )
            else:
                finished = await services(session).tasks.complete(
                    self.lease, output, status=status, commit=False, along=along
                )
            if finished is None:
                await session.rollback()
                self.log.info("task_result_discarded")
                return []
            jobs = (
                []
                if alone
                else await self._follow_up(
                    session, finished, answer, threshold, asks=asks, disputes=disputes, artifact_ids=artifact_ids
                )
            )
            if usage is self.usage:
                self.usage = None  # written with the result
        self.log.info("task_finished", status=status.value, artifacts=len(artifact_ids))
        return jobs

    async def _follow_up(
        self,
        session: AsyncSession,
        finished: AgentTask,
        answer: AgentAnswer,
        threshold: float,
        *,
        asks: bool,
        disputes: bool,
        artifact_ids: list[UUID],
    ) -> list[tuple[UUID, str]]:
        """After the completion, in its transaction: what follows (`on_attempt_outcome`); commits. The
        jobs of the tasks queued, for the runner to send."""
        hold = None
        if asks:
            questions = list(answer.open_questions)
            if answer.confidence < threshold:
                questions.append(
                    f"The {self.agent_type.value} is {answer.confidence:.0%} sure of this answer (the project asks "
                    f"for {threshold:.0%}). Approve it, reject it with a comment to have it redone, or amend it."
                )
            hold = HumanHold(
                kind=HitlKind.LOW_CONFIDENCE,
                question="\n".join(questions),
                artifact_ids=tuple(artifact_ids),
                actor=f"agent:{self.agent_type.value}",
                chat_questions=tuple(answer.open_questions),
            )
        outcome = AttemptOutcome(
            agent_state=AgentState.WAITING_FOR_HITL if asks or disputes else AgentState.IDLE,
            hold=hold,
            answer=answer,
            dispute=disputes,
        )
        _, follow_ups = await on_attempt_outcome(session, self.runtime.settings, finished, outcome, then_commit=True)
        # Queued in this transaction; the runner sends their jobs after the commit.
        jobs = await services(session).tasks.queue_new(follow_ups)
        await session.commit()
        return jobs

    async def _park(self, session: Any, outcome: AttemptOutcome, output: dict[str, Any]) -> None:
        """Stop the attempt on a question for a human, in one transaction with its request."""
        task = await services(session).tasks.complete(
            self.lease, output, status=TaskStatus.WAITING_FOR_HITL, commit=False
        )
        if task is None:
            await session.rollback()
            return
        await on_attempt_outcome(session, self.runtime.settings, task, outcome)
        await session.commit()
