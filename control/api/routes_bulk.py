"""Bulk operations: one call with a filter (e.g. archive every inactive n8n workflow of a team) that
acts on each match through its own workflow, as the single-resource route would, and reports each
result. Nothing is all-or-nothing: a refusal for one resource does not stop the others. The routes
mirror the single-resource ones: /api/bulk/commands/{command}, /approve, /reject, /transition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse

from control.api import actions
from control.api.auth import Principal
from control.api.context import ApiContext, Ctx, Writer, require
from control.api.errors import ApiError, responses
from control.api.idempotency import IdempotencyKey, idempotent
from control.api.schemas import (
    ActionResult,
    BulkItem,
    BulkRequest,
    BulkResult,
    BulkTransition,
    CommandIn,
    CommandName,
)
from state import queries
from state.models import ResourceRow

router = APIRouter(prefix="/api/bulk", tags=["bulk"])

_OUTCOMES = {401: "forbidden", 403: "forbidden", 404: "refused", 409: "refused", 422: "refused"}


Act = Callable[[ApiContext, Principal, ResourceRow], Awaitable[ActionResult]]


async def _one(
    ctx: ApiContext,
    principal: Principal,
    row: ResourceRow,
    req: BulkRequest,
    act: Act,
    gate: asyncio.Semaphore,
) -> BulkItem:
    base = BulkItem(
        resource_id=row.resource_id,
        resource_type=row.resource_type,
        state_before=row.current_state,
        outcome="matched",
        status_code=200,
        detail="",
    )
    if req.dry_run:
        return base
    async with gate:
        try:
            result = await act(ctx, principal, row)
        except ApiError as exc:
            return base.model_copy(
                update={
                    "outcome": _OUTCOMES.get(exc.status, "failed"),
                    "status_code": exc.status,
                    "detail": exc.detail,
                }
            )
    return base.model_copy(
        update={
            "outcome": "accepted" if result.accepted else "refused",
            "detail": result.message,
            "state_after": result.state,
        }
    )


async def _bulk(
    ctx: ApiContext,
    principal: Principal,
    request: Request,
    body: BulkRequest,
    key: str | None,
    action: str,
    act: Act,
) -> JSONResponse:
    require(ctx, principal, "bulk")

    async def run() -> tuple[int, BulkResult]:
        f = body.filter
        flt = queries.ResourceFilter(
            resource_type=f.type,
            state=f.state,
            owner_team=f.owner_team,
            search=f.search,
            resource_ids=f.resource_ids,
        )
        rows = await queries.matching_resources(ctx.pool, flt, limit=body.max_matches + 1)
        if len(rows) > body.max_matches:
            raise ApiError(
                409,
                "too_many_matches",
                f"the filter matches more than {body.max_matches} resources: narrow it or raise"
                " max_matches",
            )
        gate = asyncio.Semaphore(ctx.api.bulk_concurrency)
        items = await asyncio.gather(*(_one(ctx, principal, r, body, act, gate) for r in rows))

        def count(outcome: str) -> int:
            return sum(1 for i in items if i.outcome == outcome)

        return 200, BulkResult(
            action=action,
            dry_run=body.dry_run,
            matched=len(items),
            accepted=count("accepted"),
            refused=count("refused"),
            forbidden=count("forbidden"),
            failed=count("failed"),
            items=list(items),
        )

    return await idempotent(ctx, request, principal, key, body, run)


ERRORS = responses(400, 401, 403, 409, 422, 503)


@router.post("/commands/{command}", response_model=BulkResult, responses=ERRORS)
async def bulk_command(
    ctx: Ctx,
    principal: Writer,
    request: Request,
    command: CommandName,
    body: Annotated[BulkRequest, Body()],
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Send one command to every resource the filter matches (e.g. archive every inactive n8n
    workflow of a team); `dry_run` lists the matches only. `items` says what happened to each."""

    async def act(c: ApiContext, p: Principal, row: ResourceRow) -> ActionResult:
        return await actions.command(c, p, row, command, CommandIn(reason=body.reason))

    return await _bulk(ctx, principal, request, body, idempotency_key, command, act)


@router.post("/approve", response_model=BulkResult, responses=ERRORS)
async def bulk_approve(
    ctx: Ctx,
    principal: Writer,
    request: Request,
    body: Annotated[BulkRequest, Body()],
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Approve every resource the filter matches (each still refuses self-approval)."""

    async def act(c: ApiContext, p: Principal, row: ResourceRow) -> ActionResult:
        return await actions.decide(c, p, row, "approve", body.reason)

    return await _bulk(ctx, principal, request, body, idempotency_key, "approve", act)


@router.post("/reject", response_model=BulkResult, responses=ERRORS)
async def bulk_reject(
    ctx: Ctx,
    principal: Writer,
    request: Request,
    body: Annotated[BulkRequest, Body()],
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Reject every resource the filter matches."""

    async def act(c: ApiContext, p: Principal, row: ResourceRow) -> ActionResult:
        return await actions.decide(c, p, row, "reject", body.reason)

    return await _bulk(ctx, principal, request, body, idempotency_key, "reject", act)


@router.post("/transition", response_model=BulkResult, responses=ERRORS)
async def bulk_transition(
    ctx: Ctx,
    principal: Writer,
    request: Request,
    body: Annotated[BulkTransition, Body()],
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Move every resource the filter matches along one arrow by hand, with a reason."""

    async def act(c: ApiContext, p: Principal, row: ResourceRow) -> ActionResult:
        return await actions.transition(c, p, row, body.to_state, body.reason)

    return await _bulk(ctx, principal, request, body, idempotency_key, "transition", act)
