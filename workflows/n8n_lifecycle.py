"""N8nLifecycleWorkflow: one n8n workflow export from registration to `active` in a real n8n, and its
actor afterwards.

created -> registered -> validating -> validated | failed_validation -> deploying -> deployed ->
active (or -> inactive when registered "deploy inactive"). Validation reports every problem at once
and `failed_validation` records the list; the `validated` row records the credentials the workflow
needs (requirements) and its webhook paths, which is where other registrations look for paths already
taken. `deployed` records the n8n workflow id. A failed step records `failed` with n8n's own message
and waits for `retry` or `archive`; while settled the workflow serves `deactivate`, `activate` and
`archive` (which deletes the workflow from n8n).

Gates (patch `n8n-gates-and-operator-commands`): each credential the validation finds becomes a
`credential` requirement (a `deployment_requirements` row), next to the policy's requirements and
approval. The workflow rests at `validated` until every one is satisfied or waived and the approval
is given, showing what it waits for in `BlockedOn` and `get_blocked_on`; a failed requirement, a
rejection or a missed approval deadline records `failed` (through `deploying`: the machine has no
arrow validated -> failed). A credential marked satisfied is looked up in the target n8n first
(`verify_n8n_credential`): if n8n says it has none the update is refused (kept pending, the refusal
in the status); if n8n cannot be asked, the update is taken as sent. Messages that arrive before the
gate are kept. Operators get the MCP lifecycle's updates (`decide`, `command`, `transition`) with
validators that refuse illegal requests at once. Histories recorded before the patch replay the old
paths, which stay below unchanged; that is why this module runs past 400 lines.

Redeploys of a new export version (patch `n8n-redeploy`) live in `workflows/n8n_redeploy.py`: the
new export is validated and gated like a registration, updates the same n8n workflow in place, and a
version that fails to deploy, activate or answer is rolled back to the last known good one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from state.commands import (
        ApprovalDecision,
        CommandResult,
        ManualTransition,
        OperatorCommand,
        RequirementRecord,
        RequirementUpdate,
    )
    from state.errors import FailureType
    from state.machines import ResourceState
    from state.models import CommandRequest, LifecycleResult, LifecycleStatus, TransitionView
    from state.n8n_models import (
        DeployN8nRequest,
        ListWebhookPathsRequest,
        N8nCredentialCheck,
        N8nCredentialQuery,
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

from workflows.gates import APPROVAL, Gates, manual_record_refusal
from workflows.lifecycle import STORE_RETRY, STORE_TIMEOUT, SYSTEM_ACTOR, Lifecycle
from workflows.n8n_redeploy import PATCH_REDEPLOY, N8nRedeploys

S = ResourceState
ModelT = TypeVar("ModelT", bound=BaseModel)

STEP_RETRY = RetryPolicy(
    maximum_attempts=5,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=[*FailureType.NON_RETRYABLE, *N8nFailureType.NON_RETRYABLE],
)
VALIDATE_TIMEOUT = timedelta(minutes=1)
N8N_CALL_TIMEOUT = timedelta(minutes=1)
# The credential lookup answers "could not ask" by itself; a retry only covers a lost worker.
VERIFY_TIMEOUT = timedelta(seconds=45)
VERIFY_RETRY = RetryPolicy(maximum_attempts=2)
PATCH_GATES = "n8n-gates-and-operator-commands"
# Requirement changes (an approval, a waiver) are mirrored before the gate is left, so the
# awaiting-action view never shows `pending` for a resource already deploying or active.
PATCH_FLUSH_AT_GATE = "n8n-flush-requirements-at-gate"
MAX_REFUSALS = 10
# States the lifecycle passes through by itself: a manual transition into one would strand it.
TRANSIENT = frozenset({S.CREATED, S.VALIDATING, S.DEPLOYING, S.DEPLOYED})


@dataclass
class _Command:
    name: str
    request: CommandRequest
    # Set on gated runs: what the command runner executes, and the answer an update waits for.
    op: OperatorCommand | ManualTransition | None = None
    outcome: CommandResult | None = None


def _operator(name: str, request: CommandRequest) -> _Command:
    op = OperatorCommand.model_validate(
        {"command": name, "actor": request.actor or "operator", "reason": request.reason}
    )
    return _Command(name, request, op)


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
class N8nLifecycleWorkflow(N8nRedeploys):
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
        # Decided by the first line of `run` (workflow.patched); None until then.
        self._gated: bool | None = None
        self._gates = Gates(
            input.policy.approval, input.policy.actor, input.policy.requirements, []
        )
        for name, status in input.requirement_statuses.items():
            self._gates.update_requirement(RequirementUpdate(name=name, status=status))
        self._credentials: dict[str, N8nRequirement] | None = (
            None if input.credentials is None else {r.name: r for r in input.credentials}
        )
        if input.credentials is not None:
            self._requirements = list(input.credentials)
        self._updates: list[RequirementUpdate] = []  # applied by the main loop (verification)
        self._outbox: list[RequirementUpdate] = []  # mirrored into deployment_requirements
        self._refusals: list[str] = []
        self._gate_reached: datetime | None = None
        self._busy = False  # a step is running: manual transitions wait for rest
        self._init_redeploys(input)

    # -- queries -----------------------------------------------------------------------------

    @workflow.query
    def get_status(self) -> LifecycleStatus:
        if not self._gated:
            return LifecycleStatus(
                ref=self._input.ref,
                state=self._life.state,
                blocked_on=list(self._life.blocked_on),
                failure_reason=self._failure_reason,
            )
        return LifecycleStatus(
            ref=self._input.ref,
            state=self._life.state,
            blocked_on=list(self._life.blocked_on)
            if self._life.schema_error
            else self._blocked_on(),
            schema_error=self._life.schema_error,
            failure_reason=self._failure_reason,
            version=self._input.spec.version,
            last_good_version=self._last_good.version if self._last_good else None,
            bad_versions=sorted(self._bad_versions),
            approved_by=self._gates.approval.approver if self._gates.approval else None,
            refusals=list(self._refusals),
            resting=not self._busy and not self._commands and self._redeploying is None,
        )

    @workflow.query
    def get_blocked_on(self) -> list[str]:
        return self._blocked_on()

    def _blocked_on(self) -> list[str]:
        # Settled past the gate (or failed): nothing is awaited but an operator's command.
        if self._life.state in {S.ACTIVE, S.INACTIVE, S.ARCHIVED, S.FAILED, S.FAILED_VALIDATION}:
            return []
        return self._gates.blocked_on()

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
            requirement_statuses={n: r.status for n, r in self._gates.requirements.items()},
        )

    # -- signals (queued; the main loop runs them, never a handler) ----------------------------

    @workflow.signal
    def retry(self, request: CommandRequest) -> None:
        self._commands.append(_operator("retry", request))

    @workflow.signal
    def deactivate(self, request: CommandRequest) -> None:
        self._commands.append(_operator("deactivate", request))

    @workflow.signal
    def activate(self, request: CommandRequest) -> None:
        self._commands.append(_operator("activate", request))

    @workflow.signal
    def archive(self, request: CommandRequest) -> None:
        self._commands.append(_operator("archive", request))

    @workflow.signal
    def redeploy(self, command: OperatorCommand) -> None:
        op = command.model_copy(update={"command": "redeploy"})
        self._commands.append(_Command("redeploy", CommandRequest(actor=op.actor), op))

    # -- gate messages (kept until the gate is reached, so an early one is never lost) ---------

    def _refuse(self, message: str) -> None:
        workflow.logger.warning("refused: %s", message)
        self._refusals = [*self._refusals, message][-MAX_REFUSALS:]

    def _refuse_approval(self, decision: ApprovalDecision) -> str | None:
        if self._gated is False:
            return "this lifecycle started before approvals existed for n8n workflows"
        return self._gates.refuse_approval(decision)

    def _decide(self, decision: ApprovalDecision, approve: bool) -> None:
        if approve:
            self._gates.approve(decision)
        else:
            self._gates.reject(decision)
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
        if (why := self._refuse_approval(decision)) is not None:
            self._refuse(why)
        else:
            self._decide(decision, approve=True)

    @workflow.signal
    def reject(self, decision: ApprovalDecision) -> None:
        if (why := self._refuse_approval(decision)) is not None:
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
        if (why := self._refuse_approval(decision)) is not None:
            raise ValueError(why)

    @workflow.signal
    def requirement_updated(self, update: RequirementUpdate) -> None:
        # Applied by the main loop: a satisfied credential is looked up in n8n first.
        self._updates.append(update)

    # -- operator commands with an answer (updates) --------------------------------------------

    @workflow.update
    async def command(self, command: OperatorCommand) -> CommandResult:
        queued = _Command(
            command.command, CommandRequest(actor=command.actor, reason=command.reason), command
        )
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
        queued = _Command(
            "transition", CommandRequest(actor=request.actor, reason=request.reason), request
        )
        self._commands.append(queued)
        await workflow.wait_condition(lambda: queued.outcome is not None)
        assert queued.outcome is not None
        return queued.outcome

    @transition.validator
    def _validate_transition(self, request: ManualTransition) -> None:
        if (why := self._transition_refusal(request)) is not None:
            raise ValueError(why)
        # Checked here only (validators do not run on replay, so older histories stay valid).
        why = manual_record_refusal(
            self._life.state,
            request.to_state,
            self._gates.blocked_on(),
            (
                "the workflow active in n8n",
                "deactivates it there",
                "the workflow inactive in n8n",
                "activates it there",
            ),
        )
        if why is not None:
            raise ValueError(why)

    def _transition_refusal(self, request: ManualTransition) -> str | None:
        if self._gated is False:
            return "this lifecycle started before manual transitions existed for n8n workflows"
        if self._busy:
            return f"a step is running ({self._life.state}); try again when it rests"
        if not self._life.can_move(request.to_state):
            return f"illegal transition {self._life.state} -> {request.to_state} for n8n_workflow"
        if request.to_state in TRANSIENT:
            return f"{request.to_state} is a step the lifecycle runs itself: use a command"
        if request.to_state is S.ARCHIVED:
            return "use the archive command: it also deletes the workflow from n8n"
        return None

    def _refusal_for(self, command: OperatorCommand) -> str | None:
        """Why `command` cannot run in the current state (checked again when it is taken)."""
        state = self._life.state
        name = command.command
        if self._gated is False:
            return "this lifecycle started before commands with answers: use the signal"
        if name == "retry" and state not in {S.FAILED, S.FAILED_VALIDATION}:
            return f"retry needs a failed resource; this one is {state}"
        if name == "deactivate" and state is not S.ACTIVE:
            return f"only an active workflow can be deactivated; this one is {state}"
        if name == "activate" and state is not S.INACTIVE:
            return f"only an inactive workflow can be activated; this one is {state}"
        if name == "archive" and not self._life.can_move(S.ARCHIVED):
            if state is S.VALIDATED:
                return (
                    "cannot archive while it waits at its gate (validated): reject it or mark a "
                    "requirement failed first"
                )
            return f"cannot archive while {state}: wait until it rests"
        if name == "scale":
            return "an n8n workflow has no replicas: scale is not supported"
        if name == "redeploy":
            return self._redeploy_refusal(command)
        return None

    # -- main loop ---------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: N8nLifecycleInput) -> LifecycleResult:
        self._gated = workflow.patched(PATCH_GATES)
        if self._gated:
            return await self._run_gated(input)
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

    async def _run_gated(self, input: N8nLifecycleInput) -> LifecycleResult:
        if input.resume_state is None:
            await self._start()
        while self._life.state is not S.ARCHIVED:
            await self._apply_updates()
            await self._flush_requirements()
            if self._commands:
                await self._run_operator_command(self._commands.pop(0))
            elif self._life.state is S.REGISTERED:
                await self._provision()
            elif self._life.state is S.VALIDATED:
                await self._await_gates()
            else:
                await workflow.wait_condition(
                    lambda: (
                        bool(self._commands)
                        or self._has_work()
                        or workflow.info().is_continue_as_new_suggested()
                    )
                )
                if not self._commands and not self._has_work():
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    await self._life.drain_webhooks()
                    workflow.continue_as_new(self._carry_over())
        # An update that archived the resource is still waiting for its answer: let it finish.
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._life.drain_webhooks()
        return LifecycleResult(
            ref=input.ref, final_state=self._life.state, transitions=self._life.seq
        )

    def _has_work(self) -> bool:
        """Requirement rows to mirror, or updates to apply (held until validation names the
        credentials, so an early `satisfied` is verified like a later one)."""
        return bool(self._outbox) or (bool(self._updates) and self._credentials is not None)

    def _carry_over(self) -> N8nLifecycleInput:
        update: dict[str, Any] = {
            "transition_seq": self._life.seq,
            "resume_state": self._life.state,
            "n8n_workflow_id": self._n8n_id,
            "webhooks": self._webhooks,
        }
        if self._gated:
            update["credentials"] = (
                None if self._credentials is None else list(self._credentials.values())
            )
            update["requirement_statuses"] = {
                n: r.status for n, r in self._gates.requirements.items()
            }
            update["last_good"] = self._last_good
            update["bad_versions"] = sorted(self._bad_versions)
            update["live_version"] = self._live_version
        return self._input.model_copy(update=update)

    async def _start(self) -> None:
        spec = self._input.spec
        row = await self._life.register(self._input.name, spec.version, spec.recorded())
        if self._gated:
            self._outbox += list(self._gates.requirements.values())
            if self._input.policy.approval.required:
                self._outbox.append(
                    RequirementUpdate(name=APPROVAL, requirement_type="approval", status="pending")
                )
            await self._flush_requirements()
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
        """registered -> validating -> validated -> deploy (gated: the gate), or ->
        failed_validation with every problem."""
        self._busy = True
        try:
            await self._validate()
        finally:
            self._busy = False

    async def _validate(
        self, *, reason: str | None = None, actor: str | None = None, enter_gate: bool = True
    ) -> None:
        """-> validating -> validated (then the gate, or the deploy before gates existed) or ->
        failed_validation. A rollback passes enter_gate=False: it deploys at once."""
        spec = self._input.spec
        await self._life.move(
            S.VALIDATING,
            reason or f"validating {spec.source} against n8n {spec.n8n_version}",
            actor=actor,
            metadata=self._redeploy_metadata() or None,
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
            # A redeploy's reason names the version, and the one n8n still serves.
            self._failure_reason = self._redeploy_reason(failed.reason, n8n_untouched=True)
            await self._life.move(
                S.FAILED_VALIDATION,
                self._failure_reason,
                metadata={**failed.details, **self._redeploy_metadata()},
            )
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
                **self._redeploy_metadata(),
            },
        )
        if not enter_gate:
            self._credentials = {c.name: c for c in report.requirements}
            return
        if self._gated:
            self._enter_gate(report.requirements)
            return
        await self._deploy(activate=not spec.deploy_inactive, reason="deploying to n8n")

    async def _deploy(self, *, activate: bool, reason: str, actor: str | None = None) -> None:
        """-> deploying -> deployed -> active | inactive, or -> failed with n8n's message."""
        self._busy = True
        try:
            await self._deploy_steps(activate=activate, reason=reason, actor=actor)
            if self._life.state is S.FAILED:
                await self._after_failed_deploy()  # a failed redeploy rolls back
        finally:
            self._busy = False

    async def _deploy_steps(self, *, activate: bool, reason: str, actor: str | None) -> None:
        spec = self._input.spec
        redeploy = self._redeploy_metadata()
        await self._life.move(S.DEPLOYING, reason, actor=actor, metadata=redeploy or None)
        self._live_version = None  # n8n is about to change
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
            metadata={**deployment.model_dump(mode="json"), **redeploy},
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
            S.ACTIVE,
            self._redeploy_active_reason(f"n8n reports it active{hooks}"),
            metadata={**health.model_dump(mode="json"), **redeploy},
        )
        self._reached_active()

    async def _fail(self, failed: StepFailed) -> None:
        if failed.details.get("n8n_workflow_id"):
            # A create succeeded before activation was refused: remember it, never copy it.
            self._n8n_id = str(failed.details["n8n_workflow_id"])
        self._failure_reason = self._redeploy_reason(failed.reason)
        await self._life.move(
            S.FAILED, self._failure_reason, metadata={**failed.details, **self._redeploy_metadata()}
        )

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

    # -- the gate (gated runs) -----------------------------------------------------------------

    def _enter_gate(self, credentials: list[N8nRequirement]) -> None:
        """Validation named the credentials: each becomes a requirement. One already satisfied or
        waived keeps its status (a retry); one that failed is pending again (a new look)."""
        self._credentials = {c.name: c for c in credentials}
        for cred in credentials:
            current = self._gates.requirements.get(cred.name)
            if current is None or current.status == "failed":
                update = RequirementUpdate(
                    name=cred.name, requirement_type="credential", status="pending"
                )
                if current is not None:
                    self._gates.requirements.pop(cred.name)
                self._gates.update_requirement(update)
                self._outbox.append(update)
        self._gate_reached = workflow.now()

    async def _apply_updates(self) -> None:
        if self._credentials is None:
            return  # not validated yet: kept until the credentials are known
        while self._updates:
            update = self._updates.pop(0)
            current = self._gates.requirements.get(update.name)
            if current is not None and current.status == update.status:
                continue  # a duplicate: recorded once
            cred = self._credentials.get(update.name)
            if cred is not None and update.status == "satisfied":
                check = await self._verify(cred)
                if check.checked and not check.exists:
                    self._refuse(
                        f"credential:{update.name} satisfied by {update.actor}: {check.detail}"
                    )
                    continue
                note = f"{update.reason}; {check.detail}" if update.reason else check.detail
                update = update.model_copy(update={"reason": note})
            if self._gates.update_requirement(update):
                self._outbox.append(self._gates.requirements[update.name])

    async def _verify(self, cred: N8nRequirement) -> N8nCredentialCheck:
        try:
            return await workflow.execute_activity(
                "verify_n8n_credential",
                N8nCredentialQuery(
                    credential_type=cred.credential_type,
                    name=cred.name,
                    credential_id=cred.credential_id,
                ),
                result_type=N8nCredentialCheck,
                start_to_close_timeout=VERIFY_TIMEOUT,
                retry_policy=VERIFY_RETRY,
            )
        except ActivityError as err:
            return N8nCredentialCheck(
                checked=False, detail=f"not verified: {_failure(err, 'verify').reason}"
            )

    async def _flush_requirements(self) -> None:
        """Mirror requirement changes into deployment_requirements (for the awaiting-action view)."""
        while self._outbox:
            update = self._outbox.pop(0)
            details = {"actor": update.actor, "reason": update.reason}
            cred = (self._credentials or {}).get(update.name)
            if cred is not None and update.requirement_type == "credential":
                details.update(credential_type=cred.credential_type, nodes=", ".join(cred.nodes))
                if cred.credential_id:
                    details["credential_id"] = cred.credential_id
            await workflow.execute_activity(
                "record_requirement",
                RequirementRecord(
                    resource_id=self._input.ref.resource_id,
                    name=update.name,
                    requirement_type=update.requirement_type,
                    status=update.status,
                    details=details,
                ),
                result_type=RequirementRecord,
                start_to_close_timeout=STORE_TIMEOUT,
                retry_policy=STORE_RETRY,
            )

    async def _await_gates(self) -> None:
        """Rest at `validated` until every requirement is satisfied or waived and the approval is
        given, a requirement fails, the approval is rejected, its deadline passes, or a command or
        a requirement update arrives (the main loop handles it and comes back)."""
        policy = self._input.policy.approval
        reached = self._gate_reached or workflow.now()
        while True:
            if self._outbox and workflow.patched(PATCH_FLUSH_AT_GATE):
                await self._flush_requirements()
            blocked = self._gates.blocked_on()
            if blocked != self._life.blocked_on:
                self._life.blocked_on = blocked
                self._life.upsert_search_attributes()
            if (failed := self._gates.failed_requirement()) is not None:
                reason = f"requirement {failed.requirement_type}:{failed.name} failed"
                await self._fail_at_gate(
                    reason + (f": {failed.reason}" if failed.reason else ""),
                    {"requirement": failed.name},
                    actor=failed.actor,
                )
                return
            if (rejection := self._gates.rejection) is not None:
                await self._fail_at_gate(
                    f"rejected by {rejection.approver}: {rejection.reason}",
                    {"approver": rejection.approver},
                    actor=rejection.approver,
                )
                return
            if not blocked:
                await self._leave_gate()
                return
            if self._commands or self._has_work():
                return
            seen = self._gates.version
            timeout = None
            if policy.deadline is not None and self._gates.approval is None:
                timeout = max(policy.deadline - (workflow.now() - reached), timedelta(0))
            try:
                await workflow.wait_condition(
                    lambda seen=seen: (  # type: ignore[misc]
                        self._gates.version != seen or bool(self._commands) or self._has_work()
                    ),
                    timeout=timeout,
                )
            except TimeoutError:
                if policy.on_deadline == "approve":
                    self._gates.approve(
                        ApprovalDecision(
                            approver=SYSTEM_ACTOR,
                            reason=f"no decision within {policy.deadline}: approved by policy",
                        )
                    )
                else:
                    await self._fail_at_gate(
                        f"no approval within {policy.deadline}",
                        {"deadline_seconds": policy.deadline.total_seconds()},  # type: ignore[union-attr]
                    )
                    return

    async def _leave_gate(self) -> None:
        approval = self._gates.approval
        if approval is not None and self._input.policy.approval.required:
            actor = approval.approver
            reason = f"{approval.reason or f'approved by {approval.approver}'}; deploying to n8n"
        else:
            actor, reason = SYSTEM_ACTOR, "deploying to n8n"
        self._life.blocked_on = []
        self._gate_reached = None
        activate, reason = self._deploy_mode(reason)
        await self._deploy(activate=activate, reason=reason, actor=actor)

    async def _fail_at_gate(
        self, reason: str, details: dict[str, Any], actor: str | None = None
    ) -> None:
        # The n8n machine has no arrow validated -> failed: pass through deploying, which records
        # that nothing was deployed.
        self._life.blocked_on = []
        self._gate_reached = None
        reason = self._redeploy_reason(reason, n8n_untouched=True)
        details = {"gate": True, **details, **self._redeploy_metadata()}
        self._failure_reason = reason
        await self._life.move(S.DEPLOYING, f"not deployed: {reason}", actor=actor, metadata=details)
        await self._life.move(S.FAILED, reason, actor=actor, metadata=details)
        self._redeploy_ended()

    # -- operator commands (gated runs) --------------------------------------------------------

    async def _run_operator_command(self, queued: _Command) -> None:
        op = queued.op
        if isinstance(op, ManualTransition):
            await self._manual_transition(queued, op)
            return
        if op is None:
            op = _operator(queued.name, queued.request).op
            assert isinstance(op, OperatorCommand)
        if op.command == "redeploy" and self._redeploy_patched is None:
            # Decided when the first redeploy is taken: a history that refused one replays that.
            self._redeploy_patched = workflow.patched(PATCH_REDEPLOY)
        if (why := self._refusal_for(op)) is not None:
            queued.outcome = CommandResult(accepted=False, state=self._life.state, message=why)
            self._refuse(f"{op.command} from {op.actor}: {why}")
            return
        if op.command == "archive":
            active = await self._life.list_dependents(S.ACTIVE)
            if active:
                why = (
                    f"cannot archive: active dependents {', '.join(d.workflow_id for d in active)}"
                )
                queued.outcome = CommandResult(accepted=False, state=self._life.state, message=why)
                self._refuse(f"archive from {op.actor}: {why}")
                return
        if op.command == "redeploy":
            export = await self._read_export(op)
            if isinstance(export, str):
                queued.outcome = CommandResult(
                    accepted=False, state=self._life.state, message=export
                )
                self._refuse(f"redeploy from {op.actor}: {export}")
                return
            # Long: answered once the export is read; the caller follows the state.
            queued.outcome = CommandResult(
                accepted=True,
                state=self._life.state,
                message=f"redeploy of version {export.version} started",
            )
            await self._redeploy(op, export)
            return
        actor, reason = op.actor, op.reason
        try:
            if op.command == "retry":
                if self._gates.rejection is not None:
                    # A retry after a rejection asks for a new decision.
                    self._gates.reset_approval()
                    self._outbox.append(
                        RequirementUpdate(
                            name=APPROVAL, requirement_type="approval", status="pending"
                        )
                    )
                await self._life.move(S.REGISTERED, reason or "retry requested", actor=actor)
                self._retry_redeploy()
            elif op.command == "deactivate":
                n8n_id = await self._n8n_call("deactivate_n8n_workflow")
                self._live_version = None
                await self._life.move(
                    S.INACTIVE,
                    reason or "deactivated",
                    actor=actor,
                    metadata={"n8n_workflow_id": n8n_id},
                )
            elif op.command == "activate":
                # Long: answered as it starts; the caller follows the state.
                queued.outcome = CommandResult(
                    accepted=True, state=self._life.state, message="activate started"
                )
                await self._deploy(
                    activate=True,
                    reason=reason or f"activation requested by {actor}",
                    actor=actor,
                )
            elif op.command == "archive":
                deleted = await self._n8n_call("delete_n8n_workflow")
                self._live_version = None
                await self._life.move(
                    S.ARCHIVED,
                    reason or "archived",
                    actor=actor,
                    metadata={"deleted_n8n_workflow_id": deleted},
                )
        except ActivityError as err:
            # n8n refused to deactivate or delete: the resource stays where it is, with the reason.
            self._failure_reason = _failure(err, op.command).reason
            if queued.outcome is None:
                queued.outcome = CommandResult(
                    accepted=False, state=self._life.state, message=self._failure_reason
                )
            return
        if queued.outcome is None:
            queued.outcome = CommandResult(
                accepted=True, state=self._life.state, message=f"{op.command} done"
            )

    async def _manual_transition(self, queued: _Command, request: ManualTransition) -> None:
        if (why := self._transition_refusal(request)) is not None:
            queued.outcome = CommandResult(accepted=False, state=self._life.state, message=why)
            return
        await self._life.move(
            request.to_state, request.reason, actor=request.actor, metadata={"manual": True}
        )
        # Answered once recorded: the caller reads the row the moment the update returns.
        queued.outcome = CommandResult(accepted=True, state=request.to_state, message="recorded")
