"""Webhooks on transitions: the event a lifecycle hands to delivery, the JSON a receiver gets, the
subscription's event filter, and the HMAC-SHA256 signature both sides compute.

Signature scheme (Stripe's, so receivers can reuse what they know): the header
`X-RSM-Signature: t=<unix seconds>,v1=<hex>` where `v1 = HMAC_SHA256(secret, f"{t}.{raw body}")`.
The timestamp is inside the signed text, so a captured delivery cannot be replayed later than the
receiver's tolerance. Pure functions: receivers and tests verify with `verify_signature`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from state.machines import ResourceState, ResourceType
from state.models import ResourceRef

SIGNATURE_HEADER = "X-RSM-Signature"
EVENT_ID_HEADER = "X-RSM-Event-Id"
EVENT_TYPE_HEADER = "X-RSM-Event"
ATTEMPT_HEADER = "X-RSM-Delivery-Attempt"
SUBSCRIPTION_HEADER = "X-RSM-Subscription-Id"
EVENT_TYPE = "resource.transition"
DEFAULT_TOLERANCE_SECONDS = 300


class WebhookFailureType:
    """`ApplicationError.type` names of the delivery activity."""

    DELIVERY_FAILED = "WebhookDeliveryFailed"


class TransitionEvent(BaseModel):
    """One recorded transition, as `Lifecycle.move` hands it to `deliver_transition_webhooks`."""

    transition_id: int
    ref: ResourceRef
    owner_team: str = ""
    from_state: ResourceState | None
    to_state: ResourceState
    actor: str
    reason: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    recorded_at: datetime
    workflow_id: str | None = None
    run_id: str | None = None

    @property
    def event_id(self) -> str:
        # The database's transition id is unique and survives activity retries: receivers dedupe on it.
        return f"transition-{self.transition_id}"


class WebhookFilter(BaseModel):
    """Which transitions a subscription receives; an empty list places no condition."""

    resource_types: list[ResourceType] = Field(default_factory=list)
    resource_ids: list[str] = Field(default_factory=list)
    owner_teams: list[str] = Field(default_factory=list)
    from_states: list[ResourceState] = Field(default_factory=list)
    to_states: list[ResourceState] = Field(default_factory=list)

    def matches(self, event: TransitionEvent) -> bool:
        checks: list[tuple[list[Any], Any]] = [
            (self.resource_types, event.ref.resource_type),
            (self.resource_ids, event.ref.resource_id),
            (self.owner_teams, event.owner_team),
            (self.from_states, event.from_state),
            (self.to_states, event.to_state),
        ]
        return all(not allowed or value in allowed for allowed, value in checks)


class WebhookResource(BaseModel):
    type: ResourceType
    id: str
    owner_team: str
    workflow_id: str | None


class WebhookTransition(BaseModel):
    id: int
    from_state: ResourceState | None
    to_state: ResourceState
    actor: str
    reason: str
    metadata: dict[str, Any]
    recorded_at: datetime


class WebhookPayload(BaseModel):
    """The JSON body a receiver gets (the same bytes on every attempt, so the signature is too)."""

    id: str
    type: Literal["resource.transition"] = "resource.transition"
    created_at: datetime
    resource: WebhookResource
    transition: WebhookTransition

    @classmethod
    def of(cls, event: TransitionEvent) -> WebhookPayload:
        return cls(
            id=event.event_id,
            created_at=event.recorded_at,
            resource=WebhookResource(
                type=event.ref.resource_type,
                id=event.ref.resource_id,
                owner_team=event.owner_team,
                workflow_id=event.workflow_id,
            ),
            transition=WebhookTransition(
                id=event.transition_id,
                from_state=event.from_state,
                to_state=event.to_state,
                actor=event.actor,
                reason=event.reason,
                metadata=event.metadata,
                recorded_at=event.recorded_at,
            ),
        )

    def body(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), separators=(",", ":")).encode()


class WebhookSubscription(BaseModel):
    """A subscription as the API shows it: the secret is never part of it."""

    id: int
    url: str
    event_filter: WebhookFilter
    description: str
    active: bool
    created_by: str
    created_at: datetime


class SubscriptionTarget(BaseModel):
    """What the delivery activity needs of a subscription, secret included."""

    id: int
    url: str
    secret: str
    event_filter: WebhookFilter


DeliveryStatus = Literal["delivered", "failed", "rejected"]


class WebhookDelivery(BaseModel):
    id: int
    subscription_id: int
    transition_id: int
    resource_id: str
    attempt: int
    status: DeliveryStatus
    response_status: int | None
    error: str
    duration_ms: int | None
    created_at: datetime


class DeliveryAttempt(BaseModel):
    subscription_id: int
    transition_id: int
    resource_id: str
    attempt: int
    status: DeliveryStatus
    response_status: int | None = None
    error: str = ""
    duration_ms: int | None = None


class DeliveryReport(BaseModel):
    """What one run of the activity did; failures that Temporal will retry raise instead."""

    transition_id: int
    delivered: list[int] = Field(default_factory=list)
    rejected: list[int] = Field(default_factory=list)
    already_delivered: list[int] = Field(default_factory=list)


class SignatureError(ValueError):
    """A webhook signature header is missing, malformed, stale or does not match the body."""


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_digest(secret, t, body)}"


def verify_signature(
    secret: str,
    body: bytes,
    header: str | None,
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> int:
    """Check a delivery; returns its timestamp or raises SignatureError saying what is wrong."""
    if not header:
        raise SignatureError(f"no {SIGNATURE_HEADER} header")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureError(f"malformed {SIGNATURE_HEADER} element {item!r}")
        parts.setdefault(key, []).append(value)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        raise SignatureError(f"{SIGNATURE_HEADER} has no integer timestamp t=") from None
    current = time.time() if now is None else now
    if abs(current - t) > tolerance_seconds:
        raise SignatureError(f"timestamp {t} is outside the {tolerance_seconds}s tolerance")
    expected = _digest(secret, t, body)
    if not any(hmac.compare_digest(expected, v) for v in parts.get("v1", [])):
        raise SignatureError("signature does not match the body")
    return t


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
