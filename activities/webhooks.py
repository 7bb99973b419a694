"""deliver_transition_webhooks: POST one transition, signed with HMAC-SHA256, to every subscription
whose filter matches it, and record each attempt in `webhook_deliveries`.

Temporal does the retrying: when a receiver is down or answers 5xx/408/429, the activity records the
failed attempt and raises a retryable ApplicationError; the next attempt skips the subscriptions that
already have the event, so each receiver gets it once per success (receivers still dedupe on
`X-RSM-Event-Id`, since a receiver may answer after our timeout). Any other 4xx is the receiver
refusing the event: recorded as `rejected`, never retried.
"""

from __future__ import annotations

import asyncio
import time

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from state.webhook_models import (
    ATTEMPT_HEADER,
    EVENT_ID_HEADER,
    EVENT_TYPE,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    SUBSCRIPTION_HEADER,
    DeliveryAttempt,
    DeliveryReport,
    SubscriptionTarget,
    TransitionEvent,
    WebhookFailureType,
    WebhookPayload,
    signature_header,
)
from state.webhook_store import WebhookStore

# Statuses that mean "try again later" rather than "no".
_RETRYABLE_STATUSES = frozenset({408, 425, 429})
USER_AGENT = "rsm-webhooks/1"


class WebhookDeliverer:
    """`store` None: this worker's state store has no direct Postgres connection (Supabase over
    PostgREST), so there are no subscriptions to read; the activity still answers, so lifecycles
    never wait on it."""

    def __init__(
        self,
        store: WebhookStore | None,
        http: httpx.AsyncClient | None = None,
        *,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._store = store
        self._http = http
        self._timeout = timeout_seconds

    @activity.defn(name="deliver_transition_webhooks")
    async def deliver_transition_webhooks(self, event: TransitionEvent) -> DeliveryReport:
        if self._store is None:
            return DeliveryReport(transition_id=event.transition_id)
        attempt = activity.info().attempt
        todo, done = await self._store.targets_for(event)
        report = DeliveryReport(transition_id=event.transition_id, already_delivered=done)
        if not todo:
            return report
        body = WebhookPayload.of(event).body()
        if self._http is not None:
            results = await self._post_all(self._http, todo, event, body, attempt)
        else:
            async with httpx.AsyncClient() as http:
                results = await self._post_all(http, todo, event, body, attempt)
        failures: list[str] = []
        for target, result in zip(todo, results, strict=True):
            await self._store.record(result)
            if result.status == "delivered":
                report.delivered.append(target.id)
            elif result.status == "rejected":
                report.rejected.append(target.id)
                activity.logger.warning(
                    "webhook %s rejected %s: %s", target.url, event.event_id, result.error
                )
            else:
                failures.append(f"subscription {target.id} ({target.url}): {result.error}")
        if failures:
            # Retryable on purpose: Temporal's retry policy (set by the lifecycle) spaces the attempts.
            raise ApplicationError(
                f"{len(failures)} webhook delivery(ies) of {event.event_id} failed: "
                + "; ".join(failures),
                report.model_dump(mode="json"),
                type=WebhookFailureType.DELIVERY_FAILED,
            )
        return report

    async def _post_all(
        self,
        http: httpx.AsyncClient,
        targets: list[SubscriptionTarget],
        event: TransitionEvent,
        body: bytes,
        attempt: int,
    ) -> list[DeliveryAttempt]:
        return list(
            await asyncio.gather(*(self._post(http, t, event, body, attempt) for t in targets))
        )

    async def _post(
        self,
        http: httpx.AsyncClient,
        target: SubscriptionTarget,
        event: TransitionEvent,
        body: bytes,
        attempt: int,
    ) -> DeliveryAttempt:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: signature_header(target.secret, body),
            EVENT_ID_HEADER: event.event_id,
            EVENT_TYPE_HEADER: EVENT_TYPE,
            ATTEMPT_HEADER: str(attempt),
            SUBSCRIPTION_HEADER: str(target.id),
        }
        base = DeliveryAttempt(
            subscription_id=target.id,
            transition_id=event.transition_id,
            resource_id=event.ref.resource_id,
            attempt=attempt,
            status="failed",
        )
        started = time.monotonic()
        try:
            response = await http.post(
                target.url, content=body, headers=headers, timeout=self._timeout
            )
        except httpx.HTTPError as exc:
            return base.model_copy(
                update={
                    "error": f"{type(exc).__name__}: {exc}"[:500],
                    "duration_ms": _ms(started),
                }
            )
        code = response.status_code
        if 200 <= code < 300:
            status = "delivered"
        elif code >= 500 or code in _RETRYABLE_STATUSES:
            status = "failed"
        else:
            status = "rejected"
        return base.model_copy(
            update={
                "status": status,
                "response_status": code,
                "error": "" if status == "delivered" else f"HTTP {code}: {response.text[:300]}",
                "duration_ms": _ms(started),
            }
        )


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
