"""Webhook subscriptions: create (the secret is shown once), list, show, deactivate, and the delivery
record of each. Managing them needs the `webhooks` permission (admin's by default): a subscription
makes this server send requests to a URL of the caller's choosing."""

from __future__ import annotations

import secrets
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.responses import JSONResponse

from control.api.context import ApiContext, Ctx, Writer, require
from control.api.errors import ApiError, responses
from control.api.idempotency import IdempotencyKey, idempotent
from control.api.schemas import DeliveryList, WebhookCreated, WebhookIn, WebhookList
from state.webhook_models import WebhookSubscription

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])

SubscriptionId = Annotated[int, Path(ge=1, le=2**62)]
ERRORS = responses(401, 403, 404, 422, 503)


def _check_url(ctx: ApiContext, url: str) -> None:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    if not host:
        raise ApiError(422, "invalid_url", f"{url!r} names no host")
    allowed = ctx.api.webhook_allowed_hosts
    if allowed and host not in allowed:
        raise ApiError(
            403, "host_not_allowed", f"webhooks may only go to {', '.join(allowed)}, not {host}"
        )


@router.post(
    "",
    status_code=201,
    response_model=WebhookCreated,
    responses=responses(400, 401, 403, 409, 422, 503),
)
async def create_webhook(
    ctx: Ctx,
    principal: Writer,
    request: Request,
    body: Annotated[WebhookIn, Body()],
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Subscribe a URL to transitions matching `event_filter`. Deliveries are JSON signed with
    HMAC-SHA256 (`X-RSM-Signature: t=<unix>,v1=<hex>` over `<t>.<body>`)."""
    require(ctx, principal, "webhooks")
    _check_url(ctx, body.url)

    async def run() -> tuple[int, WebhookCreated]:
        secret = body.secret or secrets.token_urlsafe(32)
        sub = await ctx.webhooks.create(
            url=body.url,
            secret=secret,
            event_filter=body.event_filter,
            description=body.description,
            actor=principal.actor,
        )
        return 201, WebhookCreated(subscription=sub, secret=secret)

    return await idempotent(ctx, request, principal, idempotency_key, body, run)


@router.get("", response_model=WebhookList, responses=responses(401, 403, 422, 503))
async def list_webhooks(ctx: Ctx, principal: Writer, include_inactive: bool = False) -> WebhookList:
    require(ctx, principal, "webhooks")
    return WebhookList(items=await ctx.webhooks.list_all(include_inactive=include_inactive))


async def _subscription(ctx: ApiContext, subscription_id: int) -> WebhookSubscription:
    sub = await ctx.webhooks.get(subscription_id)
    if sub is None:
        raise ApiError(404, "not_found", f"no webhook subscription {subscription_id}")
    return sub


@router.get("/{subscription_id}", response_model=WebhookSubscription, responses=ERRORS)
async def get_webhook(
    ctx: Ctx, principal: Writer, subscription_id: SubscriptionId
) -> WebhookSubscription:
    require(ctx, principal, "webhooks")
    return await _subscription(ctx, subscription_id)


@router.delete("/{subscription_id}", response_model=WebhookSubscription, responses=ERRORS)
async def delete_webhook(
    ctx: Ctx, principal: Writer, subscription_id: SubscriptionId
) -> WebhookSubscription:
    """Stop deliveries (the subscription and its delivery record are kept)."""
    require(ctx, principal, "webhooks")
    sub = await ctx.webhooks.deactivate(subscription_id)
    if sub is None:
        raise ApiError(404, "not_found", f"no webhook subscription {subscription_id}")
    return sub


@router.get("/{subscription_id}/deliveries", response_model=DeliveryList, responses=ERRORS)
async def list_deliveries(
    ctx: Ctx,
    principal: Writer,
    subscription_id: SubscriptionId,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeliveryList:
    """Every delivery attempt, newest first: status, HTTP answer, error, duration."""
    require(ctx, principal, "webhooks")
    await _subscription(ctx, subscription_id)
    return DeliveryList(
        items=await ctx.webhooks.deliveries(subscription_id=subscription_id, limit=limit)
    )
