"""Read routes: every answer comes from the database (the audit record), as the CLI's do."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from control.api.actions import available_actions
from control.api.context import Ctx, Reader
from control.api.errors import ApiError, responses
from control.api.schemas import (
    AwaitingList,
    AwaitingOut,
    Health,
    Me,
    Overview,
    Readiness,
    ReadinessSummary,
    ResourceDetail,
    ResourceList,
    ResourceOut,
    TransitionList,
    TransitionOut,
)
from state import queries
from state.machines import ResourceState, ResourceType, machine_for

router = APIRouter(prefix="/api", tags=["resources"])

ResourceIdPath = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
TypeQuery = Annotated[ResourceType | None, Query(alias="type")]
OwnerQuery = Annotated[
    str | None, Query(alias="owner", max_length=63, pattern=r"^[A-Za-z0-9._-]*$")
]
READ_ERRORS = responses(401, 422, 503)
# Reads work without a token where the access configuration allows anonymous reading.
OPTIONAL_AUTH: dict[str, Any] = {"security": [{}, {"HTTPBearer": []}]}


@router.get(
    "/me", response_model=Me, responses=READ_ERRORS, tags=["session"], openapi_extra=OPTIONAL_AUTH
)
async def me(ctx: Ctx, principal: Reader) -> Me:
    """Who the token belongs to and what it may do (the page hides what it may not)."""
    return Me(
        authenticated=principal is not None,
        actor=principal.actor if principal else None,
        role=principal.role.value if principal else None,
        permissions=list(ctx.access.permissions[principal.role]) if principal else [],
        anonymous_read=ctx.access.anonymous_read,
        temporal_ui_url=ctx.settings.temporal_ui_url,
        refresh_seconds=ctx.api.page_refresh_seconds,
        resource_types=list(ResourceType),
        states=list(ResourceState),
    )


@router.get("/health", response_model=Health, responses=responses(422, 503), tags=["session"])
async def health(ctx: Ctx) -> Health:
    """Whether the database and Temporal answer."""
    await queries.fetch(ctx.pool, "select 1")
    try:
        await ctx.lifecycle.client.service_client.check_health()
    except Exception as exc:
        raise ApiError(503, "unavailable", f"Temporal: {exc}") from None
    return Health(database="ok", temporal="ok")


@router.get(
    "/resources", response_model=ResourceList, responses=READ_ERRORS, openapi_extra=OPTIONAL_AUTH
)
async def list_resources(
    ctx: Ctx,
    principal: Reader,
    resource_type: TypeQuery = None,
    state: ResourceState | None = None,
    search: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")] = None,
    owner: OwnerQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> ResourceList:
    """Resources by type, state, owner team and a search over id and name; paginated."""
    flt = queries.ResourceFilter(
        resource_type=resource_type, state=state, owner_team=owner, search=search
    )
    page = await queries.list_resources(ctx.pool, flt, limit=limit, offset=offset)
    waiting = (
        {a.resource_id: a.waiting_on for a in await queries.awaiting_action(ctx.pool)}
        if principal is not None
        else {}
    )
    items = [
        ResourceOut(
            **row.model_dump(),
            temporal_ui=ctx.ui_link(row),
            actions=available_actions(ctx, principal, row, waiting.get(row.resource_id, [])),
        )
        for row in page.items
    ]
    return ResourceList(items=items, total=page.total, limit=page.limit, offset=page.offset)


@router.get(
    "/resources/overview",
    response_model=Overview,
    responses=READ_ERRORS,
    openapi_extra=OPTIONAL_AUTH,
)
async def overview(ctx: Ctx, principal: Reader) -> Overview:
    """How many resources of each type are in each state (kept current by record_transition)."""
    counts = await queries.overview(ctx.pool)
    by_type: dict[str, dict[str, int]] = {t.value: {} for t in ResourceType}
    for c in counts:
        by_type[c.resource_type.value][c.state.value] = c.count
    totals = {t: sum(states.values()) for t, states in by_type.items()}
    awaiting = await queries.awaiting_action(ctx.pool)
    return Overview(
        counts=counts,
        by_type=by_type,
        totals=totals,
        total=sum(totals.values()),
        awaiting_action=len(awaiting),
    )


@router.get(
    "/resources/awaiting-action",
    response_model=AwaitingList,
    responses=READ_ERRORS,
    openapi_extra=OPTIONAL_AUTH,
)
async def awaiting_action(
    ctx: Ctx, principal: Reader, resource_type: TypeQuery = None, owner: OwnerQuery = None
) -> AwaitingList:
    """Resources that wait on a person or a thing: failed, awaiting dependencies, or with pending
    requirements or approvals; `waiting_on` names each (`approval:...`, `credential:...`)."""
    rows = await queries.awaiting_action(ctx.pool, resource_type=resource_type, owner_team=owner)
    resources = {}
    if principal is not None and rows:
        ids = queries.ResourceFilter(resource_ids=[a.resource_id for a in rows])
        matched = await queries.matching_resources(ctx.pool, ids, limit=len(rows))
        resources = {r.resource_id: r for r in matched}
    items: list[AwaitingOut] = []
    for a in rows:
        row = resources.get(a.resource_id)
        items.append(
            AwaitingOut(
                **a.model_dump(),
                temporal_ui=ctx.settings.workflow_ui_link(
                    f"resource/{a.resource_type.value}/{a.resource_id}"
                ),
                actions=available_actions(ctx, principal, row, a.waiting_on) if row else [],
            )
        )
    return AwaitingList(items=items, total=len(items))


@router.get(
    "/resources/readiness",
    response_model=Readiness,
    responses=READ_ERRORS,
    openapi_extra=OPTIONAL_AUTH,
)
async def readiness(
    ctx: Ctx, principal: Reader, resource_type: TypeQuery = None, owner: OwnerQuery = None
) -> Readiness:
    """Every resource that is not archived: active or not, and what it still waits on."""
    items = await queries.readiness(ctx.pool, resource_type=resource_type, owner_team=owner)
    by_type: dict[str, dict[str, int]] = {}
    for item in items:
        entry = by_type.setdefault(item.resource_type.value, {"total": 0, "ready": 0})
        entry["total"] += 1
        entry["ready"] += int(item.ready)
    ready = sum(1 for i in items if i.ready)
    return Readiness(
        summary=ReadinessSummary(
            total=len(items), ready=ready, not_ready=len(items) - ready, by_type=by_type
        ),
        items=items,
    )


@router.get(
    "/resources/{resource_id}",
    response_model=ResourceDetail,
    responses=responses(401, 404, 422, 503),
    openapi_extra=OPTIONAL_AUTH,
)
async def get_resource(ctx: Ctx, principal: Reader, resource_id: ResourceIdPath) -> ResourceDetail:
    """One resource: its row, what it waits on, its requirements, the arrows out of its state."""
    row = await ctx.store.get_resource(resource_id)
    if row is None:
        raise ApiError(404, "not_found", f"no resource {resource_id!r}")
    awaiting = await queries.awaiting_action(ctx.pool, resource_id=resource_id)
    waiting_on = awaiting[0].waiting_on if awaiting else []
    mcp: dict[str, Any] | None = None
    if row.resource_type is ResourceType.MCP_SERVER:
        status = await ctx.store.mcp_status(resource_id)
        mcp = json.loads(json.dumps(status, default=str)) if status else None
    return ResourceDetail(
        resource=ResourceOut(
            **row.model_dump(),
            temporal_ui=ctx.ui_link(row),
            actions=available_actions(ctx, principal, row, waiting_on),
        ),
        waiting_on=waiting_on,
        requirements=await queries.requirements(ctx.pool, resource_id),
        allowed_transitions=sorted(machine_for(row.resource_type).targets(row.current_state)),
        mcp=mcp,
    )


@router.get(
    "/resources/{resource_id}/transitions",
    response_model=TransitionList,
    responses=responses(401, 404, 422, 503),
    openapi_extra=OPTIONAL_AUTH,
)
async def list_transitions(
    ctx: Ctx,
    principal: Reader,
    resource_id: ResourceIdPath,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> TransitionList:
    """The resource's history, oldest first: from, to, who, why, when."""
    if await ctx.store.get_resource(resource_id) is None:
        raise ApiError(404, "not_found", f"no resource {resource_id!r}")
    records = await ctx.store.list_transitions(resource_id, limit=limit)
    return TransitionList(
        resource_id=resource_id,
        items=[TransitionOut.model_validate(r.model_dump()) for r in records],
    )
