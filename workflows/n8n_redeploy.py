"""Redeploys of an n8n workflow: a new version of the export replaces the live one in place, or the
lifecycle returns to the last known good version by itself.

`N8nRedeploys` is a mixin of `N8nLifecycleWorkflow` (the lifecycle module was long already; the state
lives on the workflow, the lifecycle calls the hooks below from its own steps). A redeploy, guarded
by the patch `n8n-redeploy` (decided when the first redeploy is taken, so a history that refused one
replays the refusal):

1. reads the new export through the `read_n8n_export` activity (a workflow does no I/O), then answers:
   refused at once without a path, when the worker cannot read the file, or for a version that failed
   before; accepted once read (the rest is long: the caller follows the state);
2. validates it as registration does (`active -> validating`, or from a failure `-> registered ->
   validating`): an export with problems records `failed_validation` naming every one, nothing in n8n
   changes, and the reason says which version is still live;
3. waits at `validated` behind the same gates: the credentials the new export needs, and a new
   approval when the policy requires one;
4. updates the SAME n8n workflow in place (the id recorded at the first deploy), activates it and
   checks its webhooks as at the first deploy: `active` with the version, now the last known good one;
5. when the deploy, the activation or the health check fails, n8n may already hold the bad version (a
   refused update leaves the workflow half-published and its webhooks failing), so the version is
   marked bad and the lifecycle returns to the last good export: `failed -> registered -> validating
   -> validated -> deploying -> deployed -> active` (the n8n machine has no `failed -> deploying`),
   skipping the gates it passed already. A bad version is refused until a newer one is given.

Failures before n8n is touched (validation, a gate) do not roll back: nothing changed in n8n, the
previous version keeps serving, and `retry` tries the failed version again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from state.commands import OperatorCommand, RequirementUpdate
    from state.machines import ResourceState
    from state.n8n_models import (
        N8nExport,
        N8nFailureType,
        N8nLifecycleInput,
        N8nWorkflowSpec,
        ReadN8nExportRequest,
    )

from workflows.gates import APPROVAL, Gates
from workflows.lifecycle import Lifecycle

S = ResourceState

PATCH_REDEPLOY = "n8n-redeploy"
UNPATCHED_REFUSAL = (
    "redeploy of a new export is not supported for n8n workflows yet: archive this "
    "one and register the new export under a new id"
)
# Reading a file is quick; a retry only covers a lost worker. A missing file is not retried.
READ_TIMEOUT = timedelta(seconds=30)
READ_RETRY = RetryPolicy(
    maximum_attempts=3, non_retryable_error_types=[N8nFailureType.EXPORT_UNREADABLE]
)
REDEPLOYABLE = frozenset({S.ACTIVE, S.FAILED, S.FAILED_VALIDATION})


@dataclass
class Redeploy:
    """The redeploy in flight. Never carried across continue-as-new: the lifecycle continues as new
    only while it rests, and a redeploy ends at `active`, `failed` or `failed_validation`."""

    version: str
    # The version n8n served when the redeploy started (None: nothing was live).
    previous: str | None
    activate: bool
    # Set while returning to the last good version: the version that failed.
    rollback_of: str | None = None


class N8nRedeploys:
    # Provided by N8nLifecycleWorkflow.
    _input: N8nLifecycleInput
    _life: Lifecycle
    _gates: Gates
    _n8n_id: str | None
    _outbox: list[RequirementUpdate]
    _busy: bool
    _failure_reason: str | None

    def _init_redeploys(self, input: N8nLifecycleInput) -> None:
        self._last_good: N8nWorkflowSpec | None = input.last_good
        self._bad_versions: set[str] = set(input.bad_versions)
        # What n8n serves, healthy: set at `active`, cleared when a deploy starts or on deactivate.
        self._live_version: str | None = input.live_version
        self._redeploying: Redeploy | None = None
        self._redeploy_patched: bool | None = None

    async def _validate(
        self, *, reason: str | None = None, actor: str | None = None, enter_gate: bool = True
    ) -> None:
        raise NotImplementedError

    async def _deploy_steps(self, *, activate: bool, reason: str, actor: str | None) -> None:
        raise NotImplementedError

    # -- the command ---------------------------------------------------------------------------

    def _redeploy_refusal(self, command: OperatorCommand) -> str | None:
        """Why this redeploy cannot start now (the update's validator, and again when taken)."""
        if self._redeploy_patched is False:
            return UNPATCHED_REFUSAL
        state = self._life.state
        path = command.context_path
        if not path:
            return (
                "redeploy needs the new export: context_path, the absolute path of its JSON file"
                " on the worker (rsm command ID redeploy --path FILE.json)"
            )
        if not path.startswith("/"):
            return (
                f"context_path {path!r} is relative: give the export's absolute path on the worker"
            )
        if command.version is not None and command.version in self._bad_versions:
            return f"version {command.version} failed before; give a newer one"
        if state is S.INACTIVE:
            return "only an active or failed workflow can be redeployed; this one is inactive: activate it first"
        if state is S.VALIDATED and self._redeploying is not None:
            return (
                f"version {self._redeploying.version} waits at its gate (validated): approve or"
                " reject it first"
            )
        if state not in REDEPLOYABLE:
            return f"cannot redeploy while {state}: wait until it rests"
        return None

    async def _read_export(self, command: OperatorCommand) -> N8nExport | str:
        """The new export as the worker reads it, with the command's version if it named one; a
        string says why it cannot be redeployed."""
        assert command.context_path
        try:
            export = await workflow.execute_activity(
                "read_n8n_export",
                ReadN8nExportRequest(path=command.context_path),
                result_type=N8nExport,
                start_to_close_timeout=READ_TIMEOUT,
                retry_policy=READ_RETRY,
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError):
                return cause.message
            return f"cannot read the export {command.context_path}: {cause or err}"
        if command.version:
            export = export.model_copy(update={"version": command.version})
        if export.version in self._bad_versions:
            return f"version {export.version} failed before; give a newer one"
        return export

    async def _redeploy(self, command: OperatorCommand, export: N8nExport) -> None:
        """Validate the new export; on success the main loop takes it through the gate to the
        deploy (`_leave_gate`), which ends in `active` or a rollback."""
        state = self._life.state
        current = self._input.spec
        previous = self._live_version
        if state is S.ACTIVE:
            # It serves and passed its health check: what a failed new version returns to.
            previous = previous or current.version
            self._last_good = current
        version = export.version
        spec = current.model_copy(
            update={
                "source": export.path,
                "version": version,
                "workflow_json": export.workflow_json,
            }
        )
        self._input = self._input.model_copy(update={"spec": spec})
        self._redeploying = Redeploy(
            version=version,
            previous=previous,
            # An active workflow stays active; one that failed gets what it was registered with.
            activate=state is S.ACTIVE or not spec.deploy_inactive,
        )
        what = command.reason or f"redeploy of version {version} from {export.path}"
        if state is S.ACTIVE:
            reason = f"{what}; version {previous} stays live until this one passes"
        else:
            await self._life.move(
                S.REGISTERED, what, actor=command.actor, metadata=self._redeploy_metadata()
            )
            reason = f"validating version {version} from {export.path}"
        self._busy = True
        try:
            await self._validate(reason=reason, actor=command.actor)
        finally:
            self._busy = False
        if self._life.state is S.VALIDATED:
            self._new_version_needs_approval()
        else:
            self._redeploying = None

    def _new_version_needs_approval(self) -> None:
        if self._input.policy.approval.required:
            self._gates.reset_approval()
            self._outbox.append(
                RequirementUpdate(name=APPROVAL, requirement_type="approval", status="pending")
            )

    # -- hooks the lifecycle's steps call ------------------------------------------------------

    def _redeploy_metadata(self) -> dict[str, Any]:
        """Recorded on every row of a redeploy or a rollback (nothing otherwise)."""
        flight = self._redeploying
        if flight is None:
            return {}
        meta: dict[str, Any] = {"version": flight.version}
        if flight.rollback_of is not None:
            meta.update(rollback_to=flight.version, bad_version=flight.rollback_of)
        else:
            meta["previous_version"] = flight.previous
        return meta

    def _redeploy_reason(self, reason: str, *, n8n_untouched: bool = False) -> str:
        """A failure's reason, naming the version; before n8n was touched, also what still serves."""
        flight = self._redeploying
        if flight is None:
            return reason
        if flight.rollback_of is not None:
            return f"rollback to version {flight.version} failed: {reason}"
        reason = f"version {flight.version}: {reason}"
        if n8n_untouched and flight.previous is not None:
            where = f"n8n workflow {self._n8n_id}" if self._n8n_id else "n8n"
            reason += f"; version {flight.previous} is still live in {where}"
        return reason

    def _deploy_mode(self, reason: str) -> tuple[bool, str]:
        """Whether the deploy leaving the gate activates, and its reason."""
        flight = self._redeploying
        if flight is None:
            return not self._input.spec.deploy_inactive, reason
        where = f"n8n workflow {self._n8n_id}" if self._n8n_id else "the n8n workflow"
        return flight.activate, f"{reason}: version {flight.version} updates {where} in place"

    def _redeploy_active_reason(self, reason: str) -> str:
        flight = self._redeploying
        if flight is None:
            return reason
        if flight.rollback_of is not None:
            return f"rolled back to version {flight.version}: {reason}"
        return f"version {flight.version} is live: {reason}"

    def _reached_active(self) -> None:
        """The deployed version is healthy: it is what a later failed redeploy returns to."""
        self._live_version = self._input.spec.version
        self._last_good = self._input.spec
        self._redeploying = None

    def _retry_redeploy(self) -> None:
        """A `retry` of a version that failed before reaching n8n (a gate, validation) while an
        older one is the last good: it is still a redeploy, and rolls back if its deploy fails.
        (Only a redeploy changes the spec's version, so runs from before the patch never get here.)"""
        good, spec = self._last_good, self._input.spec
        if good is None or good.version == spec.version:
            return
        self._redeploying = Redeploy(
            version=spec.version,
            previous=self._live_version,
            activate=self._live_version is not None or not spec.deploy_inactive,
        )

    def _redeploy_ended(self) -> None:
        """A failure before n8n was touched (the gate): nothing to roll back."""
        self._redeploying = None

    async def _after_failed_deploy(self) -> None:
        """The deploy of a redeploy failed (`failed` is recorded): mark the version bad and return
        to the last good export, unless the failure was the rollback itself."""
        flight, self._redeploying = self._redeploying, None
        if flight is None or flight.rollback_of is not None:
            return
        good = self._last_good
        if good is None or good.version == flight.version:
            return  # nothing good to return to: `failed` stays, for a person to act on
        self._bad_versions.add(flight.version)
        why = self._failure_reason or "deploy failed"
        self._input = self._input.model_copy(update={"spec": good})
        self._redeploying = Redeploy(
            version=good.version, previous=None, activate=True, rollback_of=flight.version
        )
        await self._life.move(
            S.REGISTERED,
            f"rolling back to version {good.version} after version {flight.version} failed: {why}",
            metadata=self._redeploy_metadata(),
        )
        # The machine's only way back to `deploying` is through validation; the gates were passed
        # by this version already, so the deploy follows at once.
        await self._validate(
            reason=f"validating version {good.version} again to roll back to it", enter_gate=False
        )
        if self._life.state is not S.VALIDATED:
            self._redeploying = None
            return
        where = f"n8n workflow {self._n8n_id}" if self._n8n_id else "the n8n workflow"
        await self._deploy_steps(
            activate=True,
            reason=f"rolling back: version {good.version} updates {where} in place",
            actor=None,
        )
        self._redeploying = None
