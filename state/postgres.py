"""PostgresStore: the store protocol over psycopg 3, calling the schema's SQL functions.

The database does the checking (arrow, idempotency, locking); this adapter only maps its named
refusals (SQLSTATE RSM01..RSM05) to the errors in `state.errors`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from state.commands import RequirementRecord
from state.errors import (
    IllegalTransitionError,
    InvalidValueError,
    SchemaDriftError,
    StaleStateError,
    StoreError,
    StoreUnavailableError,
    UnknownResourceError,
)
from state.models import (
    RegisterResourceRequest,
    ResourceRef,
    ResourceRow,
    TransitionRecord,
    TransitionRequest,
)

_SQLSTATE_ERRORS: dict[str, type[StoreError]] = {
    "RSM01": IllegalTransitionError,
    "RSM02": UnknownResourceError,
    "RSM03": StaleStateError,
    "RSM04": SchemaDriftError,
    "RSM05": SchemaDriftError,
    # A state missing from lifecycle_states also trips its foreign keys.
    "23503": SchemaDriftError,
}

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "supabase" / "migrations"


def _translate(exc: psycopg.Error) -> StoreError:
    sqlstate = exc.sqlstate or ""
    diag = exc.diag
    message = diag.message_primary or str(exc)
    if diag.message_hint:
        message = f"{message} ({diag.message_hint})"
    if isinstance(exc, psycopg.OperationalError) and sqlstate[:2] in {"08", "57", ""}:
        return StoreUnavailableError(message)
    # Class 22 (data exception) and psycopg's own refusal of a value it cannot send (a NUL).
    if sqlstate.startswith("22") or (isinstance(exc, psycopg.DataError) and not sqlstate):
        return InvalidValueError(message)
    return _SQLSTATE_ERRORS.get(sqlstate, StoreError)(message)


# A server that is starting, or not listening yet, may answer in a moment; anything else (a missing
# database, a refused password, a malformed URL) will not, and is named at once.
_WORTH_WAITING = ("connection refused", "starting up", "shutting down", "timeout expired")


async def _first_connection(dsn: str, timeout: float) -> None:
    """One plain connection before the pool: the pool only says "initialization incomplete" when
    it gives up, while this keeps the server's own reason for the error message."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(
                dsn, connect_timeout=max(1, round(min(timeout, 5)))
            )
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            waiting = any(word in str(exc).lower() for word in _WORTH_WAITING)
            if not waiting or time.monotonic() + 0.5 > deadline:
                raise StoreUnavailableError(
                    f"cannot connect to Postgres at {redact_dsn(dsn)}: {reason}"
                ) from None
            await asyncio.sleep(0.5)
            continue
        await conn.close()
        return


class PostgresStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    @classmethod
    async def connect(
        cls, dsn: str, *, min_size: int = 1, max_size: int = 8, timeout: float = 15.0
    ) -> PostgresStore:
        await _first_connection(dsn, timeout)
        pool = AsyncConnectionPool(
            dsn, min_size=min_size, max_size=max_size, open=False, kwargs={"autocommit": True}
        )
        try:
            await pool.open(wait=True, timeout=timeout)
        except Exception as exc:
            await pool.close()
            raise StoreUnavailableError(
                f"cannot connect to Postgres at {redact_dsn(dsn)}: {exc}"
            ) from exc
        return cls(pool)

    @property
    def pool(self) -> AsyncConnectionPool:
        """For read-only query modules (state/queries.py) that share the connections."""
        return self._pool

    async def close(self) -> None:
        await self._pool.close()

    async def _fetch(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        try:
            async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(sql, params)
                return await cur.fetchall()
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    async def register_resource(self, request: RegisterResourceRequest) -> ResourceRow:
        rows = await self._fetch(
            """
            select * from public.register_resource(
                resource_id => %(resource_id)s, resource_type => %(resource_type)s,
                name => %(name)s, machine_version => %(machine_version)s,
                owner_team => %(owner_team)s, version => %(version)s, spec => %(spec)s,
                workflow_id => %(workflow_id)s, actor => %(actor)s)
            """,
            {
                "resource_id": request.ref.resource_id,
                "resource_type": request.ref.resource_type.value,
                "name": request.name,
                "machine_version": request.machine_version,
                "owner_team": request.owner_team,
                "version": request.version,
                "spec": Jsonb(request.spec),
                "workflow_id": request.workflow_id,
                "actor": request.actor,
            },
        )
        return ResourceRow.model_validate(rows[0])

    async def record_transition(self, request: TransitionRequest) -> TransitionRecord:
        params = {
            "resource_id": request.ref.resource_id,
            "to_state": request.to_state.value,
            "actor": request.actor,
            "key": request.idempotency_key,
            "reason": request.reason,
            "metadata": Jsonb(request.metadata),
            "from_state": request.from_state.value if request.from_state else None,
            "workflow_id": request.workflow_id,
            "run_id": request.run_id,
        }
        try:
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    """
                    select * from public.record_transition(
                        resource_id => %(resource_id)s, to_state => %(to_state)s,
                        actor => %(actor)s, idempotency_key => %(key)s, reason => %(reason)s,
                        metadata => %(metadata)s, from_state => %(from_state)s,
                        workflow_id => %(workflow_id)s, run_id => %(run_id)s)
                    """,
                    params,
                )
                row = await cur.fetchone()
                assert row is not None
                if request.mcp_registry is not None:
                    # Same transaction as the transition: the registry never shows an endpoint
                    # whose `available` row was not written.
                    entry = request.mcp_registry
                    await cur.execute(
                        """
                        insert into public.mcp_registry as m
                            (resource_id, image, runtime, runtime_ref, endpoint, server_name,
                             protocol_version, tools, healthy_at, updated_at)
                        values (%(rid)s, %(image)s, %(runtime)s, %(ref)s, %(endpoint)s, %(server)s,
                                %(proto)s, %(tools)s, case when %(healthy)s then now() end, now())
                        on conflict (resource_id) do update set
                            image = coalesce(excluded.image, m.image),
                            runtime = coalesce(excluded.runtime, m.runtime),
                            runtime_ref = coalesce(excluded.runtime_ref, m.runtime_ref),
                            endpoint = coalesce(excluded.endpoint, m.endpoint),
                            server_name = coalesce(excluded.server_name, m.server_name),
                            protocol_version = coalesce(excluded.protocol_version, m.protocol_version),
                            tools = case when %(healthy)s then excluded.tools else m.tools end,
                            healthy_at = coalesce(excluded.healthy_at, m.healthy_at),
                            updated_at = now()
                        """,
                        {
                            "rid": request.ref.resource_id,
                            "image": entry.image,
                            "runtime": entry.runtime,
                            "ref": entry.runtime_ref,
                            "endpoint": entry.endpoint,
                            "server": entry.server_name,
                            "proto": entry.protocol_version,
                            "tools": Jsonb(entry.tools),
                            "healthy": entry.healthy,
                        },
                    )
        except psycopg.Error as exc:
            raise _translate(exc) from exc
        return transition_record(request, row)

    async def get_resource(self, resource_id: str) -> ResourceRow | None:
        rows = await self._fetch(
            "select * from public.resource_states where resource_id = %(id)s", {"id": resource_id}
        )
        return ResourceRow.model_validate(rows[0]) if rows else None

    async def list_resources(
        self, resource_type: str | None = None, state: str | None = None
    ) -> list[ResourceRow]:
        rows = await self._fetch(
            """
            select * from public.resource_states
            where (%(type)s::text is null or resource_type = %(type)s)
              and (%(state)s::text is null or current_state = %(state)s)
            order by resource_type, resource_id
            """,
            {"type": resource_type, "state": state},
        )
        return [ResourceRow.model_validate(r) for r in rows]

    async def list_transitions(self, resource_id: str, limit: int = 200) -> list[TransitionRecord]:
        rows = await self._fetch(
            """
            select * from (
                select id, resource_id, from_state, to_state, transitioned_by, reason, metadata,
                       created_at
                from public.state_transitions where resource_id = %(id)s
                order by id desc limit %(limit)s
            ) recent order by id
            """,
            {"id": resource_id, "limit": limit},
        )
        return [
            TransitionRecord(
                transition_id=r["id"],
                resource_id=r["resource_id"],
                from_state=r["from_state"],
                to_state=r["to_state"],
                actor=r["transitioned_by"],
                reason=r["reason"],
                metadata=r["metadata"],
                recorded_at=r["created_at"],
            )
            for r in rows
        ]

    async def upsert_requirement(self, record: RequirementRecord) -> RequirementRecord:
        rows = await self._fetch(
            """
            insert into public.deployment_requirements as q
                (resource_id, requirement_type, name, status, details)
            values (%(rid)s, %(type)s, %(name)s, %(status)s, %(details)s)
            on conflict (resource_id, requirement_type, name) do update
                set status = excluded.status,
                    details = q.details || excluded.details,
                    updated_at = now()
            returning resource_id, name, requirement_type, status, details
            """,
            {
                "rid": record.resource_id,
                "type": record.requirement_type,
                "name": record.name,
                "status": record.status,
                "details": Jsonb(record.details),
            },
        )
        return RequirementRecord.model_validate(rows[0])

    async def list_requirements(self, resource_id: str) -> list[RequirementRecord]:
        rows = await self._fetch(
            "select resource_id, name, requirement_type, status, details"
            " from public.deployment_requirements where resource_id = %(id)s order by name",
            {"id": resource_id},
        )
        return [RequirementRecord.model_validate(r) for r in rows]

    async def set_dependencies(self, ref: ResourceRef, depends_on: list[ResourceRef]) -> None:
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute(
                    "delete from public.resource_dependencies where resource_id = %s",
                    (ref.resource_id,),
                )
                for dep in depends_on:
                    await conn.execute(
                        "insert into public.resource_dependencies"
                        " (resource_id, depends_on_type, depends_on_id) values (%s, %s, %s)",
                        (ref.resource_id, dep.resource_type.value, dep.resource_id),
                    )
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    async def list_dependents(
        self, ref: ResourceRef, state: str | None = None
    ) -> list[ResourceRef]:
        rows = await self._fetch(
            """
            select r.resource_type, r.resource_id
            from public.resource_dependencies d
            join public.resource_states r on r.resource_id = d.resource_id
            where d.depends_on_type = %(type)s and d.depends_on_id = %(id)s
              and (%(state)s::text is null or r.current_state = %(state)s)
              and r.current_state <> 'archived'
            order by r.resource_id
            """,
            {"type": ref.resource_type.value, "id": ref.resource_id, "state": state},
        )
        return [ResourceRef.model_validate(r) for r in rows]

    async def current_states(self, refs: list[ResourceRef]) -> dict[str, str]:
        rows = await self._fetch(
            "select resource_id, current_state from public.resource_states"
            " where resource_id = any(%(ids)s)",
            {"ids": [r.resource_id for r in refs]},
        )
        return {r["resource_id"]: r["current_state"] for r in rows}

    async def mcp_status(self, resource_id: str) -> dict[str, Any] | None:
        rows = await self._fetch(
            "select * from public.mcp_deployment_status where resource_id = %(id)s",
            {"id": resource_id},
        )
        return rows[0] if rows else None

    async def overview(self) -> list[dict[str, Any]]:
        return await self._fetch(
            "select resource_type, state, count from public.resource_state_overview"
            " order by resource_type, state"
        )


def transition_record(request: TransitionRequest, row: dict[str, Any]) -> TransitionRecord:
    """The `record_transition` function's result row (whichever adapter called it) as a record."""
    return TransitionRecord(
        transition_id=row["transition_id"],
        resource_id=request.ref.resource_id,
        from_state=row["previous_state"],
        to_state=row["new_state"],
        actor=request.actor,
        reason=request.reason,
        metadata=request.metadata,
        recorded_at=row["recorded_at"],
        replayed=row["replayed"],
    )


def redact_dsn(dsn: str) -> str:
    # Never print a password that may sit in the DSN.
    if "@" in dsn and "://" in dsn:
        scheme, rest = dsn.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else dsn
    return dsn


async def apply_migrations(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every migration not applied yet, in file-name order; returns the ones applied.

    A tracking table makes it idempotent; an advisory lock makes concurrent callers (two workers
    starting together) safe.
    """
    applied: list[str] = []
    try:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute("select pg_advisory_lock(hashtext('rsm_migrations'))")
            try:
                await conn.execute(
                    "create table if not exists public.rsm_schema_migrations"
                    " (version text primary key, applied_at timestamptz not null default now())"
                )
                cur = await conn.execute("select version from public.rsm_schema_migrations")
                done = {r[0] for r in await cur.fetchall()}
                # A handful of small files read once at start-up: blocking reads are fine here.
                for path in sorted(directory.glob("*.sql")):  # noqa: ASYNC240
                    if path.name in done:
                        continue
                    async with conn.transaction():
                        await conn.execute(path.read_text())
                        await conn.execute(
                            "insert into public.rsm_schema_migrations (version) values (%s)",
                            (path.name,),
                        )
                    applied.append(path.name)
            finally:
                await conn.execute("select pg_advisory_unlock(hashtext('rsm_migrations'))")
    except psycopg.Error as exc:
        raise _translate(exc) from exc
    return applied
