"""Row-level security proven on plain Postgres, the way PostgREST runs statements on Supabase.

PostgREST logs in as `authenticator` (NOINHERIT, so it has no rights of its own), then per request
switches to the JWT's role with `SET LOCAL ROLE` and publishes the claims in `request.jwt.claims`.
The fixture creates those roles on the session Postgres; each test acts under one of them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from state.machines import ResourceType, machine_for
from state.postgres import apply_migrations
from tests.helpers import unique_id
from workers.services.postgres import PostgresServer
from workers.services.process import free_port

TABLES = (
    "lifecycle_states",
    "state_machine_arrows",
    "resource_states",
    "state_transitions",
    "mcp_registry",
    "deployment_requirements",
    "resource_state_counts",
)
VIEWS = (
    "resource_state_overview",
    "resources_awaiting_action",
    "mcp_deployment_status",
    "workflow_deployment_pipeline",
)
API_ROLES = ("anon", "authenticated", "service_role")

# Supabase's local setup (supabase/postgres init scripts), idempotent: the migration may have made
# the three API roles already; `authenticator` is the login role PostgREST connects as.
SUPABASE_ROLES_SQL = """
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'anon') then
        create role anon nologin noinherit;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        create role authenticated nologin noinherit;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'service_role') then
        create role service_role nologin noinherit bypassrls;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'authenticator') then
        create role authenticator login noinherit;
    end if;
end
$$;
grant anon, authenticated, service_role to authenticator;
"""

# What a Supabase project has before any migration of ours runs (supabase/postgres init scripts).
SUPABASE_DEFAULT_PRIVILEGES_SQL = """
grant usage on schema public to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
"""

CLAIMS = {
    "anon": {"role": "anon", "iss": "supabase"},
    "authenticated": {
        "role": "authenticated",
        "iss": "supabase",
        "sub": str(uuid.UUID(int=7)),
        "email": "reader@example.com",
    },
    "service_role": {"role": "service_role", "iss": "supabase"},
}


@pytest.fixture(scope="module")
async def authenticator_dsn(pg_dsn: str) -> str:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(SUPABASE_ROLES_SQL)
    return make_conninfo(pg_dsn, user="authenticator")


@pytest.fixture
async def api(authenticator_dsn: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(authenticator_dsn, autocommit=True) as conn:
        yield conn


@asynccontextmanager
async def acting_as(
    conn: psycopg.AsyncConnection[Any], role: str, *, commit: bool = False
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """One PostgREST request: a transaction under the JWT's role with its claims published."""
    async with conn.transaction(force_rollback=not commit):
        await conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
        await conn.execute(
            "select set_config('request.jwt.claims', %s, true)", (json.dumps(CLAIMS[role]),)
        )
        cur = await conn.execute(
            "select current_user, current_setting('request.jwt.claims', true)::json ->> 'role'"
        )
        assert await cur.fetchone() == (role, role)
        yield conn


async def _register_as_service_role(
    api: psycopg.AsyncConnection[Any], rtype: ResourceType = ResourceType.MCP_SERVER
) -> str:
    rid = unique_id("rls")
    async with acting_as(api, "service_role", commit=True) as conn:
        await conn.execute(
            "select * from public.register_resource(resource_id => %s, resource_type => %s,"
            " name => %s, machine_version => %s, owner_team => 'platform', actor => 'svc')",
            (rid, rtype.value, rid, machine_for(rtype).version),
        )
        await conn.execute(
            "select * from public.record_transition(resource_id => %s, to_state => 'registered',"
            " actor => 'svc', idempotency_key => %s)",
            (rid, f"{rid}/1"),
        )
    return rid


def _assert_permission_denied(exc: psycopg.Error, what: str) -> None:
    assert exc.sqlstate == "42501", (exc.sqlstate, str(exc))
    assert exc.diag.message_primary == f"permission denied for {what}", str(exc)


# -- the migration on a cluster without Supabase ------------------------------------------------


@pytest.fixture
def fresh_cluster(session_dir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(session_dir / f"pg-{uuid.uuid4().hex[:8]}", free_port(), durable=False)
    server.start()
    yield server
    server.destroy()


async def _roles(dsn: str) -> dict[str, tuple[bool, bool]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            "select rolname, rolcanlogin, rolbypassrls from pg_roles where rolname = any(%s)",
            (list(API_ROLES),),
        )
        return {name: (login, bypass) for name, login, bypass in await cur.fetchall()}


async def test_the_migrations_create_supabase_roles_on_plain_postgres(
    fresh_cluster: PostgresServer,
) -> None:
    dsn = fresh_cluster.dsn
    assert await _roles(dsn) == {}
    applied = await apply_migrations(dsn)
    assert "20261203000003_row_level_security.sql" in applied
    # NOLOGIN like Supabase's: nobody connects as them, PostgREST switches to them.
    assert await _roles(dsn) == {
        "anon": (False, False),
        "authenticated": (False, False),
        "service_role": (False, True),
    }
    assert await apply_migrations(dsn) == []


async def test_the_migrations_undo_supabase_default_grants(fresh_cluster: PostgresServer) -> None:
    """A Supabase project: the roles exist and every new table and function is granted to anon."""
    dsn = fresh_cluster.dsn
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(SUPABASE_ROLES_SQL)
        await conn.execute(SUPABASE_DEFAULT_PRIVILEGES_SQL)
    assert "20261203000003_row_level_security.sql" in await apply_migrations(dsn)
    async with await psycopg.AsyncConnection.connect(
        make_conninfo(dsn, user="authenticator"), autocommit=True
    ) as api:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
            async with acting_as(api, "anon") as conn:
                await conn.execute(
                    "insert into public.resource_states (resource_id, resource_type, name,"
                    " current_state, machine_version) values ('evil', 'team', 'evil', 'active', 1)"
                )
        _assert_permission_denied(caught.value, "table resource_states")
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
            async with acting_as(api, "anon") as conn:
                await conn.execute(
                    "select * from public.register_resource(resource_id => 'evil',"
                    " resource_type => 'team', name => 'evil', machine_version => 1)"
                )
        _assert_permission_denied(caught.value, "function register_resource")
        async with acting_as(api, "service_role") as conn:
            cur = await conn.execute(
                "select current_state from public.register_resource(resource_id => 'crew',"
                " resource_type => 'team', name => 'crew', machine_version => 1)"
            )
            assert await cur.fetchall() == [("created",)]


# -- anon: nothing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "statement"),
    [
        (
            "resource_states",
            "insert into public.resource_states (resource_id, resource_type, name, current_state,"
            " machine_version) values ('evil', 'team', 'evil', 'active', 1)",
        ),
        (
            "state_transitions",
            "insert into public.state_transitions (resource_id, to_state, transitioned_by,"
            " idempotency_key) values ('evil', 'active', 'anon', 'evil')",
        ),
        (
            "state_machine_arrows",
            "insert into public.state_machine_arrows values ('team', 1, 'created', 'active')",
        ),
        ("resource_states", "update public.resource_states set current_state = 'active'"),
        ("deployment_requirements", "delete from public.deployment_requirements"),
    ],
)
async def test_anon_cannot_write(
    api: psycopg.AsyncConnection[Any], table: str, statement: str
) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
        async with acting_as(api, "anon") as conn:
            await conn.execute(statement)
    _assert_permission_denied(caught.value, f"table {table}")


@pytest.mark.parametrize("relation", TABLES + VIEWS)
async def test_anon_reads_nothing(api: psycopg.AsyncConnection[Any], relation: str) -> None:
    await _register_as_service_role(api)  # there is something to leak
    kind = "view" if relation in VIEWS else "table"
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
        async with acting_as(api, "anon") as conn:
            await conn.execute(sql.SQL("select * from public.{}").format(sql.Identifier(relation)))
    _assert_permission_denied(caught.value, f"{kind} {relation}")


@pytest.mark.parametrize(
    ("function", "call"),
    [
        (
            "record_transition",
            "select * from public.record_transition(resource_id => %(rid)s,"
            " to_state => 'building', actor => 'anon', idempotency_key => 'anon-1')",
        ),
        (
            "register_resource",
            "select * from public.register_resource(resource_id => 'anon-made',"
            " resource_type => 'team', name => 'x', machine_version => 1)",
        ),
    ],
)
async def test_anon_cannot_call_the_functions(
    api: psycopg.AsyncConnection[Any], function: str, call: str
) -> None:
    rid = await _register_as_service_role(api)
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
        async with acting_as(api, "anon") as conn:
            await conn.execute(call, {"rid": rid})
    _assert_permission_denied(caught.value, f"function {function}")


async def test_rls_still_refuses_anon_when_a_grant_slips_through(
    pg_dsn: str, api: psycopg.AsyncConnection[Any]
) -> None:
    """Supabase's default privileges grant new tables to anon: the policies are the second wall."""
    await _register_as_service_role(api)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as owner:
        async with owner.transaction(force_rollback=True):
            await owner.execute("grant all on public.resource_states to anon")
            await owner.execute("set local role anon")
            cur = await owner.execute("select count(*) from public.resource_states")
            assert await cur.fetchone() == (0,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
                await owner.execute(
                    "insert into public.resource_states (resource_id, resource_type, name,"
                    " current_state, machine_version) values ('evil', 'team', 'evil', 'active', 1)"
                )
    assert caught.value.sqlstate == "42501"
    assert caught.value.diag.message_primary == (
        'new row violates row-level security policy for table "resource_states"'
    )


# -- authenticated: read only -------------------------------------------------------------------


async def test_authenticated_reads_tables_and_views(api: psycopg.AsyncConnection[Any]) -> None:
    rid = await _register_as_service_role(api)
    async with acting_as(api, "authenticated") as conn:
        cur = await conn.execute(
            "select current_state, owner_team from public.resource_states where resource_id = %s",
            (rid,),
        )
        assert await cur.fetchall() == [("registered", "platform")]
        cur = await conn.execute(
            "select from_state, to_state from public.state_transitions"
            " where resource_id = %s order by id",
            (rid,),
        )
        assert await cur.fetchall() == [(None, "created"), ("created", "registered")]
        # security_invoker views: the reader's own rights and policies apply, and they allow it.
        cur = await conn.execute(
            "select current_state from public.mcp_deployment_status where resource_id = %s", (rid,)
        )
        assert await cur.fetchall() == [("registered",)]
        cur = await conn.execute(
            "select count from public.resource_state_overview"
            " where resource_type = 'mcp_server' and state = 'registered'"
        )
        row = await cur.fetchone()
        assert row is not None and row[0] >= 1


@pytest.mark.parametrize(
    ("what", "statement"),
    [
        ("table resource_states", "update public.resource_states set current_state = 'active'"),
        ("table state_transitions", "delete from public.state_transitions"),
        (
            "table deployment_requirements",
            "insert into public.deployment_requirements (resource_id, requirement_type, name)"
            " values (%(rid)s, 'approval', 'self-approved')",
        ),
        (
            "function record_transition",
            "select * from public.record_transition(resource_id => %(rid)s,"
            " to_state => 'building', actor => 'reader', idempotency_key => %(rid)s || '/r')",
        ),
    ],
)
async def test_authenticated_cannot_write(
    api: psycopg.AsyncConnection[Any], what: str, statement: str
) -> None:
    rid = await _register_as_service_role(api)
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
        async with acting_as(api, "authenticated") as conn:
            await conn.execute(statement, {"rid": rid})
    _assert_permission_denied(caught.value, what)


# -- service_role: writes through the functions ---------------------------------------------------


async def test_service_role_registers_and_moves_a_resource(
    api: psycopg.AsyncConnection[Any],
) -> None:
    rid = unique_id("svc")
    async with acting_as(api, "service_role", commit=True) as conn:
        cur = await conn.execute(
            "select resource_id, current_state from public.register_resource(resource_id => %s,"
            " resource_type => 'team', name => 'crew', machine_version => 1, actor => 'svc')",
            (rid,),
        )
        assert await cur.fetchall() == [(rid, "created")]
        cur = await conn.execute(
            "select previous_state, new_state, replayed from public.record_transition("
            "resource_id => %s, to_state => 'registered', actor => 'svc', idempotency_key => %s,"
            " reason => 'via PostgREST', metadata => '{\"by\": \"rpc\"}'::jsonb)",
            (rid, f"{rid}/1"),
        )
        assert await cur.fetchall() == [("created", "registered", False)]
        await conn.execute(
            "insert into public.deployment_requirements (resource_id, requirement_type, name)"
            " values (%s, 'credential', 'slack-token')",
            (rid,),
        )
    async with acting_as(api, "authenticated") as conn:
        cur = await conn.execute(
            "select current_state from public.resource_states where resource_id = %s", (rid,)
        )
        assert await cur.fetchone() == ("registered",)
        cur = await conn.execute(
            "select waiting_on from public.resources_awaiting_action where resource_id = %s",
            (rid,),
        )
        assert await cur.fetchone() == (["credential:slack-token"],)


async def test_service_role_is_still_bound_by_the_machine_and_the_audit_log(
    api: psycopg.AsyncConnection[Any],
) -> None:
    rid = await _register_as_service_role(api)
    with pytest.raises(psycopg.Error) as illegal:
        async with acting_as(api, "service_role") as conn:
            await conn.execute(
                "select * from public.record_transition(resource_id => %s, to_state => 'active',"
                " actor => 'svc', idempotency_key => %s)",
                (rid, f"{rid}/skip"),
            )
    assert illegal.value.sqlstate == "RSM01"
    # The history is append-only, even for the role that writes it.
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
        async with acting_as(api, "service_role") as conn:
            await conn.execute(
                "update public.state_transitions set reason = 'rewritten' where resource_id = %s",
                (rid,),
            )
    _assert_permission_denied(caught.value, "table state_transitions")


# -- every object, including ones a later migration adds ------------------------------------------


async def test_every_rsm_relation_and_function_is_locked_down(pg_dsn: str) -> None:
    """Catalog-wide, so a later migration that forgets RLS or a grant fails here."""
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cur = await conn.execute(
            """
            select c.relname, c.relkind, c.relrowsecurity,
                   coalesce('security_invoker=true' = any(c.reloptions), false),
                   has_table_privilege('anon', c.oid, 'select, insert, update, delete'),
                   has_table_privilege('authenticated', c.oid, 'insert, update, delete')
            from pg_class c
            where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'v', 'p')
            order by c.relname
            """
        )
        relations = await cur.fetchall()
        cur = await conn.execute(
            """
            select p.proname,
                   has_function_privilege('anon', p.oid, 'execute'),
                   has_function_privilege('authenticated', p.oid, 'execute'),
                   has_function_privilege('service_role', p.oid, 'execute')
            from pg_proc p where p.pronamespace = 'public'::regnamespace
            order by p.proname
            """
        )
        functions = await cur.fetchall()
    names = {r[0] for r in relations}
    assert set(TABLES) | set(VIEWS) <= names
    for name, kind, rls, invoker, anon_any, authenticated_writes in relations:
        assert not anon_any, f"anon has privileges on {name}"
        assert not authenticated_writes, f"authenticated may write {name}"
        if kind == "v":
            assert invoker, f"view {name} is not security_invoker: it would bypass RLS"
        else:
            assert rls, f"table {name} has row-level security off"
    assert {f[0] for f in functions} >= {"record_transition", "register_resource"}
    for name, anon_exec, authenticated_exec, service_exec in functions:
        assert not anon_exec and not authenticated_exec, f"{name} is callable by API users"
        assert service_exec, f"the service role cannot call {name}"
