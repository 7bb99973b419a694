"""SupabaseStore: the store contract against a real Supabase when one is configured, plus what can be
proven without one (error mapping, the requests supabase-py sends, the adapter choice).

The contract tests are the Postgres store's own, run here with a module-level `store` fixture that
yields a SupabaseStore; without SUPABASE_URL they report "no Supabase configured". The project's
migrations must have been applied to that Supabase (`supabase db push`, or `rsm migrate` with
RSM_DATABASE_URL set to its database).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from postgrest.exceptions import APIError
from pydantic import SecretStr

from state import supabase_store
from state.commands import RequirementRecord
from state.errors import (
    IllegalTransitionError,
    SchemaDriftError,
    StaleStateError,
    StoreError,
    StoreUnavailableError,
    UnknownResourceError,
)
from state.machines import ResourceState, ResourceType
from state.models import McpRegistryEntry, ResourceRef, TransitionRequest
from state.postgres import PostgresStore
from state.settings import RsmSettings
from state.store_factory import store_from_settings, uses_supabase
from state.supabase_store import (
    SupabaseStore,
    registry_payload,
    transition_from_row,
    translate_api_error,
)
from tests.helpers import unique_id
from tests.state import test_postgres_store as contract
from workers.services.process import free_port

S = ResourceState


@pytest.fixture(scope="module")
async def store() -> AsyncIterator[SupabaseStore]:
    """Overrides the session's PostgresStore for the contract tests imported below."""
    url = os.environ.get("SUPABASE_URL")
    key = os.environ.get("SUPABASE_SERVICE_ROLE_KEY")
    if not url:
        pytest.skip("no Supabase configured")
    if not key:
        pytest.fail("SUPABASE_URL is set without SUPABASE_SERVICE_ROLE_KEY")
    s = await SupabaseStore.connect(url, key)
    yield s
    await s.close()


# -- the store contract (needs a real Supabase) ---------------------------------------------------

test_registering_twice_keeps_one_resource_and_one_created_row = (
    contract.test_registering_twice_keeps_one_resource_and_one_created_row
)
test_a_transition_moves_the_resource_and_writes_one_row = (
    contract.test_a_transition_moves_the_resource_and_writes_one_row
)
test_the_same_key_twice_records_once = contract.test_the_same_key_twice_records_once
test_concurrent_calls_with_one_key_record_once = (
    contract.test_concurrent_calls_with_one_key_record_once
)
test_an_illegal_arrow_is_refused_and_changes_nothing = (
    contract.test_an_illegal_arrow_is_refused_and_changes_nothing
)
test_writing_the_table_directly_cannot_skip_the_history = (
    contract.test_writing_the_table_directly_cannot_skip_the_history
)
test_unknown_resource_and_stale_state_are_named = (
    contract.test_unknown_resource_and_stale_state_are_named
)


async def test_supabase_unknown_state_is_schema_drift(store: SupabaseStore) -> None:
    ref = await contract._register(store)  # type: ignore[arg-type]
    with pytest.raises(SchemaDriftError, match="apply the migration"):
        await store._rpc(
            "record_transition",
            {
                "resource_id": ref.resource_id,
                "to_state": "hibernating",
                "actor": "x",
                "idempotency_key": unique_id("k"),
            },
        )


async def test_supabase_views_and_registry(store: SupabaseStore) -> None:
    ref = await contract._register(store)  # type: ignore[arg-type]
    for state in (S.REGISTERED, S.BUILDING, S.BUILT, S.DEPLOYING, S.DEPLOYED, S.HEALTH_CHECKING):
        await store.record_transition(contract._move(ref, state))
    await store.record_transition(
        contract._move(
            ref,
            S.AVAILABLE,
            mcp_registry=McpRegistryEntry(
                endpoint="http://127.0.0.1:9/mcp", tools=["echo"], healthy=True, image="img:1"
            ),
        )
    )
    status = await store.mcp_status(ref.resource_id)
    assert status is not None
    assert (status["current_state"], status["endpoint"], status["tools"]) == (
        "available",
        "http://127.0.0.1:9/mcp",
        ["echo"],
    )
    overview = await store.overview()
    assert any(
        r["resource_type"] == "mcp_server" and r["state"] == "available" and r["count"] >= 1
        for r in overview
    )


async def test_supabase_requirements_merge_details(store: SupabaseStore) -> None:
    ref = await contract._register(store)  # type: ignore[arg-type]
    first = RequirementRecord(
        resource_id=ref.resource_id,
        name="slack-token",
        requirement_type="credential",
        status="pending",
        details={"asked": "alice"},
    )
    await store.upsert_requirement(first)
    second = first.model_copy(update={"status": "satisfied", "details": {"by": "bob"}})
    stored = await store.upsert_requirement(second)
    assert (stored.status, stored.details) == ("satisfied", {"asked": "alice", "by": "bob"})
    assert await store.list_requirements(ref.resource_id) == [stored]


async def test_supabase_dependencies_and_dependents(store: SupabaseStore) -> None:
    mcp = await contract._register(store)  # type: ignore[arg-type]
    team = await contract._register(store, ResourceType.TEAM)  # type: ignore[arg-type]
    other = await contract._register(store)  # type: ignore[arg-type]
    await store.set_dependencies(team, [mcp, other])
    await store.set_dependencies(team, [mcp])
    assert await store.list_dependents(mcp) == [team]
    assert await store.list_dependents(other) == []
    assert await store.list_dependents(mcp, state="active") == []
    assert await store.current_states([mcp, team]) == {
        mcp.resource_id: "created",
        team.resource_id: "created",
    }


# -- error mapping: PostgREST's error objects, as supabase-py raises them --------------------------


@pytest.mark.parametrize(
    ("body", "expected", "text"),
    [
        (
            {
                "code": "RSM01",
                "message": "illegal transition created -> active for team t (machine v1)",
            },
            IllegalTransitionError,
            "created -> active",
        ),
        ({"code": "RSM02", "message": "unknown resource 'ghost'"}, UnknownResourceError, "ghost"),
        (
            {"code": "RSM03", "message": "resource r is in created, not building"},
            StaleStateError,
            "not building",
        ),
        (
            {
                "code": "RSM04",
                "message": "unknown lifecycle state 'hibernating'",
                "hint": "the worker is newer than the database schema: apply the migration that adds this state",
            },
            SchemaDriftError,
            "(the worker is newer than the database schema",
        ),
        (
            {
                "code": "23503",
                "message": 'insert or update on table "state_transitions" violates foreign key constraint',
            },
            SchemaDriftError,
            "foreign key",
        ),
        (
            {
                "code": "PGRST202",
                "message": "Could not find the function public.record_transition(actor, resource_id) in the schema cache",
                "hint": "Perhaps you meant to call the function public.register_resource",
            },
            SchemaDriftError,
            "apply the migrations in supabase/migrations",
        ),
        (
            {"code": "42501", "message": "permission denied for function record_transition"},
            StoreError,
            "needs the service-role key",
        ),
        (
            {"code": "PGRST301", "message": "JWSError JWSInvalidSignature"},
            StoreError,
            "refused the key",
        ),
        (
            {"code": "PGRST001", "message": "Database client error. Retrying the connection."},
            StoreUnavailableError,
            "Supabase is unavailable",
        ),
        ({"code": "503", "message": "Service Unavailable"}, StoreUnavailableError, "[503]"),
        ({"code": "P0001", "message": "something else"}, StoreError, "something else [P0001]"),
    ],
)
def test_postgrest_errors_map_to_the_postgres_adapters_errors(
    body: dict[str, Any], expected: type[StoreError], text: str
) -> None:
    error = translate_api_error(APIError({"details": None, "hint": None, **body}))
    assert type(error) is expected
    assert text in str(error)


def test_the_registry_upsert_sends_only_what_is_known() -> None:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    built = registry_payload("m1", McpRegistryEntry(image="img:1", tools=["x"]), now=now)
    assert built == {"resource_id": "m1", "updated_at": now.isoformat(), "image": "img:1"}
    healthy = registry_payload(
        "m1",
        McpRegistryEntry(endpoint="http://127.0.0.1:1/mcp", tools=["a"], healthy=True),
        now=now,
    )
    assert healthy["tools"] == ["a"] and healthy["healthy_at"] == now.isoformat()
    assert "image" not in healthy


# -- the wire: what supabase-py really sends, answered the way PostgREST answers -----------------


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


class _PostgrestReplay(BaseHTTPRequestHandler):
    """Answers with PostgREST's documented shapes; records each request for the test to inspect."""

    seen: list[Seen]
    answers: dict[tuple[str, str], Any]  # (status, body) or a function of the query string

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        self.seen.append(
            Seen(
                self.command,
                parts.path,
                query,
                {k.lower(): v for k, v in self.headers.items()},
                json.loads(raw) if raw else None,
            )
        )
        answer = self.answers.get((self.command, parts.path), (404, {"code": "PGRST125"}))
        status, payload = answer(query) if callable(answer) else answer
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def postgrest_replay() -> Iterator[tuple[str, type[_PostgrestReplay]]]:
    handler = type("Handler", (_PostgrestReplay,), {"seen": [], "answers": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


async def test_a_transition_is_one_rpc_with_named_snake_case_arguments(
    postgrest_replay: tuple[str, type[_PostgrestReplay]],
) -> None:
    url, handler = postgrest_replay
    handler.answers[("POST", "/rest/v1/rpc/record_transition")] = (
        400,
        {
            "code": "RSM01",
            "details": None,
            "hint": None,
            "message": "illegal transition created -> active for team t1 (machine v1)",
        },
    )
    store = await SupabaseStore.connect(url, "service-key")
    try:
        ref = ResourceRef(resource_type=ResourceType.TEAM, resource_id="t1")
        request = TransitionRequest(
            ref=ref,
            to_state=S.ACTIVE,
            actor="alice",
            reason="go",
            metadata={"n": 1},
            idempotency_key="resource/team/t1/run/3",
            workflow_id=ref.workflow_id,
        )
        with pytest.raises(IllegalTransitionError, match="created -> active"):
            await store.record_transition(request)
    finally:
        await store.close()
    [call] = handler.seen
    assert (call.method, call.path) == ("POST", "/rest/v1/rpc/record_transition")
    assert call.body == {
        "resource_id": "t1",
        "to_state": "active",
        "actor": "alice",
        "idempotency_key": "resource/team/t1/run/3",
        "reason": "go",
        "metadata": {"n": 1},
        "from_state": None,
        "workflow_id": "resource/team/t1",
        "run_id": None,
    }
    assert call.headers["apikey"] == "service-key"
    assert call.headers["authorization"] == "Bearer service-key"
    assert call.headers["content-profile"] == "public"


async def test_reads_go_through_the_tables_and_parse_postgrest_json(
    postgrest_replay: tuple[str, type[_PostgrestReplay]],
) -> None:
    url, handler = postgrest_replay
    row = {
        "id": 41,
        "resource_id": "m1",
        "from_state": "created",
        "to_state": "registered",
        "transitioned_by": "svc",
        "reason": "r",
        "metadata": {"k": "v"},
        "created_at": "2026-12-03T12:00:00.123456+00:00",
    }
    handler.answers[("GET", "/rest/v1/state_transitions")] = (200, [row])
    store = await SupabaseStore.connect(url, "service-key")
    try:
        [record] = await store.list_transitions("m1", limit=5)
    finally:
        await store.close()
    assert record == transition_from_row(row)
    assert (record.from_state, record.to_state, record.recorded_at.microsecond) == (
        S.CREATED,
        S.REGISTERED,
        123456,
    )
    [call] = handler.seen
    assert call.query["resource_id"] == ["eq.m1"]
    assert call.query["order"] == ["id.desc"]
    assert (call.query["offset"], call.query["limit"]) == (["0"], ["5"])


async def test_unlimited_reads_page_past_postgrests_max_rows(
    postgrest_replay: tuple[str, type[_PostgrestReplay]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, handler = postgrest_replay
    monkeypatch.setattr(supabase_store, "PAGE_SIZE", 2)
    rows: list[dict[str, Any]] = [
        {
            "resource_id": f"r{i}",
            "resource_type": "team",
            "name": f"r{i}",
            "owner_team": "",
            "current_state": "created",
            "machine_version": 1,
            "version": None,
            "spec": {},
            "workflow_id": None,
            "registered_by": "svc",
            "created_at": "2026-12-03T12:00:00+00:00",
            "updated_at": "2026-12-03T12:00:00+00:00",
        }
        for i in range(3)
    ]

    def page(query: dict[str, list[str]]) -> tuple[int, Any]:
        offset, limit = int(query["offset"][0]), int(query["limit"][0])
        return 200, rows[offset : offset + limit]

    handler.answers[("GET", "/rest/v1/resource_states")] = page
    store = await SupabaseStore.connect(url, "service-key")
    try:
        listed = await store.list_resources(resource_type="team")
    finally:
        await store.close()
    assert [r.resource_id for r in listed] == ["r0", "r1", "r2"]
    assert [(c.query["offset"], c.query["limit"]) for c in handler.seen] == [
        (["0"], ["2"]),
        (["2"], ["2"]),
    ]
    assert handler.seen[0].query["order"] == ["resource_type.asc,resource_id.asc"]
    assert handler.seen[0].query["resource_type"] == ["eq.team"]


async def test_dependencies_are_added_before_stale_ones_are_dropped(
    postgrest_replay: tuple[str, type[_PostgrestReplay]],
) -> None:
    url, handler = postgrest_replay
    links = "/rest/v1/resource_dependencies"
    handler.answers[("POST", links)] = (201, [])
    handler.answers[("GET", links)] = (
        200,
        [
            {"depends_on_type": "mcp_server", "depends_on_id": "m1"},
            {"depends_on_type": "mcp_server", "depends_on_id": "old"},
        ],
    )
    handler.answers[("DELETE", links)] = (200, [])
    store = await SupabaseStore.connect(url, "service-key")
    try:
        await store.set_dependencies(
            ResourceRef(resource_type=ResourceType.TEAM, resource_id="crew"),
            [ResourceRef(resource_type=ResourceType.MCP_SERVER, resource_id="m1")],
        )
    finally:
        await store.close()
    assert [c.method for c in handler.seen] == ["POST", "GET", "DELETE"]
    upsert, _, delete = handler.seen
    assert upsert.body == [
        {"resource_id": "crew", "depends_on_type": "mcp_server", "depends_on_id": "m1"}
    ]
    assert upsert.query["on_conflict"] == ["resource_id,depends_on_type,depends_on_id"]
    assert "resolution=ignore-duplicates" in upsert.headers["prefer"]
    assert (delete.query["resource_id"], delete.query["depends_on_id"]) == (["eq.crew"], ["eq.old"])


async def test_dependents_leave_out_archived_ones_and_filter_by_state(
    postgrest_replay: tuple[str, type[_PostgrestReplay]],
) -> None:
    url, handler = postgrest_replay
    handler.answers[("GET", "/rest/v1/resource_dependencies")] = (
        200,
        [{"resource_id": "t2"}, {"resource_id": "t1"}, {"resource_id": "t3"}],
    )
    handler.answers[("GET", "/rest/v1/resource_states")] = (
        200,
        [
            {
                "resource_type": "team",
                "resource_id": "t1",
                "current_state": "awaiting_dependencies",
            },
            {"resource_type": "team", "resource_id": "t2", "current_state": "active"},
            {"resource_type": "team", "resource_id": "t3", "current_state": "archived"},
        ],
    )
    store = await SupabaseStore.connect(url, "service-key")
    mcp = ResourceRef(resource_type=ResourceType.MCP_SERVER, resource_id="m1")
    try:
        every = await store.list_dependents(mcp)
        waiting = await store.list_dependents(mcp, state="awaiting_dependencies")
    finally:
        await store.close()
    assert [r.resource_id for r in every] == ["t1", "t2"]
    assert [r.resource_id for r in waiting] == ["t1"]
    links, states = handler.seen[:2]
    assert (links.query["depends_on_type"], links.query["depends_on_id"]) == (
        ["eq.mcp_server"],
        ["eq.m1"],
    )
    assert states.query["resource_id"] == ["in.(t1,t2,t3)"]


async def test_an_unreachable_supabase_fails_fast_as_unavailable() -> None:
    store = await SupabaseStore.connect(f"http://127.0.0.1:{free_port()}", "service-key")
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailableError, match="cannot reach Supabase"):
            await store.get_resource("anything")
    finally:
        await store.close()
    # No client-side retries with back-off: Temporal's activity retry policy owns retrying.
    assert time.monotonic() - started < 2


# -- choosing the adapter -------------------------------------------------------------------------


@dataclass
class _Settings:
    database_url: str
    supabase_url: str | None = None
    supabase_service_role_key: SecretStr | None = None


async def test_without_supabase_the_store_is_postgres(pg_dsn: str) -> None:
    store = await store_from_settings(_Settings(pg_dsn))
    try:
        assert isinstance(store, PostgresStore)
        assert await store.get_resource(unique_id("none")) is None
    finally:
        await store.close()


async def test_with_supabase_url_and_key_the_store_is_supabase() -> None:
    settings = _Settings(
        "postgresql://unused@127.0.0.1:1/x",
        supabase_url=f"http://127.0.0.1:{free_port()}",
        supabase_service_role_key=SecretStr("service-key"),
    )
    store = await store_from_settings(settings)
    try:
        assert isinstance(store, SupabaseStore)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "key", "missing"),
    [
        ("http://127.0.0.1:1", None, "SUPABASE_SERVICE_ROLE_KEY is not"),
        ("http://127.0.0.1:1", "", "SUPABASE_SERVICE_ROLE_KEY is not"),
        (None, "service-key", "SUPABASE_URL is not"),
    ],
)
def test_half_a_supabase_configuration_is_refused(
    url: str | None, key: str | None, missing: str
) -> None:
    settings = _Settings(
        "postgresql://unused@127.0.0.1:1/x",
        supabase_url=url,
        supabase_service_role_key=None if key is None else SecretStr(key),
    )
    with pytest.raises(StoreError, match=missing):
        uses_supabase(settings)


def test_rsm_settings_read_the_supabase_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://project.supabase.co")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "service-key")
    settings = RsmSettings()
    assert uses_supabase(settings)
    assert "service-key" not in repr(settings)
    monkeypatch.delenv("SUPABASE_URL")
    monkeypatch.delenv("SUPABASE_SERVICE_ROLE_KEY")
    assert not uses_supabase(RsmSettings())
