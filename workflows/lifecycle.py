"""The transition machinery every lifecycle workflow shares.

`Lifecycle` is a helper that a workflow owns (composition, so each workflow class declares its own
handlers): it checks an arrow against the machine before asking the database, records the transition
through the `record_transition` activity with a key built from the workflow id, run id and a sequence
number, keeps the recent transitions for queries and upserts the search attributes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from state.commands import DependencyChange, DependentsQuery, RequirementRecord
    from state.errors import FailureType
    from state.machines import ResourceState, machine_for
    from state.models import (
        McpRegistryEntry,
        RegisterResourceRequest,
        RequirementStatus,
        RequirementType,
        ResourceRef,
        ResourceRow,
        TransitionRecord,
        TransitionRequest,
        TransitionView,
    )
    from state.webhook_models import TransitionEvent

from workflows.search_attributes import BLOCKED_ON, OWNER_TEAM, RESOURCE_STATE, RESOURCE_TYPE

# The database may be down for a while: keep trying (nothing is lost), but never retry a refusal.
STORE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=15),
    non_retryable_error_types=list(FailureType.NON_RETRYABLE),
)
STORE_TIMEOUT = timedelta(seconds=30)
RECENT_TRANSITIONS = 50
# Steps the lifecycle takes by itself are recorded under this actor; a person's name appears on the
# rows they caused (registration, approvals, commands).
SYSTEM_ACTOR = "rsm"
# Patch ids (workflow.patched): each guards one behaviour added after histories were saved.
PATCH_NOTIFY_DEPENDENTS = "notify-dependents-on-active-change"
PATCH_WAIT_OUT_SCHEMA_DRIFT = "wait-out-schema-drift"
PATCH_TRANSITION_WEBHOOKS = "transition-webhooks"
# Deliveries run beside the lifecycle, never awaited by a move; Temporal retries them for up to
# WEBHOOK_WINDOW, and a run drains them before it completes or continues as new.
WEBHOOK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
)
WEBHOOK_WINDOW = timedelta(minutes=10)
SCHEMA_DRIFT_BLOCK = "schema-drift"


# Temporal refuses a search attribute value over 2 KB, and a refused upsert fails the workflow task
# for good: long lists are cut with a count of what was left out (the query has them all).
SEARCH_ATTRIBUTE_BUDGET = 1800


def _fit(text: str) -> str:
    return text.encode()[:SEARCH_ATTRIBUTE_BUDGET].decode(errors="ignore")


def fit_keywords(items: list[str]) -> list[str]:
    kept: list[str] = []
    used = 0
    for i, item in enumerate(items):
        size = len(item.encode()) + 8  # what a list element costs in the encoded payload
        if used + size > SEARCH_ATTRIBUTE_BUDGET - 24:
            return [*kept, f"+{len(items) - i} more"]
        kept.append(item)
        used += size
    return kept


class Lifecycle:
    def __init__(
        self,
        ref: ResourceRef,
        owner_team: str,
        state: ResourceState,
        seq: int,
        registrant: str,
        drift_retry: timedelta = timedelta(minutes=1),
    ) -> None:
        self.ref = ref
        self.owner_team = owner_team
        self.state = state
        self.seq = seq
        self.registrant = registrant
        self.machine = machine_for(ref.resource_type)
        self.recent: list[TransitionView] = []
        self.blocked_on: list[str] = []
        # Set while the database refuses a state it does not know (a missing migration).
        self.schema_error: str | None = None
        self.drift_retry = drift_retry
        self.webhook_deliveries: list[workflow.ActivityHandle[Any]] = []

    def _key(self) -> str:
        info = workflow.info()
        self.seq += 1
        return f"{info.workflow_id}/{info.run_id}/{self.seq}"

    def upsert_search_attributes(self) -> None:
        workflow.upsert_search_attributes(
            [
                RESOURCE_TYPE.value_set(self.ref.resource_type.value),
                RESOURCE_STATE.value_set(self.state.value),
                OWNER_TEAM.value_set(_fit(self.owner_team)),
                BLOCKED_ON.value_set(fit_keywords(self.blocked_on)),
            ]
        )

    async def register(self, name: str, version: str | None, spec: dict[str, Any]) -> ResourceRow:
        row = await workflow.execute_activity(
            "register_resource",
            RegisterResourceRequest(
                ref=self.ref,
                name=name,
                owner_team=self.owner_team,
                version=version,
                spec=spec,
                workflow_id=workflow.info().workflow_id,
                actor=self.registrant,
                machine_version=self.machine.version,
            ),
            result_type=ResourceRow,
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
        )
        self.state = row.current_state
        self.upsert_search_attributes()
        return row

    def can_move(self, to_state: ResourceState) -> bool:
        return self.machine.allows(self.state, to_state)

    async def move(
        self,
        to_state: ResourceState,
        reason: str,
        *,
        actor: str | None = None,
        metadata: dict[str, Any] | None = None,
        mcp_registry: McpRegistryEntry | None = None,
    ) -> TransitionRecord:
        if not self.can_move(to_state):
            # A workflow bug, not bad input: fail the task so it can be fixed and replayed.
            raise RuntimeError(
                f"{self.ref.resource_type} machine v{self.machine.version} has no arrow "
                f"{self.state} -> {to_state}"
            )
        info = workflow.info()
        request = TransitionRequest(
            ref=self.ref,
            from_state=self.state,
            to_state=to_state,
            actor=actor or SYSTEM_ACTOR,
            reason=reason,
            metadata=metadata or {},
            idempotency_key=self._key(),
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            mcp_registry=mcp_registry,
        )
        record = await self._record(request)
        self.recent.append(
            TransitionView(
                from_state=self.state,
                to_state=to_state,
                actor=record.actor,
                reason=reason,
                at=workflow.now(),
            )
        )
        del self.recent[:-RECENT_TRANSITIONS]
        previous, self.state = self.state, to_state
        self.upsert_search_attributes()
        if record.deliver_webhooks:
            self.deliver_webhooks(record)
        if (previous is ResourceState.ACTIVE) != (to_state is ResourceState.ACTIVE):
            await self.notify_dependents()
        return record

    async def _record(self, request: TransitionRequest) -> TransitionRecord:
        """Record through the store; when the database is older than this code (schema drift),
        keep the transition (it is in this workflow's history and the worker's log), show
        `schema-drift` in BlockedOn, and try again until the missing migration is applied."""
        while True:
            try:
                return await workflow.execute_activity(
                    "record_transition",
                    request,
                    result_type=TransitionRecord,
                    start_to_close_timeout=STORE_TIMEOUT,
                    retry_policy=STORE_RETRY,
                )
            except ActivityError as err:
                cause = err.cause
                drift = (
                    isinstance(cause, ApplicationError) and cause.type == FailureType.SCHEMA_DRIFT
                )
                if not drift or not workflow.patched(PATCH_WAIT_OUT_SCHEMA_DRIFT):
                    raise
                workflow.logger.error(
                    "cannot record %s -> %s (%s): %s; retrying in %s",
                    request.from_state,
                    request.to_state,
                    request.reason,
                    cause,
                    self.drift_retry,
                )
                self.schema_error = str(
                    cause.message if isinstance(cause, ApplicationError) else cause
                )
                blocked, self.blocked_on = self.blocked_on, [SCHEMA_DRIFT_BLOCK]
                self.upsert_search_attributes()
                await workflow.sleep(self.drift_retry)
                self.blocked_on = blocked
                self.schema_error = None

    def deliver_webhooks(self, record: TransitionRecord) -> None:
        if not workflow.patched(PATCH_TRANSITION_WEBHOOKS):
            return
        info = workflow.info()
        self.webhook_deliveries = [h for h in self.webhook_deliveries if not h.done()]
        self.webhook_deliveries.append(
            workflow.start_activity(
                "deliver_transition_webhooks",
                TransitionEvent(
                    transition_id=record.transition_id,
                    ref=self.ref,
                    owner_team=self.owner_team,
                    from_state=record.from_state,
                    to_state=record.to_state,
                    actor=record.actor,
                    reason=record.reason,
                    metadata=record.metadata,
                    recorded_at=record.recorded_at,
                    workflow_id=info.workflow_id,
                    run_id=info.run_id,
                ),
                start_to_close_timeout=timedelta(minutes=1),
                schedule_to_close_timeout=WEBHOOK_WINDOW,
                retry_policy=WEBHOOK_RETRY,
            )
        )

    async def drain_webhooks(self) -> None:
        """A run that completes or continues as new abandons its activities: wait for them."""
        pending, self.webhook_deliveries = self.webhook_deliveries, []
        for handle in pending:
            try:
                await handle
            except ActivityError as err:
                workflow.logger.warning("webhook delivery gave up: %s", err.cause or err)

    async def record_requirement(
        self,
        name: str,
        requirement_type: RequirementType,
        status: RequirementStatus,
        details: dict[str, Any],
    ) -> None:
        """Mirror one requirement into deployment_requirements (the awaiting-action view)."""
        await workflow.execute_activity(
            "record_requirement",
            RequirementRecord(
                resource_id=self.ref.resource_id,
                name=name,
                requirement_type=requirement_type,
                status=status,
                details=details,
            ),
            result_type=RequirementRecord,
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
        )

    async def list_dependents(self, only_state: ResourceState | None = None) -> list[ResourceRef]:
        return await workflow.execute_activity(
            "list_dependents",
            DependentsQuery(ref=self.ref, only_state=only_state.value if only_state else None),
            result_type=list[ResourceRef],
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
        )

    async def notify_dependents(self) -> None:
        """A resource entering or leaving `active` tells the resources that depend on it."""
        if not workflow.patched(PATCH_NOTIFY_DEPENDENTS):
            return
        change = DependencyChange(ref=self.ref, state=self.state)
        for dependent in await self.list_dependents():
            handle = workflow.get_external_workflow_handle(dependent.workflow_id)
            try:
                await handle.signal("dependency_changed", change)
            except Exception as err:  # the dependent's lifecycle ended or never started
                workflow.logger.warning("could not tell %s: %s", dependent.workflow_id, err)
