"""Write routes: register, approve, reject, requirements, manual transitions, commands. Each needs a
bearer token whose role allows the move, acts through the resource's workflow, answers 401/403/404/409
with a reason when it cannot, and accepts an `Idempotency-Key`."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Body, Path, Request
from fastapi.responses import JSONResponse

from control.api import actions
from control.api.context import ApiContext, Ctx, Writer, require, resource_or_404
from control.api.errors import ApiError, guarded, responses
from control.api.idempotency import IdempotencyKey, idempotent
from control.api.schemas import (
    ActionResult,
    CommandIn,
    CommandName,
    DecisionIn,
    PolicyIn,
    Registered,
    RegisterMcp,
    RegisterN8n,
    RegisterRequest,
    RegisterTeam,
    RequirementIn,
    TransitionIn,
)
from control.client import RegistrationRefused
from control.sources import SourceError, resource_id_from
from control.team_client import register_team
from state.machines import ResourceType
from state.models import ApprovalPolicy, LifecyclePolicy, RequirementSpec, workflow_id_for
from state.team_models import ManifestError

router = APIRouter(prefix="/api/resources", tags=["actions"])

ResourceIdPath = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
WRITE_ERRORS = responses(400, 401, 403, 404, 409, 422, 503)


def _policy(p: PolicyIn, actor: str) -> LifecyclePolicy:
    return LifecyclePolicy(
        actor=actor,
        approval=ApprovalPolicy(required=p.approval_required, approvers=list(p.approvers)),
        requirements=[RequirementSpec(name=n) for n in p.requirements],
    )


async def _register(ctx: ApiContext, actor: str, body: RegisterRequest) -> Registered:
    lc = ctx.lifecycle
    timeout = ctx.api.command_timeout_seconds
    try:
        if isinstance(body, RegisterMcp):
            path = actions.source_path(ctx, body.path)
            rid = body.id or resource_id_from(path.name)
            handle = await guarded(
                lc.register_mcp(
                    path,
                    resource_id=rid,
                    owner_team=body.owner_team,
                    actor=actor,
                    policy=_policy(body.policy, actor),
                    runtime=body.runtime,
                ),
                timeout=timeout,
                what=f"mcp_server {rid}",
            )
        elif isinstance(body, RegisterN8n):
            # Imported here: the n8n starter lives with its CLI command.
            from control.cli_n8n import start_n8n_lifecycle

            rid = body.id
            name = body.name or str(body.workflow.get("name") or rid)
            handle = await guarded(
                start_n8n_lifecycle(
                    lc,
                    json.dumps(body.workflow),
                    source="api",
                    name=name,
                    resource_id=rid,
                    owner_team=body.owner_team,
                    actor=actor,
                    deploy_inactive=body.deploy_inactive,
                    policy=_policy(body.policy, actor),
                ),
                timeout=timeout,
                what=f"n8n_workflow {rid}",
            )
        else:
            assert isinstance(body, RegisterTeam)
            path = actions.source_path(ctx, body.path)
            handle = await guarded(
                register_team(
                    lc,
                    path,
                    actor=actor,
                    owner=body.owner_team,
                    policy=_policy(body.policy, actor),
                    resource_id=body.id,
                ),
                timeout=timeout,
                what=f"team {body.id or path.name}",
            )
    except (SourceError, ManifestError) as exc:
        raise ApiError(409, "invalid_source", str(exc)) from None
    except RegistrationRefused as exc:
        raise ApiError(409, "registration_refused", str(exc)) from None
    rtype = ResourceType(body.type)
    # The id the lifecycle was started under (a default derived from the source when none was given).
    rid = handle.id.rsplit("/", 1)[-1]
    return Registered(
        resource_id=rid,
        resource_type=rtype,
        workflow_id=handle.id,
        temporal_ui=ctx.settings.workflow_ui_link(workflow_id_for(rtype, rid)),
        actor=actor,
    )


@router.post(
    "",
    status_code=202,
    response_model=Registered,
    responses=responses(400, 401, 403, 409, 422, 503),
)
async def register(
    ctx: Ctx,
    principal: Writer,
    request: Request,
    body: Annotated[RegisterRequest, Body()],
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Register a resource and start its lifecycle (registering again is harmless)."""
    require(ctx, principal, f"register/{body.type}")

    async def run() -> tuple[int, Registered]:
        return 202, await _register(ctx, principal.actor, body)

    return await idempotent(ctx, request, principal, idempotency_key, body, run)


@router.post("/{resource_id}/approve", response_model=ActionResult, responses=WRITE_ERRORS)
async def approve(
    ctx: Ctx,
    principal: Writer,
    request: Request,
    resource_id: ResourceIdPath,
    body: Annotated[DecisionIn, Body()] = DecisionIn(),
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Approve a resource that waits for approval (not your own registration)."""
    return await _decide(ctx, principal, request, resource_id, body, idempotency_key, "approve")


@router.post("/{resource_id}/reject", response_model=ActionResult, responses=WRITE_ERRORS)
async def reject(
    ctx: Ctx,
    principal: Writer,
    request: Request,
    resource_id: ResourceIdPath,
    body: Annotated[DecisionIn, Body()] = DecisionIn(),
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Reject a resource that waits for approval."""
    return await _decide(ctx, principal, request, resource_id, body, idempotency_key, "reject")


async def _decide(
    ctx: ApiContext,
    principal: Writer,
    request: Request,
    resource_id: str,
    body: DecisionIn,
    key: str | None,
    verb: str,
) -> JSONResponse:
    async def run() -> tuple[int, ActionResult]:
        row = await resource_or_404(ctx, resource_id)
        return 200, await actions.decide(ctx, principal, row, verb, body.reason)

    return await idempotent(ctx, request, principal, key, body, run)


@router.post(
    "/{resource_id}/requirements/{name}", response_model=ActionResult, responses=WRITE_ERRORS
)
async def update_requirement(
    ctx: Ctx,
    principal: Writer,
    request: Request,
    resource_id: ResourceIdPath,
    name: Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[^\x00/]+$")],
    body: Annotated[RequirementIn, Body()],
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Mark a requirement satisfied, failed, waived or pending again."""

    async def run() -> tuple[int, ActionResult]:
        row = await resource_or_404(ctx, resource_id)
        result = await actions.update_requirement(
            ctx, principal, row, name, body.status, body.reason
        )
        return 200, result

    return await idempotent(ctx, request, principal, idempotency_key, body, run)


@router.post("/{resource_id}/transition", response_model=ActionResult, responses=WRITE_ERRORS)
async def manual_transition(
    ctx: Ctx,
    principal: Writer,
    request: Request,
    resource_id: ResourceIdPath,
    body: Annotated[TransitionIn, Body()],
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Move a resource along one arrow by hand, with a reason; checked against its machine."""

    async def run() -> tuple[int, ActionResult]:
        row = await resource_or_404(ctx, resource_id)
        return 200, await actions.transition(ctx, principal, row, body.to_state, body.reason)

    return await idempotent(ctx, request, principal, idempotency_key, body, run)


@router.post(
    "/{resource_id}/commands/{command}", response_model=ActionResult, responses=WRITE_ERRORS
)
async def run_command(
    ctx: Ctx,
    principal: Writer,
    request: Request,
    resource_id: ResourceIdPath,
    command: CommandName,
    body: Annotated[CommandIn, Body()] = CommandIn(),
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """An operator command: retry, deactivate, activate, redeploy, scale, archive."""

    async def run() -> tuple[int, ActionResult]:
        row = await resource_or_404(ctx, resource_id)
        return 200, await actions.command(ctx, principal, row, command, body)

    return await idempotent(ctx, request, principal, idempotency_key, body, run)
