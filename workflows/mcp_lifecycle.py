"""McpLifecycleWorkflow: one MCP server from its source directory to `active`, and its actor afterwards.

created -> registered -> building -> built -> deploying -> deployed -> health_checking -> available
-> (gates: requirements, approval) -> active. A failed step records `failed` with the reason a person
can act on and waits for `retry`, `redeploy` or `archive`; a failed redeploy rolls back to the last
known good version by itself. While active the workflow is the resource's actor: `deactivate`,
`activate`, `redeploy`, `archive`, manual transitions.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

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
        RequirementRecord,
        RequirementUpdate,
    )
    from state.errors import FailureType
    from state.machines import ResourceState
    from state.models import (
        BuildImageRequest,
        BuildImageResult,
        CommandRequest,
        DeploymentInfo,
        DeployRequest,
        HealthCheckRequest,
        LifecycleResult,
        LifecycleStatus,
        McpHealthResult,
        McpLifecycleInput,
        McpRegistryEntry,
        McpServerSpec,
        StopRuntimeRequest,
        TransitionView,
    )
    from state.runtime_models import (
        KubernetesActivity,
        KubernetesApplyResult,
        KubernetesDeployRequest,
        KubernetesFailure,
        RolloutStatus,
        RolloutWaitRequest,
    )

from workflows.gates import APPROVAL, Gates
from workflows.lifecycle import STORE_RETRY, STORE_TIMEOUT, SYSTEM_ACTOR, Lifecycle

S = ResourceState
ModelT = TypeVar("ModelT", bound=BaseModel)

# Permanent failures of every runtime: retrying cannot help, a person (or a rollback) must act.
PERMANENT = [*FailureType.NON_RETRYABLE, *KubernetesFailure.NON_RETRYABLE]
BUILD_RETRY = RetryPolicy(maximum_attempts=3, non_retryable_error_types=PERMANENT)
STEP_RETRY = RetryPolicy(
    maximum_attempts=5,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=PERMANENT,
)
PATCH_ARCHIVE_CHECKS_DEPENDENTS = "archive-refused-while-dependents-active"
MAX_REFUSALS = 10


@dataclass
class _Command:
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


def _failure(err: ActivityError, step: str) -> StepFailed:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        details = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
        return StepFailed(cause.message, {"step": step, "error_type": cause.type, **details})
    # Timeouts and exhausted retries of temporary errors.
    message = str(cause) if cause is not None else str(err)
    return StepFailed(f"{step} did not complete: {message}", {"step": step})


def _legacy_command(name: str, request: CommandRequest) -> OperatorCommand:
    return OperatorCommand.model_validate(
        {"command": name, "actor": request.actor, "reason": request.reason}
    )


@workflow.defn
class McpLifecycleWorkflow:
    @workflow.init
    def __init__(self, input: McpLifecycleInput) -> None:
        self._input = input
        self._spec: McpServerSpec = input.spec
        self._life = Lifecycle(
            input.ref,
            owner_team=input.owner_team,
            state=input.resume_state or S.CREATED,
            seq=input.transition_seq,
            registrant=input.policy.actor,
            drift_retry=input.policy.schema_drift_retry,
        )
        self._gates = Gates(
            input.policy.approval, input.policy.actor, input.policy.requirements, []
        )
        for name, status in input.requirement_statuses.items():
            self._gates.update_requirement(RequirementUpdate(name=name, status=status))
        self._deployment: DeploymentInfo | None = input.deployment
        self._last_good: DeploymentInfo | None = input.last_good
        self._bad_versions: set[str] = set(input.bad_versions)
        self._failure_reason: str | None = None
        self._commands: list[_Command] = []
        self._outbox: list[RequirementUpdate] = []
        self._refusals: list[str] = []
        self._busy = False  # a step is running: manual transitions wait for rest

    # -- queries -------------------------------------------------------------------------------

    @workflow.query
    def get_status(self) -> LifecycleStatus:
        return LifecycleStatus(
            ref=self._input.ref,
            state=self._life.state,
            blocked_on=self._life.blocked_on
            if self._life.schema_error
            else self._gates.blocked_on(),
            schema_error=self._life.schema_error,
            failure_reason=self._failure_reason,
            deployment=self._deployment,
            version=self._spec.version,
            last_good_version=self._last_good.version if self._last_good else None,
            bad_versions=sorted(self._bad_versions),
            approved_by=self._gates.approval.approver if self._gates.approval else None,
            refusals=list(self._refusals),
        )

    @workflow.query
    def get_transitions(self) -> list[TransitionView]:
        return list(self._life.recent)

    @workflow.query
    def get_blocked_on(self) -> list[str]:
        return self._gates.blocked_on()

    # -- gate messages (kept until the gate is reached, so an early one is never lost) ---------

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
            self._outbox.append(update)

    @workflow.signal
    def dependency_changed(self, change: DependencyChange) -> None:
        self._gates.dependency_changed(change)  # an MCP server depends on nothing yet

    # -- operator commands: signals (fire and forget) and updates (an answer at once) ---------

    @workflow.signal
    def retry(self, request: CommandRequest) -> None:
        self._commands.append(_Command(_legacy_command("retry", request)))

    @workflow.signal
    def deactivate(self, request: CommandRequest) -> None:
        self._commands.append(_Command(_legacy_command("deactivate", request)))

    @workflow.signal
    def activate(self, request: CommandRequest) -> None:
        self._commands.append(_Command(_legacy_command("activate", request)))

    @workflow.signal
    def archive(self, request: CommandRequest) -> None:
        self._commands.append(_Command(_legacy_command("archive", request)))

    @workflow.signal
    def redeploy(self, command: OperatorCommand) -> None:
        self._commands.append(_Command(command.model_copy(update={"command": "redeploy"})))

    @workflow.signal
    def scale(self, command: OperatorCommand) -> None:
        self._commands.append(_Command(command.model_copy(update={"command": "scale"})))

    @workflow.update
    async def command(self, command: OperatorCommand) -> CommandResult:
        queued = _Command(command)
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
        queued = _Command(request)
        self._commands.append(queued)
        await workflow.wait_condition(lambda: queued.outcome is not None)
        assert queued.outcome is not None
        return queued.outcome

    @transition.validator
    def _validate_transition(self, request: ManualTransition) -> None:
        if self._busy:
            raise ValueError(f"a step is running ({self._life.state}); try again when it rests")
        if not self._life.can_move(request.to_state):
            raise ValueError(
                f"illegal transition {self._life.state} -> {request.to_state} for mcp_server"
            )

    def _refusal_for(self, command: OperatorCommand) -> str | None:
        """Why `command` cannot run in the current state (checked again when it is taken)."""
        state = self._life.state
        name = command.command
        if name == "retry" and state is not S.FAILED:
            return f"retry needs a failed resource; this one is {state}"
        if name == "deactivate" and state not in {S.ACTIVE, S.AVAILABLE}:
            return f"only an active resource can be deactivated; this one is {state}"
        if name == "activate" and (state is not S.INACTIVE or self._deployment is None):
            return f"only an inactive, once deployed resource can be activated; this one is {state}"
        if name == "archive" and not self._life.can_move(S.ARCHIVED):
            return f"cannot archive while {state}: wait until it rests"
        if name == "scale":
            return "the local Docker runtime runs one instance of an MCP server: scale is not supported"
        if name == "redeploy":
            if not command.context_path or not command.version:
                return "redeploy needs the new source (context_path) and its version"
            if command.version in self._bad_versions:
                return f"version {command.version} failed before; give a newer one"
            if state not in {S.ACTIVE, S.FAILED, S.REGISTERED} and not self._busy:
                return f"cannot redeploy while {state}"
        return None

    # -- main loop -----------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: McpLifecycleInput) -> LifecycleResult:
        if input.resume_state is None:
            await self._start()
        while self._life.state is not S.ARCHIVED:
            await self._flush_requirements()
            if self._commands:
                await self._run_command(self._commands.pop(0))
            elif self._life.state is S.REGISTERED:
                await self._provision()
            elif self._life.state is S.AVAILABLE:
                await self._await_gates()
            else:
                await workflow.wait_condition(
                    lambda: (
                        bool(self._commands)
                        or bool(self._outbox)
                        or workflow.info().is_continue_as_new_suggested()
                    )
                )
                if not self._commands and not self._outbox:
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    await self._life.drain_webhooks()
                    workflow.continue_as_new(self._carry_over())
        # An update that archived the resource is still waiting for its answer: let it finish.
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._life.drain_webhooks()
        return LifecycleResult(
            ref=input.ref, final_state=self._life.state, transitions=self._life.seq
        )

    def _carry_over(self) -> McpLifecycleInput:
        return self._input.model_copy(
            update={
                "spec": self._spec,
                "transition_seq": self._life.seq,
                "resume_state": self._life.state,
                "deployment": self._deployment,
                "last_good": self._last_good,
                "bad_versions": sorted(self._bad_versions),
                "requirement_statuses": {n: r.status for n, r in self._gates.requirements.items()},
            }
        )

    async def _start(self) -> None:
        spec = self._spec
        row = await self._life.register(self._input.name, spec.version, spec.model_dump())
        for requirement in self._gates.requirements.values():
            self._outbox.append(requirement)
        if self._input.policy.approval.required:
            self._outbox.append(
                RequirementUpdate(name=APPROVAL, requirement_type="approval", status="pending")
            )
        await self._flush_requirements()
        if row.current_state is S.CREATED:
            await self._life.move(S.REGISTERED, "lifecycle started", actor=self._input.policy.actor)
            return
        # The database already knows this resource (an earlier lifecycle was terminated): adopt its
        # state instead of pretending to start over; a step that was in flight is marked failed.
        if row.current_state not in {S.ACTIVE, S.INACTIVE, S.ARCHIVED, S.REGISTERED, S.FAILED}:
            self._failure_reason = (
                f"lifecycle restarted while {row.current_state}; retry to continue"
            )
            if self._life.can_move(S.FAILED):
                await self._life.move(S.FAILED, self._failure_reason)

    async def _flush_requirements(self) -> None:
        """Mirror requirement changes into deployment_requirements (for the awaiting-action view)."""
        while self._outbox:
            update = self._outbox.pop(0)
            await workflow.execute_activity(
                "record_requirement",
                RequirementRecord(
                    resource_id=self._input.ref.resource_id,
                    name=update.name,
                    requirement_type=update.requirement_type,
                    status=update.status,
                    details={"actor": update.actor, "reason": update.reason},
                ),
                result_type=RequirementRecord,
                start_to_close_timeout=STORE_TIMEOUT,
                retry_policy=STORE_RETRY,
            )

    # -- provisioning --------------------------------------------------------------------------

    async def _provision(self, actor: str | None = None, reason: str | None = None) -> None:
        """registered|failed|active -> building -> ... -> available, or -> failed with the reason
        (and then back to the last known good version if this was a redeploy)."""
        spec = self._spec
        self._busy = True
        try:
            await self._life.move(
                S.BUILDING,
                reason or f"building version {spec.version} from {spec.context_path}",
                actor=actor,
            )
            build = await self._step(
                "build_image",
                BuildImageRequest(
                    resource_id=self._input.ref.resource_id,
                    name=self._input.name,
                    version=spec.version,
                    context_path=spec.context_path,
                    dockerfile=spec.dockerfile,
                    build_args=spec.build_args,
                ),
                BuildImageResult,
                timeout=self._input.policy.build_timeout,
                heartbeat=self._input.policy.step_heartbeat_timeout,
                retry=BUILD_RETRY,
            )
            await self._life.move(
                S.BUILT,
                f"built {build.image}",
                metadata={
                    "image": build.image,
                    "image_id": build.image_id,
                    "duration_seconds": build.duration_seconds,
                },
                mcp_registry=McpRegistryEntry(image=build.image),
            )
            await self._deploy_and_check(build.image, spec.version)
        except StepFailed as failed:
            await self._fail(failed.reason, failed.details)
            await self._roll_back_after(spec.version, failed.reason)
        except Superseded:
            await self._fail(
                f"version {spec.version} superseded by a redeploy", {"version": spec.version}
            )
        finally:
            self._busy = False

    async def _deploy_and_check(
        self,
        image: str,
        version: str,
        *,
        deploying_reason: str | None = None,
        available_reason: str | None = None,
    ) -> None:
        """deploying -> deployed -> health_checking -> available. Without a deploying_reason the
        resource is in `deploying` already (a rollback entered it with its own reason)."""
        spec = self._spec
        if deploying_reason is None:
            where = "Kubernetes" if spec.runtime == "kubernetes" else "the local Docker runtime"
            deploying_reason = f"deploying {image} on {where}"
            await self._life.move(S.DEPLOYING, deploying_reason)
        request = DeployRequest(
            resource_id=self._input.ref.resource_id,
            name=self._input.name,
            version=version,
            image=image,
            mcp_path=spec.mcp_path,
        )
        if spec.runtime == "kubernetes":
            deployment = await self._deploy_on_kubernetes(request)
        else:
            deployment = await self._step(
                "deploy",
                request,
                DeploymentInfo,
                timeout=self._input.policy.deploy_timeout,
                heartbeat=self._input.policy.step_heartbeat_timeout,
                retry=STEP_RETRY,
            )
        self._deployment = deployment
        await self._life.move(
            S.DEPLOYED,
            f"running at {deployment.endpoint}",
            metadata=deployment.model_dump(),
            mcp_registry=McpRegistryEntry(
                image=image,
                runtime=deployment.runtime,
                runtime_ref=deployment.runtime_ref,
                endpoint=deployment.endpoint,
            ),
        )
        await self._life.move(S.HEALTH_CHECKING, f"MCP handshake with {deployment.endpoint}")
        deadline = self._input.policy.health_deadline
        health = await self._step(
            "health_check",
            HealthCheckRequest(
                resource_id=self._input.ref.resource_id,
                endpoint=deployment.endpoint,
                deadline_seconds=deadline.total_seconds(),
            ),
            McpHealthResult,
            timeout=deadline + timedelta(seconds=30),
            heartbeat=timedelta(seconds=20),
            retry=STEP_RETRY,
        )
        await self._life.move(
            S.AVAILABLE,
            available_reason or f"{health.server_name} answers with {len(health.tools)} tools",
            metadata=health.model_dump(),
            mcp_registry=McpRegistryEntry(
                server_name=health.server_name,
                protocol_version=health.protocol_version,
                tools=health.tools,
                healthy=True,
            ),
        )
        self._failure_reason = None

    async def _deploy_on_kubernetes(self, request: DeployRequest) -> DeploymentInfo:
        """Server-side apply, then wait for the rollout's truth (the controller observed this
        generation and every replica count matches). A rollback re-applies the good image, which
        renders the same pod template as before."""
        applied = await self._step(
            KubernetesActivity.APPLY,
            KubernetesDeployRequest(**request.model_dump()),
            KubernetesApplyResult,
            timeout=timedelta(minutes=1),
            heartbeat=self._input.policy.step_heartbeat_timeout,
            retry=STEP_RETRY,
        )
        deploy_timeout = self._input.policy.deploy_timeout
        await self._step(
            KubernetesActivity.WAIT_ROLLOUT,
            RolloutWaitRequest(
                resource_id=request.resource_id,
                min_generation=applied.generation,
                timeout_seconds=deploy_timeout.total_seconds(),
            ),
            RolloutStatus,
            timeout=deploy_timeout + timedelta(seconds=30),
            heartbeat=max(self._input.policy.step_heartbeat_timeout, timedelta(seconds=30)),
            retry=STEP_RETRY,
        )
        return applied.deployment

    async def _await_gates(self) -> None:
        """Rest at `available` until every requirement is satisfied and the approval is given, a
        requirement fails, the approval is rejected, the deadline passes, or a command arrives."""
        approval_policy = self._input.policy.approval
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
            if self._commands or self._outbox:
                return  # the main loop handles them and comes back here
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
        approval = self._gates.approval
        if approval is not None and self._input.policy.approval.required:
            actor, reason = approval.approver, approval.reason or f"approved by {approval.approver}"
        else:
            actor, reason = SYSTEM_ACTOR, "healthy"
        self._life.blocked_on = []
        await self._life.move(S.ACTIVE, reason, actor=actor)
        if self._deployment is not None:
            self._last_good = self._deployment

    async def _fail(
        self, reason: str, details: dict[str, object], actor: str | None = None
    ) -> None:
        self._failure_reason = reason
        await self._life.move(S.FAILED, reason, metadata=details, actor=actor)

    async def _roll_back_after(self, bad_version: str, why: str) -> None:
        """A redeploy failed: mark the version bad and return to the last known good one, which
        passed its gates already."""
        good = self._last_good
        if good is None or good.version == bad_version:
            return
        self._bad_versions.add(bad_version)
        self._gates.waive_gates()
        self._spec = self._spec.model_copy(update={"version": good.version})
        self._busy = True
        try:
            await self._life.move(
                S.DEPLOYING,
                f"rolling back to version {good.version} after version {bad_version} failed: {why}",
                metadata={"rollback_to": good.version, "bad_version": bad_version},
            )
            await self._deploy_and_check(
                good.image,
                good.version,
                deploying_reason="rollback",
                available_reason=f"rolled back to version {good.version}",
            )
        except StepFailed as failed:
            await self._fail(f"rollback to {good.version} failed: {failed.reason}", failed.details)
        except Superseded:
            await self._fail(f"rollback to {good.version} superseded by a redeploy", {})
        finally:
            self._busy = False

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
            raise _failure(err, name) from err

    def _redeploy_pending(self) -> bool:
        return any(
            isinstance(c.command, OperatorCommand) and c.command.command == "redeploy"
            for c in self._commands
        )

    async def _stop_runtime(self, archive: bool = False) -> None:
        name = "stop_runtime"
        if self._spec.runtime == "kubernetes":
            # Deactivate scales to zero (the objects stay for activate); archive deletes them.
            name = KubernetesActivity.DELETE if archive else KubernetesActivity.DEACTIVATE
        await workflow.execute_activity(
            name,
            StopRuntimeRequest(resource_id=self._input.ref.resource_id),
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=STEP_RETRY,
        )

    # -- commands ------------------------------------------------------------------------------

    async def _run_command(self, queued: _Command) -> None:
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
        # Long commands answer as they start; quick ones once their transition is recorded, so the
        # caller can read the result the moment the update returns.
        long_running = command.command in {"activate", "redeploy"}
        if long_running:
            queued.outcome = CommandResult(
                accepted=True, state=self._life.state, message=f"{command.command} started"
            )
        reason = command.reason
        actor = command.actor
        if command.command == "retry":
            await self._life.move(S.REGISTERED, reason or "retry requested", actor=actor)
        elif command.command == "deactivate":
            await self._stop_runtime()
            await self._life.move(S.INACTIVE, reason or "deactivated", actor=actor)
        elif command.command == "activate":
            assert self._deployment is not None
            self._busy = True
            try:
                await self._deploy_and_check(self._deployment.image, self._deployment.version)
            except StepFailed as failed:
                await self._fail(failed.reason, failed.details)
            except Superseded:
                await self._fail("activation superseded by a redeploy", {})
            finally:
                self._busy = False
        elif command.command == "archive":
            await self._stop_runtime(archive=True)
            await self._life.move(S.ARCHIVED, reason or "archived", actor=actor)
        elif command.command == "redeploy":
            assert command.context_path and command.version
            self._spec = self._spec.model_copy(
                update={"context_path": command.context_path, "version": command.version}
            )
            if self._input.policy.approval.required:
                self._gates.reset_approval()
                self._outbox.append(
                    RequirementUpdate(name=APPROVAL, requirement_type="approval", status="pending")
                )
            if self._life.state is not S.REGISTERED:
                # failed -> building and active -> building are arrows of their own; from active the
                # running version keeps serving until the new one is deployed.
                await self._provision(actor, reason or f"redeploy of version {command.version}")
        if not long_running:
            queued.outcome = CommandResult(
                accepted=True, state=self._life.state, message=f"{command.command} done"
            )

    async def _manual_transition(self, queued: _Command, request: ManualTransition) -> None:
        if not self._life.can_move(request.to_state):
            why = f"illegal transition {self._life.state} -> {request.to_state} for mcp_server"
            queued.outcome = CommandResult(accepted=False, state=self._life.state, message=why)
            return
        await self._life.move(
            request.to_state, request.reason, actor=request.actor, metadata={"manual": True}
        )
        # Answered once recorded: the caller reads the row the moment the update returns.
        queued.outcome = CommandResult(accepted=True, state=request.to_state, message="recorded")
