"""ReportedLifecycleWorkflow: a resource whose steps an outside system performs and reports.

The seed's factories (team factory, MCP factory, the workflow import API, GitOps scripts) build and
deploy resources themselves and report each step (`start_validation`, `complete_build`, ...). Each
report is an update to this workflow, which checks the arrow against the same machine the pipeline
lifecycles use and records it through the same `record_transition` activity, so a resource handled by
a factory and one handled by the pipeline have the same history, search attributes, webhooks and
dependents' notifications. rsm runs no step of its own here; it keeps the gates: a resource does not
become `active` while a requirement is pending, a failed requirement fails it (naming it), and a
dependency (a requirement of type `dependency` named after a registered resource) becoming active
moves a team out of `awaiting_dependencies` by itself.

Why a workflow type of its own rather than a "manual mode" in the three pipeline lifecycles: their
loops are built around steps they run (builds that a redeploy supersedes, rollbacks); a reported
resource has none, and keeping it separate leaves their saved histories untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from state.commands import (
        CommandResult,
        DependencyChange,
        ManualTransition,
        OperatorCommand,
        RequirementRecord,
        RequirementUpdate,
    )
    from state.machines import ResourceState, ResourceType
    from state.models import (
        CommandRequest,
        LifecycleResult,
        LifecycleStatus,
        ReportedLifecycleInput,
        RequirementUpdateState,
        TransitionView,
    )

from workflows.lifecycle import STORE_RETRY, STORE_TIMEOUT, SYSTEM_ACTOR, Lifecycle

S = ResourceState

# Behaviour added after the first recorded histories, each asked once at the start of a run:
# a run that adopts a resource reloads its requirements from the database,
PATCH_RELOAD_GATES = "reported-reload-gates"
# a team goes back to `awaiting_dependencies` when a dependency leaves `active`,
PATCH_DEPENDENCY_LEFT = "reported-team-dependency-left"
# and a report the store refuses for good is answered "not recorded" (it failed the run before).
PATCH_REFUSED_REPORT = "reported-refused-report"

# What each operator command means for a reported resource: a transition the operator may ask for
# directly (rsm builds and deploys nothing here, so redeploy and scale belong to the factory).
_COMMAND_TARGETS: dict[str, ResourceState] = {
    "archive": S.ARCHIVED,
    "deactivate": S.INACTIVE,
    "activate": S.ACTIVE,
    "retry": S.REGISTERED,
}


@dataclass
class _Report:
    to_state: ResourceState
    actor: str
    reason: str
    metadata: dict[str, object]
    outcome: CommandResult | None = None


@workflow.defn
class ReportedLifecycleWorkflow:
    @workflow.init
    def __init__(self, input: ReportedLifecycleInput) -> None:
        self._input = input
        self._life = Lifecycle(
            input.ref,
            owner_team=input.owner_team,
            state=input.resume_state or S.CREATED,
            seq=input.transition_seq,
            registrant=input.actor,
        )
        self._requirements: dict[str, RequirementUpdateState] = {
            r.name: r for r in input.requirements
        }
        self._reports: list[_Report] = []
        self._outbox: list[RequirementUpdateState] = []
        self._ready = input.resume_state is not None
        self._failure_reason: str | None = None
        self._life.blocked_on = self._blocked_on()
        self._reloads_gates = self._follows_leaving = self._answers_refusals = False

    # -- queries -------------------------------------------------------------------------------

    @workflow.query
    def get_status(self) -> LifecycleStatus:
        return LifecycleStatus(
            ref=self._input.ref,
            state=self._life.state,
            blocked_on=self._blocked_on(),
            schema_error=self._life.schema_error,
            failure_reason=self._failure_reason,
        )

    @workflow.query
    def get_blocked_on(self) -> list[str]:
        return self._blocked_on()

    @workflow.query
    def get_transitions(self) -> list[TransitionView]:
        return list(self._life.recent)

    def _blocked_on(self) -> list[str]:
        return sorted(
            f"{r.requirement_type}:{r.name}"
            for r in self._requirements.values()
            if r.status == "pending"
        )

    # -- reports: the outside system's steps ----------------------------------------------------

    @workflow.update
    async def registration(self) -> CommandResult:
        """Answers once registration is recorded: accepted when this resource rests in
        `registered` (a repeated registration of the same resource is accepted again)."""
        await workflow.wait_condition(lambda: self._ready)
        state = self._life.state
        if state is S.REGISTERED:
            return CommandResult(accepted=True, state=state, message="registered")
        return CommandResult(
            accepted=False,
            state=state,
            message=f"{self._input.ref.resource_type} {self._input.ref.resource_id} is already"
            f" registered and now {state}",
        )

    @workflow.update
    async def transition(self, request: ManualTransition) -> CommandResult:
        report = _Report(request.to_state, request.actor, request.reason, dict(request.metadata))
        return await self._report(report)

    async def _report(self, report: _Report) -> CommandResult:
        self._reports.append(report)
        # The main loop takes reports in order and answers each once its row is written.
        await workflow.wait_condition(lambda: report.outcome is not None)
        assert report.outcome is not None
        return report.outcome

    @transition.validator
    def _validate_transition(self, request: ManualTransition) -> None:
        if (why := self._refusal(self._projected_state(), request.to_state)) is not None:
            raise ValueError(why)

    @workflow.update
    async def command(self, command: OperatorCommand) -> CommandResult:
        target = _COMMAND_TARGETS[command.command]
        reason = command.reason or command.command
        return await self._report(_Report(target, command.actor, reason, {}))

    @command.validator
    def _validate_command(self, command: OperatorCommand) -> None:
        target = _COMMAND_TARGETS.get(command.command)
        if target is None:
            raise ValueError(
                f"{command.command} is not run by rsm for a reported resource: the system that"
                " builds and deploys it reports those steps (transition)"
            )
        if (why := self._refusal(self._projected_state(), target)) is not None:
            raise ValueError(why)

    # The signal forms `rsm` and `temporal workflow signal` send; a refused one is only logged.
    @workflow.signal
    def archive(self, request: CommandRequest) -> None:
        self._command_signal("archive", request)

    @workflow.signal
    def deactivate(self, request: CommandRequest) -> None:
        self._command_signal("deactivate", request)

    @workflow.signal
    def activate(self, request: CommandRequest) -> None:
        self._command_signal("activate", request)

    @workflow.signal
    def retry(self, request: CommandRequest) -> None:
        self._command_signal("retry", request)

    def _command_signal(self, name: str, request: CommandRequest) -> None:
        target = _COMMAND_TARGETS[name]
        if (why := self._refusal(self._projected_state(), target)) is not None:
            workflow.logger.warning("refused %s: %s", name, why)
            return
        self._reports.append(_Report(target, request.actor, request.reason or name, {}))

    def _projected_state(self) -> ResourceState:
        """The state once the reports already accepted are recorded (validators run on arrival)."""
        pending = [r for r in self._reports if r.outcome is None]
        return pending[-1].to_state if pending else self._life.state

    def _refusal(self, from_state: ResourceState, to_state: ResourceState) -> str | None:
        if not self._ready:
            return None  # checked again when taken: registration is still being recorded
        kind = self._input.ref.resource_type.value
        if not self._life.machine.allows(from_state, to_state):
            nexts = ", ".join(sorted(self._life.machine.targets(from_state))) or "none"
            return (
                f"Transition from '{from_state}' to '{to_state}' not allowed for {kind}"
                f" (from {from_state}: {nexts})"
            )
        if to_state is S.ACTIVE:
            failed = [r.name for r in self._requirements.values() if r.status == "failed"]
            if failed:
                return f"requirement failed: {', '.join(sorted(failed))}"
            if waiting := self._blocked_on():
                return f"not active while waiting on {', '.join(waiting)}"
        return None

    # -- gates ----------------------------------------------------------------------------------

    @workflow.signal
    def requirement_updated(self, update: RequirementUpdate) -> None:
        current = self._requirements.get(update.name)
        kind = current.requirement_type if current else update.requirement_type
        state = RequirementUpdateState(
            name=update.name,
            requirement_type=kind,
            status=update.status,
            details={**update.details, "actor": update.actor, "reason": update.reason},
        )
        self._requirements[update.name] = state
        self._outbox.append(state)

    @workflow.signal
    def dependency_changed(self, change: DependencyChange) -> None:
        """A dependency (a `dependency` requirement named after a resource) entered or left
        `active`: its requirement follows."""
        current = self._requirements.get(change.ref.resource_id)
        if current is None or current.requirement_type != "dependency":
            return
        status = "satisfied" if change.state is S.ACTIVE else "pending"
        if current.status != status:
            self.requirement_updated(
                RequirementUpdate(
                    name=current.name,
                    requirement_type="dependency",
                    status=status,
                    actor=SYSTEM_ACTOR,
                    reason=f"{change.ref.resource_type.value}/{change.ref.resource_id}"
                    f" is {change.state}",
                    details=current.details,
                )
            )

    def _automatic_move(self) -> tuple[ResourceState, str] | None:
        """A move the gates make by themselves: a failed requirement fails the resource; a team
        whose dependencies are all satisfied leaves `awaiting_dependencies`, and goes back to it
        when one of them leaves `active`."""
        state = self._life.state
        failed = sorted(r.name for r in self._requirements.values() if r.status == "failed")
        if failed and state is not S.FAILED and self._life.can_move(S.FAILED):
            return S.FAILED, f"requirement failed: {', '.join(failed)}"
        if self._input.ref.resource_type is not ResourceType.TEAM or failed:
            return None
        if state is S.AWAITING_DEPENDENCIES and not self._blocked_on():
            return S.ACTIVE, "all dependencies satisfied"
        waiting = sorted(
            r.name
            for r in self._requirements.values()
            if r.requirement_type == "dependency" and r.status == "pending"
        )
        if state is S.ACTIVE and waiting and self._follows_leaving:
            return S.AWAITING_DEPENDENCIES, f"dependency not active: {', '.join(waiting)}"
        return None

    # -- main loop ------------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: ReportedLifecycleInput) -> LifecycleResult:
        self._reloads_gates = workflow.patched(PATCH_RELOAD_GATES)
        self._follows_leaving = workflow.patched(PATCH_DEPENDENCY_LEFT)
        self._answers_refusals = workflow.patched(PATCH_REFUSED_REPORT)
        if input.resume_state is None:
            await self._register(input)
        while self._life.state is not S.ARCHIVED:
            await workflow.wait_condition(
                lambda: (
                    bool(self._reports)
                    or bool(self._outbox)
                    or self._automatic_move() is not None
                    or workflow.info().is_continue_as_new_suggested()
                )
            )
            await self._flush_requirements()
            if self._reports:
                await self._take(self._reports.pop(0))
            elif (move := self._automatic_move()) is not None:
                to_state, reason = move
                if to_state is S.FAILED:
                    self._failure_reason = reason
                await self._life.move(to_state, reason)
            elif workflow.info().is_continue_as_new_suggested():
                # Updates wait for this loop to answer them: take new reports while draining.
                await workflow.wait_condition(
                    lambda: workflow.all_handlers_finished() or bool(self._reports)
                )
                if not self._reports and not self._outbox:
                    await self._life.drain_webhooks()
                    workflow.continue_as_new(self._carry_over())
        for report in self._reports:  # reports queued behind the archive
            report.outcome = CommandResult(
                accepted=False, state=self._life.state, message="the resource was archived"
            )
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._life.drain_webhooks()
        return LifecycleResult(
            ref=input.ref, final_state=self._life.state, transitions=self._life.seq
        )

    async def _register(self, input: ReportedLifecycleInput) -> None:
        row = await self._life.register(input.name, None, {"reported": True, **input.metadata})
        # A resource the database already knows keeps its state (registration repeated, or a
        # lifecycle restarted): `registration` answers with that state.
        if row.current_state is S.CREATED:
            await self._life.move(
                S.REGISTERED, input.reason, actor=input.actor, metadata=input.metadata
            )
        elif self._reloads_gates:
            # An earlier lifecycle of this resource ended (terminated, or lost): its gates are in
            # the database, and a new run that forgot them would let the resource past them.
            for record in await workflow.execute_activity(
                "list_requirements",
                input.ref,
                result_type=list[RequirementRecord],
                start_to_close_timeout=STORE_TIMEOUT,
                retry_policy=STORE_RETRY,
            ):
                self._requirements[record.name] = RequirementUpdateState(
                    name=record.name,
                    requirement_type=record.requirement_type,
                    status=record.status,
                    details=record.details,
                )
        self._ready = True
        self._life.blocked_on = self._blocked_on()
        self._life.upsert_search_attributes()

    async def _take(self, report: _Report) -> None:
        why = self._refusal(self._life.state, report.to_state)
        if why is not None:
            report.outcome = CommandResult(accepted=False, state=self._life.state, message=why)
            return
        if report.to_state is S.FAILED:
            self._failure_reason = report.reason
        elif report.to_state is S.REGISTERED:
            self._failure_reason = None
        try:
            record = await self._life.move(
                report.to_state, report.reason, actor=report.actor, metadata=report.metadata
            )
        except ActivityError as err:
            if not self._answers_refusals:
                raise
            # The store refused this report for good (a value it cannot hold): the caller hears
            # why, the resource stays where it was. Temporary failures are retried inside.
            cause = err.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            report.outcome = CommandResult(
                accepted=False, state=self._life.state, message=f"not recorded: {message}"
            )
            return
        report.outcome = CommandResult(
            accepted=True, state=record.to_state, message=f"recorded #{record.transition_id}"
        )

    async def _flush_requirements(self) -> None:
        """Mirror requirement changes into deployment_requirements and BlockedOn."""
        while self._outbox:
            update = self._outbox.pop(0)
            await self._life.record_requirement(
                update.name, update.requirement_type, update.status, update.details
            )
        if self._life.blocked_on != (blocked := self._blocked_on()):
            self._life.blocked_on = blocked
            self._life.upsert_search_attributes()

    def _carry_over(self) -> ReportedLifecycleInput:
        return self._input.model_copy(
            update={
                "transition_seq": self._life.seq,
                "resume_state": self._life.state,
                "requirements": list(self._requirements.values()),
            }
        )
