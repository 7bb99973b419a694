"""What the seed's resource managers share, over rsm's client facade and store.

The managers (control/state_manager/managers.py) keep the seed's method names, arguments and
`(success, error)` results. Every step call drives the resource's Temporal workflow:
a resource a factory registers here runs a `ReportedLifecycleWorkflow`, which checks each reported
step against the same machine the pipeline uses and records it through the same activity; a
resource the pipeline runs answers through its own lifecycle (which refuses steps it runs itself,
and says so). Requirement rows are written through the store and told to the workflow, whose gates
keep a resource out of `active` while one is pending.
"""

from __future__ import annotations

import json
import logging
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from control.state_manager.connection import StateClient, StateManagerUnavailable, create_client
from control.state_manager.shapes import (
    REQUIREMENT_STATUSES,
    REQUIREMENT_TYPES,
    history_dict,
    requirement_dict,
    resource_dict,
)
from state.commands import CommandResult, ManualTransition, RequirementRecord, RequirementUpdate
from state.machines import ResourceState, ResourceType
from state.models import ReportedLifecycleInput, ResourceRef
from workflows.reported_lifecycle import ReportedLifecycleWorkflow
from workflows.search_attributes import OWNER_TEAM, RESOURCE_STATE, RESOURCE_TYPE

log = logging.getLogger("rsm.state_manager")
Result = tuple[bool, str | None]
# Who a requirement change is recorded under when the seed's call names no one.
REQUIREMENT_ACTOR = "state-manager"


M = TypeVar("M", bound=BaseModel)


class _Refused(Exception):
    """A step the lifecycle or the input refused; becomes `(False, message)`."""


class ResourceStateManager:
    """What every manager shares: transitions, history, requirements."""

    resource_type: ResourceType

    def __init__(self, client: StateClient | None = None) -> None:
        # The seed passes its Supabase client here; ours is the connection from `create_client`.
        self.client = client if client is not None else create_client()
        # Why the last bool-returning call (the seed's requirement methods) returned False.
        self.last_error: str | None = None

    # -- transitions ----------------------------------------------------------------------------

    def transition_state(
        self,
        resource_id: str,
        resource_name: str,
        to_state: str,
        reason: str,
        transitioned_by: str,
        metadata: dict[str, Any] | None = None,
    ) -> Result:
        """Move the resource to `to_state` through its workflow. Returns (success, error)."""
        return self._result(
            lambda: self._transition(
                resource_id, resource_name, to_state, reason, transitioned_by, metadata or {}
            ),
            f"{to_state} of {resource_id}",
        )

    def _register(
        self,
        resource_id: str,
        resource_name: str,
        *,
        owner_team: str,
        actor: str,
        reason: str,
        metadata: dict[str, Any],
    ) -> Result:
        return self._result(
            lambda: self._register_async(
                resource_id,
                resource_name,
                owner_team=owner_team,
                actor=actor,
                reason=reason,
                metadata=metadata,
            ),
            f"registration of {resource_id}",
        )

    async def _register_async(
        self,
        resource_id: str,
        resource_name: str,
        *,
        owner_team: str,
        actor: str,
        reason: str,
        metadata: dict[str, Any],
    ) -> None:
        ref = self._ref(resource_id)
        if not resource_name:
            raise _Refused("a resource needs a name")
        existing = await self.client.store.get_resource(ref.resource_id)
        if existing is not None and existing.resource_type is not ref.resource_type:
            raise _Refused(f"{ref.resource_id} is already registered as a {existing.resource_type}")
        if existing is not None and existing.current_state is ResourceState.ARCHIVED:
            raise _Refused(f"{ref.resource_type} {ref.resource_id} is archived")
        lifecycle = self.client.lifecycle
        lifecycle_input = _valid(
            ReportedLifecycleInput,
            ref=ref,
            name=resource_name,
            owner_team=owner_team,
            actor=actor,
            reason=reason,
            metadata=_json_metadata(metadata),
        )
        handle = await lifecycle.client.start_workflow(
            ReportedLifecycleWorkflow.run,
            lifecycle_input,
            id=ref.workflow_id,
            task_queue=lifecycle.settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(RESOURCE_TYPE, ref.resource_type.value),
                    SearchAttributePair(RESOURCE_STATE, "created"),
                    SearchAttributePair(OWNER_TEAM, owner_team),
                ]
            ),
        )
        await self._answer(handle, "registration", [])

    async def _transition(
        self,
        resource_id: str,
        resource_name: str,
        to_state: str,
        reason: str,
        actor: str,
        metadata: dict[str, Any],
    ) -> None:
        ref = self._ref(resource_id)
        try:
            target = ResourceState(to_state)
        except ValueError:
            known = ", ".join(s.value for s in ResourceState)
            raise _Refused(f"unknown state {to_state!r}; one of {known}") from None
        if target is ResourceState.REGISTERED and await self._unknown(ref):
            await self._register_async(
                resource_id,
                resource_name,
                owner_team="",
                actor=actor,
                reason=reason,
                metadata=metadata,
            )
            return
        request = _valid(
            ManualTransition,
            to_state=target,
            actor=actor,
            reason=reason,
            metadata=_json_metadata(metadata),
        )
        await self._answer(
            self.client.lifecycle.handle(ref.resource_type, ref.resource_id),
            "transition",
            [request],
        )

    async def _unknown(self, ref: ResourceRef) -> bool:
        return await self.client.store.get_resource(ref.resource_id) is None

    async def _answer(self, handle: WorkflowHandle[Any, Any], update: str, args: list[Any]) -> None:
        """Send an update and turn every way it can be refused into `_Refused`."""
        kind, rid = self.resource_type.value, handle.id.rsplit("/", 1)[-1]
        try:
            result = await handle.execute_update(update, args=args, result_type=CommandResult)
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            if "expected but not found" in message:
                # A lifecycle that runs its steps itself has no `registration` to report.
                row = await self.client.store.get_resource(rid)
                state = row.current_state if row else "unknown"
                message = f"{kind} {rid} is run by its pipeline lifecycle (state {state})"
            raise _Refused(message) from None
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
            row = await self.client.store.get_resource(rid)
            if row is None:
                raise _Refused(f"{kind} {rid} is not registered") from None
            if row.resource_type is not self.resource_type:
                raise _Refused(f"{rid} is a {row.resource_type}, not a {kind}") from None
            raise _Refused(
                f"{kind} {rid} has no running lifecycle (state {row.current_state})"
            ) from None
        if not result.accepted:
            raise _Refused(result.message)

    # -- reads the seed's managers offer --------------------------------------------------------

    def get_current_state(self, resource_id: str) -> dict[str, Any] | None:
        row = self.client.call(lambda: self.client.store.get_resource(resource_id))
        if row is None or row.resource_type is not self.resource_type:
            return None
        return resource_dict(row)

    def get_state_history(self, resource_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first, as the seed's; empty for a resource of another type."""
        if self.get_current_state(resource_id) is None:
            return []
        rows = self.client.call(
            lambda: self.client.store.list_transitions(resource_id, max(0, limit))
        )
        return [history_dict(r, self.resource_type) for r in reversed(rows)]

    def get_resources_by_state(self, state: str) -> list[dict[str, Any]]:
        rows = self.client.call(
            lambda: self.client.store.list_resources(self.resource_type.value, state)
        )
        return [resource_dict(r) for r in rows]

    # -- deployment requirements ----------------------------------------------------------------

    def add_deployment_requirement(
        self,
        resource_id: str,
        requirement_type: str,
        requirement_name: str,
        details: dict[str, Any] | None = None,
    ) -> bool:
        """Add a pending requirement (a `dependency` named after a registered resource follows
        that resource: satisfied while it is active). False, with the reason logged, if refused."""

        async def add() -> None:
            if requirement_type not in REQUIREMENT_TYPES:
                raise _Refused(
                    f"unknown requirement type {requirement_type!r};"
                    f" one of {', '.join(REQUIREMENT_TYPES)}"
                )
            if not requirement_name:
                raise _Refused("a requirement needs a name")
            ref = await self._known(resource_id, writable=True)
            if requirement_type == "dependency" and requirement_name == ref.resource_id:
                raise _Refused(f"{ref.resource_id} cannot depend on itself")
            current = {
                r.name: r for r in await self.client.store.list_requirements(ref.resource_id)
            }
            if requirement_name in current:
                existing = current[requirement_name]
                if existing.requirement_type != requirement_type:
                    raise _Refused(
                        f"{ref.resource_id} has a {existing.requirement_type} requirement named"
                        f" {requirement_name!r} already"
                    )
                return  # adding it again changes nothing (the seed's retry is harmless)
            status = "pending"
            if requirement_type == "dependency":
                status = await self._link_dependency(ref, requirement_name, current)
            await self._set_requirement(
                ref,
                requirement_name,
                requirement_type,
                status,
                details or {},
                reason="requirement added",
            )

        return self._ok(add, f"adding requirement {requirement_name} to {resource_id}")

    def update_requirement_status(
        self,
        resource_id: str,
        requirement_name: str,
        status: str,
        details: dict[str, Any] | None = None,
    ) -> bool:
        async def update() -> None:
            if status not in REQUIREMENT_STATUSES:
                raise _Refused(
                    f"unknown requirement status {status!r}; one of {', '.join(REQUIREMENT_STATUSES)}"
                )
            ref = await self._known(resource_id, writable=True)
            current = {
                r.name: r for r in await self.client.store.list_requirements(ref.resource_id)
            }
            if requirement_name not in current:
                raise _Refused(
                    f"{resource_id} has no requirement {requirement_name!r}"
                    f" (has: {', '.join(sorted(current)) or 'none'}); add it first"
                )
            existing = current[requirement_name]
            await self._set_requirement(
                ref,
                requirement_name,
                existing.requirement_type,
                status,
                {**existing.details, **(details or {})},
                reason=f"requirement {status}",
            )

        return self._ok(update, f"updating requirement {requirement_name} of {resource_id}")

    def check_deployment_requirements(self, resource_id: str) -> dict[str, Any]:
        records = self.client.call(lambda: self.client.store.list_requirements(resource_id))
        requirements = [requirement_dict(r) for r in records]
        pending = sum(1 for r in records if r.status == "pending")
        failed = sum(1 for r in records if r.status == "failed")
        return {
            "all_satisfied": pending == 0 and failed == 0,
            "pending_count": pending,
            "failed_count": failed,
            "requirements": requirements,
        }

    async def _set_requirement(
        self,
        ref: ResourceRef,
        name: str,
        requirement_type: Any,
        status: Any,
        details: dict[str, Any],
        *,
        reason: str,
    ) -> None:
        details = _json_metadata(details)
        actor = str(details.get("actor") or REQUIREMENT_ACTOR)
        # Validated (names, NUL characters) before anything is written.
        update = _valid(
            RequirementUpdate,
            name=name,
            status=status,
            requirement_type=requirement_type,
            actor=actor,
            reason=reason,
            details={k: v for k, v in details.items() if k not in {"actor", "reason"}},
        )
        # Written here so the caller reads it at once, and told to the lifecycle, whose gates
        # act on it (it writes the same row again: same content, no second row).
        await self.client.store.upsert_requirement(
            RequirementRecord(
                resource_id=ref.resource_id,
                name=name,
                requirement_type=requirement_type,
                status=status,
                details={**update.details, "actor": actor, "reason": reason},
            )
        )
        try:
            await self.client.lifecycle.handle(ref.resource_type, ref.resource_id).signal(
                "requirement_updated", update
            )
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
            log.warning("%s has no running lifecycle: requirement %s only recorded", ref, name)

    async def _link_dependency(
        self, ref: ResourceRef, name: str, current: dict[str, RequirementRecord]
    ) -> str:
        """A dependency named after a resource is linked, so that resource's lifecycle tells this
        one when it enters or leaves `active`; its status is that resource's now. Resource ids are
        unique across types, so a name not registered yet is linked under each type: whichever
        registers under it later finds the link."""
        names = [d.name for d in current.values() if d.requirement_type == "dependency"]
        refs: list[ResourceRef] = []
        for dependency in [*names, name]:
            refs += await self._dependency_refs(dependency)
        await self.client.store.set_dependencies(ref, refs)
        target = await self.client.store.get_resource(name)
        active = target is not None and target.current_state is ResourceState.ACTIVE
        return "satisfied" if active else "pending"

    async def _dependency_refs(self, name: str) -> list[ResourceRef]:
        row = await self.client.store.get_resource(name)
        if row is not None:
            return [ResourceRef(resource_type=row.resource_type, resource_id=row.resource_id)]
        try:
            return [ResourceRef(resource_type=kind, resource_id=name) for kind in ResourceType]
        except ValidationError:
            return []  # a name no resource can have: a requirement someone marks by hand

    async def _known(self, resource_id: str, *, writable: bool = False) -> ResourceRef:
        ref = self._ref(resource_id)
        row = await self.client.store.get_resource(ref.resource_id)
        if row is None:
            raise _Refused(f"{ref.resource_type} {ref.resource_id} is not registered")
        if row.resource_type is not ref.resource_type:
            raise _Refused(f"{ref.resource_id} is a {row.resource_type}, not a {ref.resource_type}")
        if writable and row.current_state is ResourceState.ARCHIVED:
            raise _Refused(f"{ref.resource_type} {ref.resource_id} is archived")
        return ref

    # -- plumbing -------------------------------------------------------------------------------

    def _ref(self, resource_id: str) -> ResourceRef:
        try:
            return ResourceRef(resource_type=self.resource_type, resource_id=resource_id)
        except ValidationError:
            raise _Refused(
                f"invalid resource id {resource_id!r}: lower-case letters, digits, '.', '_' and '-',"
                " starting with a letter or digit, at most 63 characters"
            ) from None

    def _result(self, make: Any, what: str) -> Result:
        try:
            result = self.client.call(make)
        except _Refused as err:
            log.info("%s refused: %s", what, err)
            return False, str(err)
        except StateManagerUnavailable as err:  # the stack, not this call: said as it is
            return False, str(err)
        except TimeoutError as err:
            return False, f"{what}: {err}; the lifecycle may still record it (check its history)"
        except ValidationError as err:
            return False, _validation_message(err)
        except Exception as err:  # the seed's contract: failures come back as (False, error)
            # Kept out of the caller's stderr (the seed's callers print the error they get).
            log.debug("%s failed", what, exc_info=True)
            return False, f"{what} failed: {type(err).__name__}: {err}"
        return (True, None) if result is None else result

    def _ok(self, make: Any, what: str) -> bool:
        ok, error = self._result(make, what)
        if not ok:
            log.warning("%s", error)
        self.last_error = error
        return ok


# A transition's metadata travels in a Temporal payload (capped at 2 MB) and a jsonb column.
MAX_METADATA_BYTES = 256 * 1024


def _json_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """Metadata as JSON (datetimes as ISO text, sets as lists, as supabase-py would send them);
    anything else is refused by name, and so is metadata too large to travel."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise _Refused(f"metadata must be a dict, not {type(metadata).__name__}")
    try:
        converted = to_jsonable_python(metadata)
        size = len(json.dumps(converted, allow_nan=False))
    except (PydanticSerializationError, ValueError, TypeError) as err:
        raise _Refused(f"metadata is not JSON: {err}") from None
    if size > MAX_METADATA_BYTES:
        raise _Refused(f"metadata is {size} bytes as JSON; at most {MAX_METADATA_BYTES}")
    return converted


def _valid(model: type[M], **fields: Any) -> M:
    """`model(**fields)`, or the refusal naming every field at fault."""
    try:
        return model(**fields)
    except ValidationError as err:
        raise _Refused(_validation_message(err)) from None


def _validation_message(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
