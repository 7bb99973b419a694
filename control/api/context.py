"""What every route needs (stores, the lifecycle client, the access policy) and the dependencies that
hand it out: the caller's identity, permission checks, the resource a path names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool

from control.api.auth import AccessPolicy, Principal
from control.api.errors import ApiError, unauthorized
from control.api.settings import ApiSettings
from state.commands import CommandResult
from state.idempotency import IdempotencyStore
from state.machines import ResourceType
from state.models import ResourceRow, workflow_id_for
from state.postgres import PostgresStore
from state.settings import RsmSettings
from state.webhook_store import WebhookStore


class LifecycleCommands(Protocol):
    """The part of control.client.LifecycleClient the API drives (the gates issue's commands)."""

    settings: RsmSettings

    async def approve(
        self, resource_type: ResourceType | str, resource_id: str, approver: str, reason: str
    ) -> CommandResult: ...

    async def reject(
        self, resource_type: ResourceType | str, resource_id: str, approver: str, reason: str
    ) -> CommandResult: ...

    async def update_requirement(
        self,
        resource_type: ResourceType | str,
        resource_id: str,
        name: str,
        status: str,
        actor: str,
        reason: str = "",
    ) -> Any: ...

    async def run_command(
        self,
        resource_type: ResourceType | str,
        resource_id: str,
        command: str,
        actor: str,
        reason: str = "",
        **args: Any,
    ) -> CommandResult: ...

    async def transition(
        self,
        resource_type: ResourceType | str,
        resource_id: str,
        to_state: str,
        actor: str,
        reason: str,
    ) -> CommandResult: ...


@dataclass
class ApiContext:
    settings: RsmSettings
    api: ApiSettings
    store: PostgresStore
    pool: AsyncConnectionPool
    lifecycle: Any  # a LifecycleClient; typed as LifecycleCommands where commands are sent
    access: AccessPolicy
    webhooks: WebhookStore
    idempotency: IdempotencyStore

    def ui_link(self, row: ResourceRow) -> str:
        return self.settings.workflow_ui_link(
            row.workflow_id or workflow_id_for(row.resource_type, row.resource_id)
        )

    @property
    def commands(self) -> LifecycleCommands:
        return self.lifecycle


def get_ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(get_ctx)]

_bearer = HTTPBearer(auto_error=False, description="A token from the API's access configuration.")


def optional_principal(
    ctx: Ctx,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    if credentials is None:
        return None
    principal = ctx.access.authenticate(credentials.credentials)
    if principal is None:
        raise unauthorized("unknown bearer token")
    return principal


def reader(
    ctx: Ctx, principal: Annotated[Principal | None, Depends(optional_principal)]
) -> Principal | None:
    if principal is None and not ctx.access.anonymous_read:
        raise unauthorized("reads need a bearer token here")
    return principal


def writer(principal: Annotated[Principal | None, Depends(optional_principal)]) -> Principal:
    if principal is None:
        raise unauthorized("writes need a bearer token (Authorization: Bearer <token>)")
    return principal


Reader = Annotated[Principal | None, Depends(reader)]
Writer = Annotated[Principal, Depends(writer)]


def require(ctx: ApiContext, principal: Principal, permission: str) -> None:
    if not ctx.access.allows(principal, permission):
        raise ApiError(
            403,
            "forbidden",
            f"{principal.actor} ({principal.role.value}) may not {permission}",
        )


async def resource_or_404(ctx: ApiContext, resource_id: str) -> ResourceRow:
    row = await ctx.store.get_resource(resource_id)
    if row is None:
        raise ApiError(404, "not_found", f"no resource {resource_id!r}")
    return row
