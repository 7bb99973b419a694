"""Read queries the HTTP API and the Resources page need beyond the store protocol: filtered and
paginated resource lists, the awaiting-action inbox, readiness, requirements, the overview.

They read the seed's tables and views directly (the same rows the CLI reads), over the PostgresStore's
connection pool, so the API opens no second pool.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from state.errors import StoreError, StoreUnavailableError
from state.machines import ResourceState, ResourceType
from state.models import ResourceRow
from state.postgres import PostgresStore


def pool_of(store: PostgresStore) -> AsyncConnectionPool:
    """The store's pool (PostgresStore exposes no public accessor yet)."""
    pool = getattr(store, "pool", None)
    return pool if isinstance(pool, AsyncConnectionPool) else store._pool


async def fetch(
    pool: AsyncConnectionPool, sql: str, params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    try:
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, params)
            return await cur.fetchall() if cur.description else []
    except psycopg.OperationalError as exc:
        raise StoreUnavailableError(f"database unavailable: {exc}") from exc
    except psycopg.Error as exc:
        raise StoreError(exc.diag.message_primary or str(exc)) from exc


def like_pattern(text: str) -> str:
    """A substring ILIKE pattern in which the user's % and _ mean themselves."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class ResourceFilter(BaseModel):
    resource_type: ResourceType | None = None
    state: ResourceState | None = None
    owner_team: str | None = None
    search: str | None = None
    resource_ids: list[str] | None = None

    def is_empty(self) -> bool:
        return not (
            self.resource_type or self.state or self.owner_team or self.search or self.resource_ids
        )

    def params(self) -> dict[str, Any]:
        return {
            "type": self.resource_type.value if self.resource_type else None,
            "state": self.state.value if self.state else None,
            "owner": self.owner_team or None,
            "search": like_pattern(self.search) if self.search else None,
            "ids": self.resource_ids,
        }


_WHERE = """
    (%(type)s::text is null or r.resource_type = %(type)s)
    and (%(state)s::text is null or r.current_state = %(state)s)
    and (%(owner)s::text is null or r.owner_team = %(owner)s)
    and (%(search)s::text is null or r.resource_id ilike %(search)s or r.name ilike %(search)s)
    and (%(ids)s::text[] is null or r.resource_id = any(%(ids)s::text[]))
"""


class ResourcePage(BaseModel):
    items: list[ResourceRow]
    total: int
    limit: int
    offset: int


async def list_resources(
    pool: AsyncConnectionPool, flt: ResourceFilter, *, limit: int = 50, offset: int = 0
) -> ResourcePage:
    params = {**flt.params(), "limit": limit, "offset": offset}
    rows = await fetch(
        pool,
        f"""
        select r.*, count(*) over () as total_count
        from public.resource_states r
        where {_WHERE}
        order by r.resource_type, r.resource_id
        limit %(limit)s offset %(offset)s
        """,
        params,
    )
    if rows:
        total = int(rows[0]["total_count"])
    elif offset:
        # Past the end: the window count is not available, so count separately.
        counted = await fetch(
            pool, f"select count(*) as n from public.resource_states r where {_WHERE}", params
        )
        total = int(counted[0]["n"])
    else:
        total = 0
    return ResourcePage(
        items=[ResourceRow.model_validate(r) for r in rows], total=total, limit=limit, offset=offset
    )


async def matching_resources(
    pool: AsyncConnectionPool, flt: ResourceFilter, *, limit: int
) -> list[ResourceRow]:
    rows = await fetch(
        pool,
        f"select r.* from public.resource_states r where {_WHERE}"
        " order by r.resource_type, r.resource_id limit %(limit)s",
        {**flt.params(), "limit": limit},
    )
    return [ResourceRow.model_validate(r) for r in rows]


class StateCount(BaseModel):
    resource_type: ResourceType
    state: ResourceState
    count: int


async def overview(pool: AsyncConnectionPool) -> list[StateCount]:
    rows = await fetch(
        pool,
        "select resource_type, state, count from public.resource_state_overview"
        " order by resource_type, state",
    )
    return [StateCount.model_validate(r) for r in rows]


class AwaitingRow(BaseModel):
    resource_id: str
    resource_type: ResourceType
    name: str
    owner_team: str
    current_state: ResourceState
    waiting_on: list[str]
    updated_at: datetime


async def awaiting_action(
    pool: AsyncConnectionPool,
    *,
    resource_type: ResourceType | None = None,
    owner_team: str | None = None,
    resource_id: str | None = None,
) -> list[AwaitingRow]:
    rows = await fetch(
        pool,
        """
        select resource_id, resource_type, name, owner_team, current_state, waiting_on, updated_at
        from public.resources_awaiting_action
        where (%(type)s::text is null or resource_type = %(type)s)
          and (%(owner)s::text is null or owner_team = %(owner)s)
          and (%(id)s::text is null or resource_id = %(id)s)
        order by updated_at desc, resource_id
        """,
        {
            "type": resource_type.value if resource_type else None,
            "owner": owner_team or None,
            "id": resource_id,
        },
    )
    return [AwaitingRow.model_validate(r) for r in rows]


class Requirement(BaseModel):
    name: str
    requirement_type: str
    status: str
    details: dict[str, Any] = Field(default_factory=dict)
    updated_at: datetime


async def requirements(pool: AsyncConnectionPool, resource_id: str) -> list[Requirement]:
    rows = await fetch(
        pool,
        "select name, requirement_type, status, details, updated_at"
        " from public.deployment_requirements where resource_id = %(id)s"
        " order by requirement_type, name",
        {"id": resource_id},
    )
    return [Requirement.model_validate(r) for r in rows]


class ReadinessRow(BaseModel):
    resource_id: str
    resource_type: ResourceType
    name: str
    owner_team: str
    current_state: ResourceState
    ready: bool
    waiting_on: list[str]
    pending_requirements: int
    endpoint: str | None = None
    healthy_at: datetime | None = None
    updated_at: datetime


async def readiness(
    pool: AsyncConnectionPool,
    *,
    resource_type: ResourceType | None = None,
    owner_team: str | None = None,
) -> list[ReadinessRow]:
    """Every resource that is not archived: is it active, and if not, what does it still wait on."""
    rows = await fetch(
        pool,
        """
        select r.resource_id, r.resource_type, r.name, r.owner_team, r.current_state,
               r.current_state = 'active' as ready,
               coalesce(a.waiting_on, '{}') as waiting_on,
               (select count(*) from public.deployment_requirements q
                 where q.resource_id = r.resource_id and q.status = 'pending')
                   as pending_requirements,
               m.endpoint, m.healthy_at, r.updated_at
        from public.resource_states r
        left join public.resources_awaiting_action a on a.resource_id = r.resource_id
        left join public.mcp_deployment_status m on m.resource_id = r.resource_id
        where r.current_state <> 'archived'
          and (%(type)s::text is null or r.resource_type = %(type)s)
          and (%(owner)s::text is null or r.owner_team = %(owner)s)
        order by r.resource_type, r.resource_id
        """,
        {"type": resource_type.value if resource_type else None, "owner": owner_team or None},
    )
    return [ReadinessRow.model_validate(r) for r in rows]
