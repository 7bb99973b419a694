"""record_transition and register_resource: the only way a lifecycle writes its state.

The store's named refusals become typed, non-retryable ApplicationErrors; an unreachable database
stays a plain exception so Temporal retries until it is back (nothing is lost while it is down).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from temporalio import activity
from temporalio.exceptions import ApplicationError

from state.errors import (
    FailureType,
    IllegalTransitionError,
    InvalidValueError,
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
    InvalidValueError: FailureType.INVALID_VALUE,
}


def _as_application_error(exc: StoreError) -> Exception:
    if isinstance(exc, StoreUnavailableError):
        return exc
    failure_type = _PERMANENT.get(type(exc))
    if failure_type is None:
        return exc
    return ApplicationError(str(exc), type=failure_type, non_retryable=True)


class TransitionRecorder:
    def __init__(
        self,
        store: StateStore,
        has_webhook_subscribers: Callable[[], Awaitable[bool]] | None = None,
        probe_ttl: float = 2.0,
    ) -> None:
        self._store = store
        self._has_subscribers = has_webhook_subscribers
        # One probe per couple of seconds per worker, not one query per transition.
        self._probe_ttl = probe_ttl
        self._probed_at = -probe_ttl
        self._subscribed = False

    async def _webhooks_wanted(self) -> bool:
        if self._has_subscribers is None:
            return False
        now = time.monotonic()
        if now - self._probed_at >= self._probe_ttl:
            self._subscribed = await self._has_subscribers()
            self._probed_at = now
        return self._subscribed

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
        return record.model_copy(update={"deliver_webhooks": await self._webhooks_wanted()})
