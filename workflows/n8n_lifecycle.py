"""N8nLifecycleWorkflow: one n8n workflow export from registration to `active` in a real n8n, and its
actor afterwards.

created -> registered -> validating -> validated | failed_validation -> deploying -> deployed ->
active (or -> inactive when registered "deploy inactive"). Validation reports every problem at once
and `failed_validation` records the list; the `validated` row records the credentials the workflow
needs (requirements) and its webhook paths, which is where other registrations look for paths already
taken. `deployed` records the n8n workflow id. A failed step records `failed` with n8n's own message
and waits for `retry` or `archive`; while settled the workflow serves `deactivate`, `activate` and
`archive` (which deletes the workflow from n8n).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from state.errors import FailureType
    from state.machines import ResourceState
    from state.models import CommandRequest, LifecycleResult, LifecycleStatus, TransitionView
    from state.n8n_models import (
        DeployN8nRequest,
        ListWebhookPathsRequest,
        N8nDeployment,
        N8nFailureType,
        N8nHealthRequest,
        N8nHealthResult,
        N8nLifecycleInput,
        N8nProblem,
        N8nRequirement,
        N8nStatus,
        N8nValidationReport,
        N8nWebhook,
        N8nWorkflowRequest,
        TakenWebhookPath,
        ValidateN8nRequest,
    )

from workflows.lifecycle import STORE_RETRY, STORE_TIMEOUT, Lifecycle

S = ResourceState
ModelT = TypeVar("ModelT", bound=BaseModel)

STEP_RETRY = RetryPolicy(
    maximum_attempts=5,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=[*FailureType.NON_RETRYABLE, *N8nFailureType.NON_RETRYABLE],
)
VALIDATE_TIMEOUT = timedelta(minutes=1)
N8N_CALL_TIMEOUT = timedelta(minutes=1)


@dataclass
class _Command:
    name: str
    request: CommandRequest


class StepFailed(Exception):
    """A step ended in a permanent failure; carries what `failed` / `failed_validation` records."""

    def __init__(self, reason: str, details: dict[str, Any]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


def _failure(err: ActivityError, step: str) -> StepFailed:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        details = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
        return StepFailed(cause.message, {"step": step, "error_type": cause.type, **details})
    # Timeouts and exhausted retries of temporary errors (n8n down, a killed worker).
    message = str(cause) if cause is not None else str(err)
    return StepFailed(f"{step} did not complete: {message}", {"step": step})


@workflow.defn
class N8nLifecycleWorkflow:
    @workflow.init
    def __init__(self, input: N8nLifecycleInput) -> None:
        self._input = input
        self._life = Lifecycle(
            input.ref,
            owner_team=input.owner_team,
            state=input.resume_state or S.CREATED,
            seq=input.transition_seq,
            registrant=input.policy.actor,
        )
        self._n8n_id: str | None = input.n8n_workflow_id
        self._webhooks: list[N8nWebhook] = list(input.webhooks)
        self._problems: list[N8nProblem] = []
        self._requirements: list[N8nRequirement] = []
        self._failure_reason: str | None = None
        self._commands: list[_Command] = []

    # -- queries -----------------------------------------------------------------------------

    @workflow.query
    def get_status(self) -> LifecycleStatus:
        return LifecycleStatus(
            ref=self._input.ref,
            state=self._life.state,
            blocked_on=list(self._life.blocked_on),
            failure_reason=self._failure_reason,
        )

    @workflow.query
    def get_transitions(self) -> list[TransitionView]:
        return list(self._life.recent)

    @workflow.query
    def get_n8n(self) -> N8nStatus:
        return N8nStatus(
            n8n_workflow_id=self._n8n_id,
            webhooks=list(self._webhooks),
            problems=list(self._problems),
            requirements=list(self._requirements),
        )

    # -- signals (queued; the main loop runs them, never a handler) ----------------------------

    @workflow.signal
    def retry(self, request: CommandRequest) -> None:
        self._commands.append(_Command("retry", request))

    @workflow.signal
    def deactivate(self, request: CommandRequest) -> None:
        self._commands.append(_Command("deactivate", request))

    @workflow.signal
    def activate(self, request: CommandRequest) -> None:
        self._commands.append(_Command("activate", request))

    @workflow.signal
    def archive(self, request: CommandRequest) -> None:
        self._commands.append(_Command("archive", request))

    # -- main loop ---------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: N8nLifecycleInput) -> LifecycleResult:
        if input.resume_state is None:
            await self._start()
        while self._life.state is not S.ARCHIVED:
            if self._life.state is S.REGISTERED:
                await self._provision()
                continue
            await workflow.wait_condition(
                lambda: bool(self._commands) or workflow.info().is_continue_as_new_suggested()
            )
            if not self._commands:
                await workflow.wait_condition(workflow.all_handlers_finished)
                await self._life.drain_webhooks()
                workflow.continue_as_new(self._carry_over())
            await self._run_command(self._commands.pop(0))
        await self._life.drain_webhooks()
        return LifecycleResult(
            ref=input.ref, final_state=self._life.state, transitions=self._life.seq
        )

    def _carry_over(self) -> N8nLifecycleInput:
        return self._input.model_copy(
            update={
                "transition_seq": self._life.seq,
                "resume_state": self._life.state,
                "n8n_workflow_id": self._n8n_id,
                "webhooks": self._webhooks,
            }
        )

    async def _start(self) -> None:
        spec = self._input.spec
        row = await self._life.register(self._input.name, spec.version, spec.recorded())
        if row.current_state is S.CREATED:
            await self._life.move(S.REGISTERED, "lifecycle started", actor=self._input.policy.actor)
            return
        # The database already knows this resource (an earlier lifecycle was terminated): adopt its
        # state; a step that was in flight is marked failed so `retry` can run it again.
        state = row.current_state
        if state in {S.ACTIVE, S.INACTIVE, S.ARCHIVED, S.REGISTERED, S.FAILED}:
            return
        self._failure_reason = f"lifecycle restarted while {state}; retry to continue"
        if state is S.FAILED_VALIDATION:
            return
        if state is S.VALIDATING:
            await self._life.move(S.FAILED_VALIDATION, self._failure_reason)
            return
        if state is S.VALIDATED:  # no arrow validated -> failed: pass through deploying
            await self._life.move(S.DEPLOYING, self._failure_reason)
        await self._life.move(S.FAILED, self._failure_reason)

    async def _provision(self) -> None:
        """registered -> validating -> validated -> deploy, or -> failed_validation with every problem."""
        spec = self._input.spec
        await self._life.move(
            S.VALIDATING, f"validating {spec.source} against n8n {spec.n8n_version}"
        )
        try:
            taken = await workflow.execute_activity(
                "list_active_webhook_paths",
                ListWebhookPathsRequest(exclude_resource_id=self._input.ref.resource_id),
                result_type=list[TakenWebhookPath],
                start_to_close_timeout=STORE_TIMEOUT,
                retry_policy=STORE_RETRY,
            )
            report = await self._step(
                "validate_n8n_workflow",
                ValidateN8nRequest(
                    resource_id=self._input.ref.resource_id,
                    workflow_json=spec.workflow_json,
                    n8n_version=spec.n8n_version,
                    deploy_inactive=spec.deploy_inactive,
                    taken_webhook_paths=taken,
                ),
                N8nValidationReport,
                timeout=VALIDATE_TIMEOUT,
            )
        except StepFailed as failed:
            self._failure_reason = failed.reason
            self._problems = [
                N8nProblem.model_validate(p) for p in failed.details.get("problems", [])
            ]
            self._requirements = [
                N8nRequirement.model_validate(r) for r in failed.details.get("requirements", [])
            ]
            await self._life.move(S.FAILED_VALIDATION, failed.reason, metadata=failed.details)
            return
        self._problems, self._requirements = [], report.requirements
        self._webhooks = report.webhooks
        await self._life.move(
            S.VALIDATED,
            report.summary()
            + (f"; needs {len(report.requirements)} credential(s)" if report.requirements else ""),
            metadata={
                "n8n_version": spec.n8n_version,
                "node_count": report.node_count,
                "trigger_nodes": report.trigger_nodes,
                "requirements": [r.model_dump(mode="json") for r in report.requirements],
                "webhooks": [w.model_dump(mode="json") for w in report.webhooks],
                # Read by list_active_webhook_paths while this resource holds its paths.
                "webhook_paths": report.webhook_paths,
            },
        )
        await self._deploy(activate=not spec.deploy_inactive, reason="deploying to n8n")

    async def _deploy(self, *, activate: bool, reason: str) -> None:
        """-> deploying -> deployed -> active | inactive, or -> failed with n8n's message."""
        spec = self._input.spec
        await self._life.move(S.DEPLOYING, reason)
        try:
            deployment = await self._step(
                "deploy_n8n_workflow",
                DeployN8nRequest(
                    resource_id=self._input.ref.resource_id,
                    name=self._input.name,
                    version=spec.version,
                    workflow_json=spec.workflow_json,
                    n8n_workflow_id=self._n8n_id,
                    activate=activate,
                    webhooks=self._webhooks,
                ),
                N8nDeployment,
                timeout=self._input.policy.deploy_timeout,
            )
        except StepFailed as failed:
            await self._fail(failed)
            return
        self._n8n_id = deployment.n8n_workflow_id
        verb = "created" if deployment.created else "updated"
        await self._life.move(
            S.DEPLOYED,
            f"n8n workflow {deployment.n8n_workflow_id} {verb}"
            + (" and active" if deployment.active else " (inactive)"),
            metadata=deployment.model_dump(mode="json"),
        )
        if not activate:
            await self._life.move(S.INACTIVE, "deployed without activating (deploy inactive)")
            return
        deadline = self._input.policy.health_deadline
        try:
            health = await self._step(
                "check_n8n_workflow_health",
                N8nHealthRequest(
                    resource_id=self._input.ref.resource_id,
                    n8n_workflow_id=deployment.n8n_workflow_id,
                    webhooks=self._webhooks,
                    deadline_seconds=deadline.total_seconds(),
                ),
                N8nHealthResult,
                timeout=deadline + timedelta(seconds=30),
            )
        except StepFailed as failed:
            await self._fail(failed)
            return
        self._failure_reason = None
        hooks = f"; {len(health.webhook_urls)} webhook(s) answer" if health.webhook_urls else ""
        await self._life.move(
            S.ACTIVE, f"n8n reports it active{hooks}", metadata=health.model_dump(mode="json")
        )

    async def _fail(self, failed: StepFailed) -> None:
        if failed.details.get("n8n_workflow_id"):
            # A create succeeded before activation was refused: remember it, never copy it.
            self._n8n_id = str(failed.details["n8n_workflow_id"])
        self._failure_reason = failed.reason
        await self._life.move(S.FAILED, failed.reason, metadata=failed.details)

    async def _step(
        self, name: str, arg: BaseModel, result_type: type[ModelT], *, timeout: timedelta
    ) -> ModelT:
        try:
            return await workflow.execute_activity(
                name,
                arg,
                result_type=result_type,
                start_to_close_timeout=timeout,
                heartbeat_timeout=self._input.step_heartbeat,
                retry_policy=STEP_RETRY,
            )
        except ActivityError as err:
            raise _failure(err, name) from err

    async def _n8n_call(self, name: str) -> str | None:
        """deactivate / delete our n8n workflow; returns the id n8n acted on (None: it had none)."""
        result: str | None = await workflow.execute_activity(
            name,
            N8nWorkflowRequest(
                resource_id=self._input.ref.resource_id,
                name=self._input.name,
                n8n_workflow_id=self._n8n_id,
            ),
            result_type=str | None,  # type: ignore[arg-type]
            start_to_close_timeout=N8N_CALL_TIMEOUT,
            retry_policy=STEP_RETRY,
        )
        return result

    async def _run_command(self, command: _Command) -> None:
        state = self._life.state
        actor = command.request.actor
        reason = command.request.reason
        try:
            if command.name == "retry" and state in {S.FAILED, S.FAILED_VALIDATION}:
                await self._life.move(S.REGISTERED, reason or "retry requested", actor=actor)
            elif command.name == "deactivate" and state is S.ACTIVE:
                n8n_id = await self._n8n_call("deactivate_n8n_workflow")
                await self._life.move(
                    S.INACTIVE,
                    reason or "deactivated",
                    actor=actor,
                    metadata={"n8n_workflow_id": n8n_id},
                )
            elif command.name == "activate" and state is S.INACTIVE:
                await self._deploy(
                    activate=True, reason=reason or f"activation requested by {actor}"
                )
            elif command.name == "archive" and self._life.can_move(S.ARCHIVED):
                deleted = await self._n8n_call("delete_n8n_workflow")
                await self._life.move(
                    S.ARCHIVED,
                    reason or "archived",
                    actor=actor,
                    metadata={"deleted_n8n_workflow_id": deleted},
                )
            else:
                workflow.logger.warning("ignored %s from %s while %s", command.name, actor, state)
        except ActivityError as err:
            # n8n refused to deactivate or delete: the resource stays where it is, with the reason.
            self._failure_reason = _failure(err, command.name).reason
            workflow.logger.warning("%s failed: %s", command.name, self._failure_reason)
