"""The operator surface the deployable lifecycles share (MCP servers, teams): message handlers, the
gate wait, long steps that a redeploy supersedes, failures, commands and manual transitions.

`OperatedWorkflow` is a base class, not a workflow. Each lifecycle subclasses it and declares its own
`@workflow.defn`, `@workflow.init` (which calls `_init_operations`), `run`, `get_status`,
`_refusal_for` (which commands its machine allows when), `_execute` (what an accepted command does)
and `_carry_over`. Temporal collects inherited handlers (`workflow.defn` walks the class's members),
so every lifecycle answers the same signal, update and query names, which control/client.py and
`temporal workflow signal` rely on. (Longer than most modules because it is the whole shared surface:
splitting handlers from the steps they queue would only scatter one contract over two files.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from state.commands import (
        ApprovalDecision,
        CommandResult,
        DependencyChange,
        ManualTransition,
        OperatorCommand,
        RequirementUpdate,
    )
    from state.errors import FailureType
    from state.machines import ResourceState
    from state.models import CommandRequest, LifecyclePolicy, ResourceRow, TransitionView
    from state.runtime_models import KubernetesFailure

from workflows.gates import APPROVAL, Gates, manual_record_refusal
from workflows.lifecycle import SYSTEM_ACTOR, Lifecycle

S = ResourceState
ModelT = TypeVar("ModelT", bound=BaseModel)
DeploymentT = TypeVar("DeploymentT", bound=BaseModel)

# Permanent failures of every runtime: retrying cannot help, a person (or a rollback) must act.
PERMANENT = [*FailureType.NON_RETRYABLE, *KubernetesFailure.NON_RETRYABLE]
BUILD_RETRY = RetryPolicy(maximum_attempts=3, non_retryable_error_types=PERMANENT)
STEP_RETRY = RetryPolicy(
    maximum_attempts=5,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=PERMANENT,
)
PATCH_ARCHIVE_CHECKS_DEPENDENTS = "archive-refused-while-dependents-active"
# A command whose step fails (stopping the runtime for deactivate or archive) is answered as failed
# and the lifecycle stays where it was, instead of the whole workflow failing with no state recorded.
PATCH_COMMAND_STEP_FAILURE_ANSWERED = "command-step-failure-answered"
# `activate` records the operator who asked on the row it starts (inactive -> deploying), not `rsm`.
PATCH_ACTIVATE_RECORDS_OPERATOR = "activate-records-its-operator"
MAX_REFUSALS = 10
# States an operator may record by hand: resting states that need no step of the lifecycle.
MANUAL_TARGETS = frozenset({S.ACTIVE, S.INACTIVE, S.FAILED})
# States a lifecycle that finds its resource already in the database adopts as they are; any other
# (a step was in flight when the earlier lifecycle ended) is marked failed.
_ADOPTABLE = frozenset({S.ACTIVE, S.INACTIVE, S.ARCHIVED, S.REGISTERED, S.FAILED})


@dataclass
class QueuedCommand:
    command: OperatorCommand | ManualTransition
    outcome: CommandResult | None = None


class StepFailed(Exception):
    """A step ended in a permanent failure; carries what `failed` records."""

    def __init__(self, reason: str, details: dict[str, object]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


class Superseded(Exception):
    """A redeploy arrived while a step ran; the step was cancelled."""


def step_failure(err: ActivityError, step: str) -> StepFailed:
    cause = err.cause
    if (
        isinstance(cause, ApplicationError)
        and cause.type == "NotFoundError"
        and "is not registered on this worker" in cause.message
    ):
        # The SDK's answer lists every activity the worker has; what the operator needs is which
        # kind of worker is missing.
        hint = (
            ": start a worker with RSM_KUBERNETES_ENABLED=true (and its KUBECONFIG), or register"
            " the resource for the docker runtime"
            if step.startswith("kubernetes_")
            else ""
        )
        return StepFailed(
            f"no worker on task queue {workflow.info().task_queue} runs {step}{hint}",
            {"step": step, "error_type": "ActivityNotRegistered", "worker_said": cause.message},
        )
    if isinstance(cause, ApplicationError):
        details = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
        return StepFailed(cause.message, {"step": step, "error_type": cause.type, **details})
    # Timeouts and exhausted retries of temporary errors.
    message = str(cause) if cause is not None else str(err)
    return StepFailed(f"{step} did not complete: {message}", {"step": step})


def legacy_command(name: str, request: CommandRequest) -> OperatorCommand:
    return OperatorCommand.model_validate(
        {"command": name, "actor": request.actor, "reason": request.reason}
    )


class OperatedWorkflow(Generic[DeploymentT]):
    # Commands answered as they start; the others once their transition is recorded, so the caller
    # can read the result the moment the update returns.
    LONG_COMMANDS: frozenset[str] = frozenset({"activate", "redeploy"})

    _life: Lifecycle
    _gates: Gates
    _policy: LifecyclePolicy
    _deployment: DeploymentT | None
    _last_good: DeploymentT | None

    def _init_operations(
        self,
        life: Lifecycle,
        gates: Gates,
        policy: LifecyclePolicy,
        deployment: DeploymentT | None,
        last_good: DeploymentT | None,
    ) -> None:
        self._life = life
        self._gates = gates
        self._policy = policy
        self._deployment = deployment
        self._last_good = last_good
        self._failure_reason: str | None = None
        self._commands: list[QueuedCommand] = []
        self._outbox: list[RequirementUpdate] = []
        self._refusals: list[str] = []
        self._busy = False  # a step is running: manual transitions wait for rest

    # -- what each lifecycle supplies -----------------------------------------------------------

    def _refusal_for(self, command: OperatorCommand) -> str | None:
        """Why `command` cannot run in the current state (checked again when it is taken)."""
        raise NotImplementedError

    async def _execute(self, command: OperatorCommand) -> None:
        """Carry out an accepted command."""
        raise NotImplementedError

    async def _gate_wait(self) -> None:
        """Called each time the gate wait is about to sleep (teams move between `deployed` and
        `awaiting_dependencies` here)."""

    def _activation(self) -> tuple[str, str]:
        """Actor and reason of the move to `active` when the gates open."""
        approval = self._gates.approval
        if approval is not None and self._policy.approval.required:
            return approval.approver, approval.reason or f"approved by {approval.approver}"
        return SYSTEM_ACTOR, "healthy"

    # -- queries --------------------------------------------------------------------------------

    @workflow.query
    def get_transitions(self) -> list[TransitionView]:
        return list(self._life.recent)

    @workflow.query
    def get_blocked_on(self) -> list[str]:
        return self._gates.blocked_on()

    # -- gate messages (kept until the gate is reached, so an early one is never lost) ----------

    def _refuse(self, message: str) -> None:
        workflow.logger.warning("refused: %s", message)
        self._refusals = [*self._refusals, message][-MAX_REFUSALS:]

    def _decide(self, decision: ApprovalDecision, approve: bool) -> None:
        if approve:
            self._gates.approve(decision)
        else:
            self._gates.reject(decision)
        # Mirrored as the `approval` requirement row, so the awaiting-action view shows the gate.
        self._outbox.append(
            RequirementUpdate(
                name=APPROVAL,
                requirement_type="approval",
                status="satisfied" if approve else "failed",
                actor=decision.approver,
                reason=decision.reason,
            )
        )

    @workflow.signal
    def approve(self, decision: ApprovalDecision) -> None:
        if (why := self._gates.refuse_approval(decision)) is not None:
            self._refuse(why)
        else:
            self._decide(decision, approve=True)

    @workflow.signal
    def reject(self, decision: ApprovalDecision) -> None:
        if (why := self._gates.refuse_approval(decision)) is not None:
            self._refuse(why)
        else:
            self._decide(decision, approve=False)

    @workflow.update
    def decide(self, decision: ApprovalDecision, approve: bool) -> CommandResult:
        self._decide(decision, approve)
        verb = "approved" if approve else "rejected"
        return CommandResult(
            accepted=True, state=self._life.state, message=f"{verb} by {decision.approver}"
        )

    @decide.validator
    def _validate_decide(self, decision: ApprovalDecision, approve: bool) -> None:
        if (why := self._gates.refuse_approval(decision)) is not None:
            raise ValueError(why)

    @workflow.signal
    def requirement_updated(self, update: RequirementUpdate) -> None:
        if self._gates.update_requirement(update):
            # The gate keeps the requirement's own type (a CLI `satisfy` says `other`): mirror that
            # row, not a second one of another type.
            self._outbox.append(self._gates.requirements[update.name])

    @workflow.signal
    def dependency_changed(self, change: DependencyChange) -> None:
        # The main loop and the gate wait watch `_gates.version`; an unknown dependency is ignored.
        self._gates.dependency_changed(change)

    # -- operator commands: signals (fire and forget) and updates (an answer at once) ----------

    @workflow.signal
    def retry(self, request: CommandRequest) -> None:
        self._commands.append(QueuedCommand(legacy_command("retry", request)))

    @workflow.signal
    def deactivate(self, request: CommandRequest) -> None:
        self._commands.append(QueuedCommand(legacy_command("deactivate", request)))

    @workflow.signal
    def activate(self, request: CommandRequest) -> None:
        self._commands.append(QueuedCommand(legacy_command("activate", request)))

    @workflow.signal
    def archive(self, request: CommandRequest) -> None:
        self._commands.append(QueuedCommand(legacy_command("archive", request)))

    @workflow.signal
    def redeploy(self, command: OperatorCommand) -> None:
        self._commands.append(QueuedCommand(command.model_copy(update={"command": "redeploy"})))

    @workflow.signal
    def scale(self, command: OperatorCommand) -> None:
        self._commands.append(QueuedCommand(command.model_copy(update={"command": "scale"})))

    @workflow.update
    async def command(self, command: OperatorCommand) -> CommandResult:
        queued = QueuedCommand(command)
        self._commands.append(queued)
        # Safe to wait: the main loop takes commands in order and answers each before acting on it.
        await workflow.wait_condition(lambda: queued.outcome is not None)
        assert queued.outcome is not None
        return queued.outcome

    @command.validator
    def _validate_command(self, command: OperatorCommand) -> None:
        if (why := self._refusal_for(command)) is not None:
            raise ValueError(why)

    @workflow.update
    async def transition(self, request: ManualTransition) -> CommandResult:
        queued = QueuedCommand(request)
        self._commands.append(queued)
        await workflow.wait_condition(lambda: queued.outcome is not None)
        assert queued.outcome is not None
        return queued.outcome

    @transition.validator
    def _validate_transition(self, request: ManualTransition) -> None:
        if self._busy:
            raise ValueError(f"a step is running ({self._life.state}); try again when it rests")
        if (why := self._manual_refusal(request.to_state)) is not None:
            raise ValueError(why)
        # Checked here only (validators do not run on replay, so older histories stay valid).
        why = manual_record_refusal(
            self._life.state,
            request.to_state,
            self._gates.blocked_on(),
            ("the runtime serving", "stops it", "nothing running", "starts it again"),
        )
        if why is not None:
            raise ValueError(why)

    def _manual_refusal(self, to_state: ResourceState) -> str | None:
        if not self._life.can_move(to_state):
            return self._illegal(to_state)
        if to_state not in MANUAL_TARGETS:
            # Recording `building` by hand would leave the resource there with nothing building.
            return (
                f"{to_state} is a step the lifecycle runs itself: use a command (retry, redeploy,"
                f" activate, deactivate, archive); by hand only {', '.join(sorted(MANUAL_TARGETS))}"
            )
        return None

    def _illegal(self, to_state: ResourceState) -> str:
        kind = self._life.ref.resource_type.value
        return f"illegal transition {self._life.state} -> {to_state} for {kind}"

    # -- shared steps ---------------------------------------------------------------------------

    async def _begin(self, row: ResourceRow) -> None:
        """After registration: mirror the requirements, then start or adopt the recorded state."""
        for requirement in self._gates.requirements.values():
            self._outbox.append(requirement)
        if self._policy.approval.required:
            self._outbox.append(
                RequirementUpdate(name=APPROVAL, requirement_type="approval", status="pending")
            )
        await self._flush_requirements()
        if row.current_state is S.CREATED:
            await self._life.move(S.REGISTERED, "lifecycle started", actor=self._policy.actor)
            return
        # The database already knows this resource (an earlier lifecycle was terminated): adopt its
        # state instead of pretending to start over; a step that was in flight is marked failed.
        if row.current_state not in _ADOPTABLE:
            self._failure_reason = (
                f"lifecycle restarted while {row.current_state}; retry to continue"
            )
            if self._life.can_move(S.FAILED):
                await self._life.move(S.FAILED, self._failure_reason)

    async def _flush_requirements(self) -> None:
        """Mirror requirement changes into deployment_requirements (for the awaiting-action view)."""
        while self._outbox:
            update = self._outbox.pop(0)
            await self._life.record_requirement(
                update.name,
                update.requirement_type,
                update.status,
                {**update.details, "actor": update.actor, "reason": update.reason},
            )

    async def _rest(self, also: Callable[[], bool] | None = None) -> None:
        """Wait for a command, a requirement to mirror or `also()`; continue as new when Temporal
        suggests it and nothing is pending."""
        woken = also or (lambda: False)
        await workflow.wait_condition(
            lambda: (
                bool(self._commands)
                or bool(self._outbox)
                or woken()
                or workflow.info().is_continue_as_new_suggested()
            )
        )
        if not self._commands and not self._outbox and not woken():
            await workflow.wait_condition(workflow.all_handlers_finished)
            await self._life.drain_webhooks()
            workflow.continue_as_new(self._carry_over())

    def _carry_over(self) -> BaseModel:
        raise NotImplementedError

    async def _await_gates(self) -> None:
        """Rest at the gate until every requirement is satisfied, the approval is given and every
        dependency is active; or a requirement fails, the approval is rejected, the deadline
        passes, or a command arrives (the main loop handles it and comes back)."""
        approval_policy = self._policy.approval
        reached = workflow.now()
        while True:
            blocked = self._gates.blocked_on()
            if blocked != self._life.blocked_on:
                self._life.blocked_on = blocked
                self._life.upsert_search_attributes()
            if (failed := self._gates.failed_requirement()) is not None:
                reason = f"requirement {failed.requirement_type}:{failed.name} failed"
                await self._fail(
                    reason + (f": {failed.reason}" if failed.reason else ""),
                    {"requirement": failed.name},
                    actor=failed.actor,
                )
                return
            if (rejection := self._gates.rejection) is not None:
                await self._fail(
                    f"rejected by {rejection.approver}: {rejection.reason}",
                    {"approver": rejection.approver},
                    actor=rejection.approver,
                )
                return
            if not blocked:
                await self._activate_now()
                return
            await self._gate_wait()
            if self._commands or self._outbox:
                return
            seen = self._gates.version
            timeout = None
            if approval_policy.deadline is not None and self._gates.approval is None:
                timeout = max(approval_policy.deadline - (workflow.now() - reached), timedelta(0))
            try:
                await workflow.wait_condition(
                    lambda seen=seen: (  # type: ignore[misc]
                        self._gates.version != seen or bool(self._commands) or bool(self._outbox)
                    ),
                    timeout=timeout,
                )
            except TimeoutError:
                if approval_policy.on_deadline == "approve":
                    self._gates.approve(
                        ApprovalDecision(
                            approver=SYSTEM_ACTOR,
                            reason=f"no decision within {approval_policy.deadline}: approved by policy",
                        )
                    )
                else:
                    await self._fail(
                        f"no approval within {approval_policy.deadline}",
                        {"deadline_seconds": approval_policy.deadline.total_seconds()},  # type: ignore[union-attr]
                    )
                    return

    async def _activate_now(self) -> None:
        actor, reason = self._activation()
        self._life.blocked_on = []
        await self._life.move(S.ACTIVE, reason, actor=actor)
        if self._deployment is not None:
            self._last_good = self._deployment

    async def _fail(
        self, reason: str, details: dict[str, object], actor: str | None = None
    ) -> None:
        self._failure_reason = reason
        await self._life.move(S.FAILED, reason, metadata=details, actor=actor)

    async def _guarded(
        self, work: Awaitable[None], superseded: str, failed_prefix: str = ""
    ) -> StepFailed | None:
        """Run steps as the resource's one running step: a permanent failure records `failed` and
        is returned (a redeploy then rolls back); a redeploy that cancels them records why."""
        self._busy = True
        try:
            await work
        except StepFailed as failed:
            await self._fail(failed_prefix + failed.reason, failed.details)
            return failed
        except Superseded:
            await self._fail(superseded, {})
        finally:
            self._busy = False
        return None

    def _new_version_needs_approval(self) -> None:
        if self._policy.approval.required:
            self._gates.reset_approval()
            self._outbox.append(
                RequirementUpdate(name=APPROVAL, requirement_type="approval", status="pending")
            )

    async def _step(
        self,
        name: str,
        arg: BaseModel,
        result_type: type[ModelT],
        *,
        timeout: timedelta,
        heartbeat: timedelta,
        retry: RetryPolicy,
    ) -> ModelT:
        """Run one long activity; a redeploy that arrives meanwhile cancels it (Superseded)."""
        handle = workflow.start_activity(
            name,
            arg,
            result_type=result_type,
            start_to_close_timeout=timeout,
            heartbeat_timeout=heartbeat,
            retry_policy=retry,
        )
        await workflow.wait_condition(lambda: handle.done() or self._redeploy_pending())
        if not handle.done():
            handle.cancel()
            try:
                await handle
            except (ActivityError, asyncio.CancelledError):
                pass
            raise Superseded()
        try:
            return await handle
        except ActivityError as err:
            raise step_failure(err, name) from err

    def _redeploy_pending(self) -> bool:
        return any(
            isinstance(c.command, OperatorCommand) and c.command.command == "redeploy"
            for c in self._commands
        )

    # -- commands ------------------------------------------------------------------------------

    async def _run_command(self, queued: QueuedCommand) -> None:
        command = queued.command
        if isinstance(command, ManualTransition):
            await self._manual_transition(queued, command)
            return
        if (why := self._refusal_for(command)) is not None:
            queued.outcome = CommandResult(accepted=False, state=self._life.state, message=why)
            self._refuse(f"{command.command} from {command.actor}: {why}")
            return
        if command.command == "archive" and workflow.patched(PATCH_ARCHIVE_CHECKS_DEPENDENTS):
            active = await self._life.list_dependents(S.ACTIVE)
            if active:
                names = ", ".join(d.workflow_id for d in active)
                why = f"cannot archive: active dependents {names}"
                queued.outcome = CommandResult(accepted=False, state=self._life.state, message=why)
                self._refuse(f"archive from {command.actor}: {why}")
                return
        long_running = command.command in self.LONG_COMMANDS
        if long_running:
            queued.outcome = CommandResult(
                accepted=True, state=self._life.state, message=f"{command.command} started"
            )
        try:
            await self._execute(command)
        except ActivityError as err:
            if not workflow.patched(PATCH_COMMAND_STEP_FAILURE_ANSWERED):
                raise
            failed = step_failure(err, err.activity_type or "a step")
            if (
                command.command == "archive"
                and self._deployment is None
                and failed.details.get("error_type") == "ActivityNotRegistered"
            ):
                # Nothing was ever deployed (e.g. Kubernetes asked of a worker without it): there
                # is nothing to stop, and refusing would leave the resource with no way out.
                await self._life.move(
                    S.ARCHIVED,
                    command.reason or f"archived; nothing was deployed ({failed.reason})",
                    actor=command.actor,
                )
                queued.outcome = CommandResult(
                    accepted=True, state=self._life.state, message="archive done"
                )
                return
            why = f"{command.command} failed: {failed.reason}"
            self._refuse(f"{command.command} from {command.actor}: {why}")
            if not long_running:
                queued.outcome = CommandResult(accepted=False, state=self._life.state, message=why)
            return
        if not long_running:
            queued.outcome = CommandResult(
                accepted=True, state=self._life.state, message=f"{command.command} done"
            )

    async def _manual_transition(self, queued: QueuedCommand, request: ManualTransition) -> None:
        if (why := self._manual_refusal(request.to_state)) is not None:
            queued.outcome = CommandResult(accepted=False, state=self._life.state, message=why)
            return
        # Answered once recorded, like the quick commands: the caller may read the row at once.
        await self._life.move(
            request.to_state, request.reason, actor=request.actor, metadata={"manual": True}
        )
        queued.outcome = CommandResult(accepted=True, state=request.to_state, message="recorded")
