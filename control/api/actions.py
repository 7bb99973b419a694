"""The writes, once: each checks the caller's permission for this resource in its current state, then
acts through the resource's workflow (Temporal updates that answer yes or no). The single-resource
routes and bulk operations both call these, so a bulk item is refused exactly when the single call
would be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from control.api.auth import Principal
from control.api.context import ApiContext, require
from control.api.errors import ApiError, guarded
from control.api.schemas import Action, ActionResult, CommandIn
from control.sources import SourceError
from state.commands import CommandResult
from state.machines import FAILURE_STATES, ResourceState, machine_for
from state.models import ResourceRow


def _result(
    ctx: ApiContext, row: ResourceRow, action: str, principal: Principal, outcome: Any
) -> ActionResult:
    accepted, state, message = True, row.current_state, ""
    if isinstance(outcome, CommandResult):
        accepted, state, message = outcome.accepted, outcome.state, outcome.message
    return ActionResult(
        resource_id=row.resource_id,
        resource_type=row.resource_type,
        action=action,
        accepted=accepted,
        state=state,
        message=message,
        actor=principal.actor,
        temporal_ui=ctx.ui_link(row),
    )


def _what(row: ResourceRow) -> str:
    return f"{row.resource_type.value} {row.resource_id}"


async def decide(
    ctx: ApiContext, principal: Principal, row: ResourceRow, verb: str, reason: str
) -> ActionResult:
    """approve or reject."""
    require(ctx, principal, f"{verb}/{row.resource_type.value}")
    call = ctx.commands.approve if verb == "approve" else ctx.commands.reject
    outcome = await guarded(
        call(row.resource_type, row.resource_id, approver=principal.actor, reason=reason),
        timeout=ctx.api.command_timeout_seconds,
        what=_what(row),
    )
    return _result(ctx, row, verb, principal, outcome)


async def update_requirement(
    ctx: ApiContext, principal: Principal, row: ResourceRow, name: str, status: str, reason: str
) -> ActionResult:
    require(ctx, principal, f"requirement/{row.resource_type.value}/{name}")
    outcome = await guarded(
        ctx.commands.update_requirement(
            row.resource_type, row.resource_id, name, status, actor=principal.actor, reason=reason
        ),
        timeout=ctx.api.command_timeout_seconds,
        what=_what(row),
    )
    return _result(ctx, row, f"requirement:{name}={status}", principal, outcome)


async def transition(
    ctx: ApiContext, principal: Principal, row: ResourceRow, to_state: ResourceState, reason: str
) -> ActionResult:
    frm = row.current_state
    require(ctx, principal, f"transition/{row.resource_type.value}/{frm.value}/{to_state.value}")
    machine = machine_for(row.resource_type)
    if not machine.allows(frm, to_state):
        raise ApiError(
            409,
            "illegal_transition",
            f"{row.resource_type.value} machine v{machine.version} has no arrow "
            f"{frm.value} -> {to_state.value}",
        )
    outcome = await guarded(
        ctx.commands.transition(
            row.resource_type, row.resource_id, to_state.value, actor=principal.actor, reason=reason
        ),
        timeout=ctx.api.command_timeout_seconds,
        what=_what(row),
    )
    return _result(ctx, row, f"transition:{to_state.value}", principal, outcome)


def source_path(ctx: ApiContext, raw: str) -> Path:
    """A server-side path the caller named, refused unless it lies under a configured source root.
    A relative path is taken relative to the first root; `~` means nothing here (no user's home)."""
    roots = [r.resolve() for r in ctx.api.source_roots]
    try:
        path = Path(raw)
        if not path.is_absolute() and roots:
            path = roots[0] / path
        path = path.resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise ApiError(403, "path_not_allowed", f"{raw!r} is not a usable path: {exc}") from None
    if not any(path == root or path.is_relative_to(root) for root in roots):
        raise ApiError(
            403,
            "path_not_allowed",
            f"{raw} is outside the source roots ({', '.join(str(r) for r in roots) or 'none'})",
        )
    return path


async def command(
    ctx: ApiContext, principal: Principal, row: ResourceRow, name: str, body: CommandIn
) -> ActionResult:
    require(ctx, principal, f"command/{row.resource_type.value}/{name}/{row.current_state.value}")
    args: dict[str, Any] = {}
    if body.context_path is not None:
        # The client reads the directory and derives the new version from its content.
        args["path"] = str(source_path(ctx, body.context_path))
    elif body.version is not None:
        args["version"] = body.version
    if body.replicas is not None:
        args["replicas"] = body.replicas
    try:
        outcome = await guarded(
            ctx.commands.run_command(
                row.resource_type,
                row.resource_id,
                name,
                actor=principal.actor,
                reason=body.reason,
                **args,
            ),
            timeout=ctx.api.command_timeout_seconds,
            what=_what(row),
        )
    except SourceError as exc:
        raise ApiError(409, "invalid_source", str(exc)) from None
    return _result(ctx, row, name, principal, outcome)


def available_actions(
    ctx: ApiContext, principal: Principal | None, row: ResourceRow, waiting_on: list[str]
) -> list[Action]:
    """What the caller may do to this resource now: the page shows exactly these buttons."""
    if principal is None:
        return []
    t, state = row.resource_type.value, row.current_state
    machine = machine_for(row.resource_type)
    actions: list[Action] = []
    if any(w.startswith("approval") for w in waiting_on):
        decisions: tuple[Action, Action] = ("approve", "reject")
        actions += [v for v in decisions if ctx.access.allows(principal, f"{v}/{t}")]
    candidates: list[tuple[Action, bool]] = [
        ("retry", state in FAILURE_STATES),
        ("deactivate", state is ResourceState.ACTIVE),
        ("activate", state is ResourceState.INACTIVE),
        ("archive", machine.allows(state, ResourceState.ARCHIVED)),
    ]
    for name, meaningful in candidates:
        if meaningful and ctx.access.allows(principal, f"command/{t}/{name}/{state.value}"):
            actions.append(name)
    return actions
