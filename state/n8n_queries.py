"""Read-only queries the n8n lifecycle needs over the shared tables (resource_states,
state_transitions): which webhook paths our other n8n workflows hold.

A workflow's webhooks are recorded in the metadata of its latest `validated` transition (validation
computes them). They count as held from then on while the resource is `deploying`, `deployed` or
`active`: counting `deploying` closes most of the window in which two registrations of the same path
could both pass validation; n8n itself still refuses the second activation if they race.
"""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from state.errors import StoreError, StoreUnavailableError
from state.machines import ResourceState, ResourceType
from state.n8n_models import TakenWebhookPath

HOLDING_STATES = (ResourceState.DEPLOYING, ResourceState.DEPLOYED, ResourceState.ACTIVE)

_TAKEN_PATHS_SQL = """
select distinct p.path, r.resource_id
from public.resource_states r
cross join lateral (
    select t.metadata
    from public.state_transitions t
    where t.resource_id = r.resource_id and t.to_state = 'validated'
    order by t.id desc
    limit 1
) v
cross join lateral jsonb_array_elements_text(
    case when jsonb_typeof(v.metadata -> 'webhook_paths') = 'array'
         then v.metadata -> 'webhook_paths' else '[]'::jsonb end
) as p(path)
where r.resource_type = %(type)s
  and r.current_state = any(%(states)s)
  and r.resource_id is distinct from %(exclude)s
order by p.path, r.resource_id
"""


class N8nQueries:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._opened = not pool.closed

    @classmethod
    def lazy(cls, dsn: str, *, max_size: int = 2) -> N8nQueries:
        """A pool that connects on first use, so a worker can be wired before any await."""
        return cls(
            AsyncConnectionPool(
                dsn, min_size=1, max_size=max_size, open=False, kwargs={"autocommit": True}
            )
        )

    @classmethod
    async def connect(cls, dsn: str, *, max_size: int = 2) -> N8nQueries:
        queries = cls.lazy(dsn, max_size=max_size)
        await queries._open()
        return queries

    async def _open(self) -> None:
        if self._opened:
            return
        try:
            await self._pool.open(wait=True, timeout=15)
        except Exception as exc:
            raise StoreUnavailableError(f"cannot connect to Postgres: {exc}") from exc
        self._opened = True

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()

    async def active_webhook_paths(
        self, exclude_resource_id: str | None = None
    ) -> list[TakenWebhookPath]:
        await self._open()
        try:
            async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    _TAKEN_PATHS_SQL,
                    {
                        "type": ResourceType.N8N_WORKFLOW.value,
                        "states": [s.value for s in HOLDING_STATES],
                        "exclude": exclude_resource_id,
                    },
                )
                rows = await cur.fetchall()
        except psycopg.OperationalError as exc:
            raise StoreUnavailableError(str(exc)) from exc
        except psycopg.Error as exc:
            raise StoreError(str(exc)) from exc
        return [TakenWebhookPath(path=r["path"], resource_id=r["resource_id"]) for r in rows]
