"""SupabaseStore: the store protocol over supabase-py, calling the schema's functions through PostgREST.

Same database functions as `PostgresStore`, reached over HTTP with the service-role key: writes go
through `rpc("record_transition" | "register_resource", {...})` with named snake_case arguments
(PostgREST picks the function by its argument names), reads through the tables and the seed's views,
which row-level security opens to the service role. The database does the checking; this adapter
maps its refusals, which PostgREST forwards with the SQLSTATE in the error's `code`, to the same
`state.errors` as the Postgres adapter.

Retries are Temporal's job: supabase-py's own retry of GETs (with sleeps of 1, 2, 4 s) is off, so an
unreachable Supabase fails an activity attempt at once with `StoreUnavailableError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
from postgrest.exceptions import APIError

from state.commands import RequirementRecord
from state.errors import InvalidValueError, SchemaDriftError, StoreError, StoreUnavailableError
from state.models import (
    McpRegistryEntry,
    RegisterResourceRequest,
    ResourceRef,
    ResourceRow,
    TransitionRecord,
    TransitionRequest,
)
from state.postgres import _SQLSTATE_ERRORS as SQLSTATE_ERRORS  # one table for both adapters
from state.postgres import transition_record
from supabase import AsyncClient, AsyncClientOptions

# PostgREST's own codes (PGRST*) that mean the database lacks what the code expects: a function or
# table missing from the schema cache is a migration not applied (or a cache not reloaded).
_SCHEMA_CACHE_MISSES = {"PGRST202", "PGRST205", "42883", "42P01"}
# PGRST000-003: PostgREST cannot reach or use its database; 5xx without a JSON body: a proxy or
# gateway in front of it failed (`code` is then the HTTP status).
_UNAVAILABLE = {"PGRST000", "PGRST001", "PGRST002", "PGRST003", "502", "503", "504", "520"}
_AUTH_REFUSED = {"PGRST301", "PGRST302", "PGRST303", "401", "403"}

DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
PAGE_SIZE = 1000
IN_CHUNK = 200


class _Executable(Protocol):
    """A built supabase-py request (rpc, select, upsert, delete)."""

    async def execute(self) -> Any: ...


def translate_api_error(exc: APIError) -> StoreError:
    """Map a PostgREST error to the named store error `PostgresStore` raises for the same refusal."""
    code = exc.code or ""
    message = exc.message or str(exc)
    if exc.hint:
        message = f"{message} ({exc.hint})"
    if code in SQLSTATE_ERRORS:
        return SQLSTATE_ERRORS[code](message)
    if code in _SCHEMA_CACHE_MISSES:
        return SchemaDriftError(
            f"{message}: apply the migrations in supabase/migrations (supabase db push or"
            " rsm migrate); each one ends by reloading PostgREST's schema cache"
        )
    if code in _UNAVAILABLE or code[:2] in {"08", "57"} or code.startswith("53"):
        return StoreUnavailableError(f"Supabase is unavailable: {message} [{code}]")
    if code == "42501":
        return StoreError(
            f"permission denied: {message}; SupabaseStore writes as the service role and needs the"
            " service-role key (SUPABASE_SERVICE_ROLE_KEY), not the anon key"
        )
    if code.startswith("22"):
        return InvalidValueError(f"{message} [{code}]")
    if code in _AUTH_REFUSED:
        return StoreError(f"Supabase refused the key: {message} [{code}]")
    return StoreError(f"{message} [{code}]" if code else message)


class SupabaseStore:
    def __init__(self, client: AsyncClient, http: httpx.AsyncClient) -> None:
        self._client = client
        self._http = http

    @classmethod
    async def connect(
        cls, url: str, service_role_key: str, *, timeout: httpx.Timeout = DEFAULT_TIMEOUT
    ) -> SupabaseStore:
        """A client for `url` (the project URL, e.g. https://xyz.supabase.co) with the service key.

        Nothing is sent yet: supabase-py connects on the first request.
        """
        if not url.startswith(("http://", "https://")):
            raise StoreError(f"SUPABASE_URL must be an http(s) URL, got {url!r}")
        if not service_role_key:
            raise StoreError("SUPABASE_SERVICE_ROLE_KEY is empty")
        # Our own HTTP client, so close() releases it; supabase-py then sets no deprecated timeout.
        http = httpx.AsyncClient(timeout=timeout, follow_redirects=True)
        options = AsyncClientOptions(
            schema="public",
            auto_refresh_token=False,
            persist_session=False,
            postgrest_client_retry=False,
            httpx_client=http,
        )
        return cls(AsyncClient(url, service_role_key, options), http)

    async def close(self) -> None:
        await self._http.aclose()

    async def _execute(self, request: _Executable) -> list[dict[str, Any]]:
        """Send one PostgREST request; its refusals become the store's named errors."""
        try:
            response = await request.execute()
        except APIError as exc:
            raise translate_api_error(exc) from exc
        except httpx.TransportError as exc:
            raise StoreUnavailableError(f"cannot reach Supabase: {exc!r}") from exc
        return _rows(response.data)

    async def _rpc(self, function: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return await self._execute(self._client.rpc(function, params))

    async def _select(
        self,
        relation: str,
        *,
        columns: str = "*",
        eq: dict[str, Any] | None = None,
        is_in: tuple[str, Sequence[str]] | None = None,
        order: Sequence[tuple[str, bool]] = (),
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Rows of a table or view; without a limit, every row, a page at a time.

        PostgREST caps one answer at its `max-rows` (1000 on Supabase) without saying so, so an
        unlimited read asks for consecutive ranges until a short page arrives.
        """
        rows: list[dict[str, Any]] = []
        while True:
            query = self._client.table(relation).select(columns)
            for column, value in (eq or {}).items():
                query = query.eq(column, value)
            if is_in is not None:
                query = query.in_(is_in[0], is_in[1])
            for column, desc in order:
                query = query.order(column, desc=desc)
            size = limit if limit is not None else PAGE_SIZE
            page = await self._execute(query.range(len(rows), len(rows) + size - 1))
            rows.extend(page)
            if limit is not None or len(page) < size:
                return rows

    async def _select_in(
        self, relation: str, columns: str, column: str, values: Sequence[str]
    ) -> list[dict[str, Any]]:
        # Chunks keep the `in.(...)` filter well inside URL length limits of proxies in front.
        rows: list[dict[str, Any]] = []
        for start in range(0, len(values), IN_CHUNK):
            chunk = values[start : start + IN_CHUNK]
            rows += await self._select(relation, columns=columns, is_in=(column, chunk))
        return rows

    async def register_resource(self, request: RegisterResourceRequest) -> ResourceRow:
        rows = await self._rpc(
            "register_resource",
            {
                "resource_id": request.ref.resource_id,
                "resource_type": request.ref.resource_type.value,
                "name": request.name,
                "machine_version": request.machine_version,
                "owner_team": request.owner_team,
                "version": request.version,
                "spec": request.spec,
                "workflow_id": request.workflow_id,
                "actor": request.actor,
            },
        )
        if not rows:
            raise StoreError(f"register_resource returned no row for {request.ref.resource_id}")
        return ResourceRow.model_validate(rows[0])

    async def record_transition(self, request: TransitionRequest) -> TransitionRecord:
        rows = await self._rpc(
            "record_transition",
            {
                "resource_id": request.ref.resource_id,
                "to_state": request.to_state.value,
                "actor": request.actor,
                "idempotency_key": request.idempotency_key,
                "reason": request.reason,
                "metadata": request.metadata,
                "from_state": request.from_state.value if request.from_state else None,
                "workflow_id": request.workflow_id,
                "run_id": request.run_id,
            },
        )
        if not rows:
            raise StoreError(f"record_transition returned no row for {request.ref.resource_id}")
        row = rows[0]
        if request.mcp_registry is not None:
            # Two HTTP calls cannot share a transaction. Written after the transition, the registry
            # still never shows an endpoint whose `available` row is missing; if this call fails the
            # activity's retry replays the transition (same key, no new row) and writes it again.
            await self._upsert_registry(request.ref.resource_id, request.mcp_registry)
        return transition_record(request, row)

    async def _upsert_registry(self, resource_id: str, entry: McpRegistryEntry) -> None:
        payload = registry_payload(resource_id, entry, now=datetime.now(UTC))
        # Only the columns sent are updated on conflict, which is PostgresStore's coalesce().
        await self._execute(
            self._client.table("mcp_registry").upsert(
                payload, on_conflict="resource_id", default_to_null=False
            )
        )

    async def get_resource(self, resource_id: str) -> ResourceRow | None:
        rows = await self._select("resource_states", eq={"resource_id": resource_id})
        return ResourceRow.model_validate(rows[0]) if rows else None

    async def list_resources(
        self, resource_type: str | None = None, state: str | None = None
    ) -> list[ResourceRow]:
        eq = {k: v for k, v in (("resource_type", resource_type), ("current_state", state)) if v}
        rows = await self._select(
            "resource_states", eq=eq, order=(("resource_type", False), ("resource_id", False))
        )
        return [ResourceRow.model_validate(r) for r in rows]

    async def list_transitions(self, resource_id: str, limit: int = 200) -> list[TransitionRecord]:
        rows = await self._select(
            "state_transitions", eq={"resource_id": resource_id}, order=(("id", True),), limit=limit
        )
        return [transition_from_row(r) for r in reversed(rows)]

    async def upsert_requirement(self, record: RequirementRecord) -> RequirementRecord:
        key = {
            "resource_id": record.resource_id,
            "requirement_type": record.requirement_type,
            "name": record.name,
        }
        # PostgresStore merges details in SQL (`details || excluded.details`); PostgREST's upsert
        # replaces the column, so the merge happens here. Requirement updates for one resource come
        # from its own workflow, one at a time, so no concurrent writer loses a key.
        existing = await self._select("deployment_requirements", columns="details", eq=key, limit=1)
        details = {**(existing[0]["details"] if existing else {}), **record.details}
        rows = await self._execute(
            self._client.table("deployment_requirements").upsert(
                {
                    **key,
                    "status": record.status,
                    "details": details,
                    "updated_at": datetime.now(UTC).isoformat(),
                },
                on_conflict="resource_id,requirement_type,name",
                default_to_null=False,
            )
        )
        return RequirementRecord.model_validate(rows[0])

    async def list_requirements(self, resource_id: str) -> list[RequirementRecord]:
        rows = await self._select(
            "deployment_requirements",
            columns="resource_id,name,requirement_type,status,details",
            eq={"resource_id": resource_id},
            order=(("name", False),),
        )
        return [RequirementRecord.model_validate(r) for r in rows]

    async def set_dependencies(self, ref: ResourceRef, depends_on: list[ResourceRef]) -> None:
        # No transaction over HTTP: add the new links first, then drop the stale ones, so a reader
        # in between sees at worst an extra link (one signal too many), never a missing one.
        wanted = {(d.resource_type.value, d.resource_id) for d in depends_on}
        if wanted:
            await self._execute(
                self._client.table("resource_dependencies").upsert(
                    [
                        {"resource_id": ref.resource_id, "depends_on_type": t, "depends_on_id": i}
                        for t, i in sorted(wanted)
                    ],
                    on_conflict="resource_id,depends_on_type,depends_on_id",
                    ignore_duplicates=True,
                    default_to_null=False,
                )
            )
        current = await self._select(
            "resource_dependencies",
            columns="depends_on_type,depends_on_id",
            eq={"resource_id": ref.resource_id},
        )
        for row in current:
            if (row["depends_on_type"], row["depends_on_id"]) in wanted:
                continue
            await self._execute(
                self._client.table("resource_dependencies")
                .delete()
                .eq("resource_id", ref.resource_id)
                .eq("depends_on_type", row["depends_on_type"])
                .eq("depends_on_id", row["depends_on_id"])
            )

    async def list_dependents(
        self, ref: ResourceRef, state: str | None = None
    ) -> list[ResourceRef]:
        links = await self._select(
            "resource_dependencies",
            columns="resource_id",
            eq={"depends_on_type": ref.resource_type.value, "depends_on_id": ref.resource_id},
        )
        ids = sorted({r["resource_id"] for r in links})
        rows = await self._select_in(
            "resource_states", "resource_type,resource_id,current_state", "resource_id", ids
        )
        return sorted(
            (
                ResourceRef.model_validate(r)
                for r in rows
                if r["current_state"] != "archived"
                and (state is None or r["current_state"] == state)
            ),
            key=lambda r: r.resource_id,
        )

    async def current_states(self, refs: list[ResourceRef]) -> dict[str, str]:
        ids = sorted({r.resource_id for r in refs})
        rows = await self._select_in(
            "resource_states", "resource_id,current_state", "resource_id", ids
        )
        return {r["resource_id"]: r["current_state"] for r in rows}

    async def mcp_status(self, resource_id: str) -> dict[str, Any] | None:
        rows = await self._select("mcp_deployment_status", eq={"resource_id": resource_id})
        return rows[0] if rows else None

    async def overview(self) -> list[dict[str, Any]]:
        return await self._select(
            "resource_state_overview",
            columns="resource_type,state,count",
            order=(("resource_type", False), ("state", False)),
        )


def _rows(data: Any) -> list[dict[str, Any]]:
    # A set-returning function and a table read both answer with a JSON array of objects.
    if data is None:
        return []
    if isinstance(data, dict):
        return [data]
    return list(data)


def registry_payload(resource_id: str, entry: McpRegistryEntry, *, now: datetime) -> dict[str, Any]:
    """The mcp_registry row to upsert: unset fields are left out so the stored ones are kept."""
    payload: dict[str, Any] = {"resource_id": resource_id, "updated_at": now.isoformat()}
    for column in (
        "image",
        "runtime",
        "runtime_ref",
        "endpoint",
        "server_name",
        "protocol_version",
    ):
        value = getattr(entry, column)
        if value is not None:
            payload[column] = value
    if entry.healthy:
        # The tool list is only trusted from a health check that passed.
        payload["tools"] = list(entry.tools)
        payload["healthy_at"] = now.isoformat()
    return payload


def transition_from_row(row: dict[str, Any]) -> TransitionRecord:
    return TransitionRecord(
        transition_id=row["id"],
        resource_id=row["resource_id"],
        from_state=row["from_state"],
        to_state=row["to_state"],
        actor=row["transitioned_by"],
        reason=row["reason"],
        metadata=row["metadata"],
        recorded_at=row["created_at"],
    )
