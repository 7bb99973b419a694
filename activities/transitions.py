"""record_transition and register_resource: the only way a lifecycle writes its state.

The store's named refusals become typed, non-retryable ApplicationErrors; an unreachable database
stays a plain exception so Temporal retries until it is back (nothing is lost while it is down).
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from state.errors import (
    FailureType,
    IllegalTransitionError,
    SchemaDriftError,
    StaleStateError,
    StoreError,
    StoreUnavailableError,
    UnknownResourceError,
)
from state.models import RegisterResourceRequest, ResourceRow, TransitionRecord, TransitionRequest
from state.store import StateStore

_PERMANENT: dict[type[StoreError], str] = {
    IllegalTransitionError: FailureType.ILLEGAL_TRANSITION,
    UnknownResourceError: FailureType.UNKNOWN_RESOURCE,
    StaleStateError: FailureType.STALE_STATE,
    SchemaDriftError: FailureType.SCHEMA_DRIFT,
}


def _as_application_error(exc: StoreError) -> Exception:
    if isinstance(exc, StoreUnavailableError):
        return exc
    failure_type = _PERMANENT.get(type(exc))
    if failure_type is None:
        return exc
    return ApplicationError(str(exc), type=failure_type, non_retryable=True)


class TransitionRecorder:
    def __init__(self, store: StateStore) -> None:
        self._store = store

    @activity.defn(name="register_resource")
    async def register_resource(self, req: RegisterResourceRequest) -> ResourceRow:
        try:
            return await self._store.register_resource(req)
        except StoreError as exc:
            raise _as_application_error(exc) from exc

    @activity.defn(name="record_transition")
    async def record_transition(self, req: TransitionRequest) -> TransitionRecord:
        try:
            record = await self._store.record_transition(req)
        except StoreError as exc:
            activity.logger.error(
                "could not record %s -> %s for %s: %s",
                req.from_state,
                req.to_state,
                req.ref.resource_id,
                exc,
            )
            raise _as_application_error(exc) from exc
        return record
