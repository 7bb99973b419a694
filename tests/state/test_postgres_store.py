"""Store contract tests against a real PostgreSQL: the database itself enforces the machine,
idempotency and atomicity."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from state.errors import (
    IllegalTransitionError,
    InvalidValueError,
    SchemaDriftError,
    StaleStateError,
    StoreUnavailableError,
    UnknownResourceError,
)
from state.machines import MACHINES, ResourceState, ResourceType, machine_for
from state.models import RegisterResourceRequest, ResourceRef, TransitionRequest
from state.postgres import PostgresStore, apply_migrations
from tests.helpers import unique_id

S = ResourceState


async def _register(
    store: PostgresStore, rtype: ResourceType = ResourceType.MCP_SERVER
) -> ResourceRef:
    ref = ResourceRef(resource_type=rtype, resource_id=unique_id())
    await store.register_resource(
        RegisterResourceRequest(
            ref=ref,
            name=ref.resource_id,
            owner_team="platform",
            version="v1",
            workflow_id=ref.workflow_id,
            actor="alice",
            machine_version=machine_for(rtype).version,
        )
    )
    return ref


def _move(
    ref: ResourceRef, to: ResourceState, key: str | None = None, **kw: object
) -> TransitionRequest:
    fields: dict[str, object] = {"actor": "tester", "reason": f"to {to}", **kw}
    return TransitionRequest(
        ref=ref,
        to_state=to,
        idempotency_key=key or unique_id("key"),
        **fields,  # type: ignore[arg-type]
    )


async def test_registering_twice_keeps_one_resource_and_one_created_row(
    store: PostgresStore,
) -> None:
    ref = await _register(store)
    again = await store.register_resource(
        RegisterResourceRequest(
            ref=ref,
            name="other name",
            workflow_id=ref.workflow_id,
            actor="bob",
            machine_version=1,
        )
    )
    assert again.name == ref.resource_id and again.registered_by == "alice"
    history = await store.list_transitions(ref.resource_id)
    assert [(t.from_state, t.to_state, t.actor) for t in history] == [(None, S.CREATED, "alice")]


async def test_a_transition_moves_the_resource_and_writes_one_row(store: PostgresStore) -> None:
    ref = await _register(store)
    record = await store.record_transition(
        _move(ref, S.REGISTERED, metadata={"why": "test"}, from_state=S.CREATED)
    )
    assert (record.from_state, record.to_state, record.replayed) == (S.CREATED, S.REGISTERED, False)
    row = await store.get_resource(ref.resource_id)
    assert row is not None and row.current_state is S.REGISTERED
    last = (await store.list_transitions(ref.resource_id))[-1]
    assert (last.to_state, last.actor, last.metadata) == (S.REGISTERED, "tester", {"why": "test"})


async def test_the_same_key_twice_records_once(store: PostgresStore) -> None:
    ref = await _register(store)
    first = await store.record_transition(_move(ref, S.REGISTERED, key=f"{ref.resource_id}/1"))
    second = await store.record_transition(_move(ref, S.REGISTERED, key=f"{ref.resource_id}/1"))
    assert second.replayed and second.transition_id == first.transition_id
    history = await store.list_transitions(ref.resource_id)
    assert [t.to_state for t in history] == [S.CREATED, S.REGISTERED]


async def test_concurrent_calls_with_one_key_record_once(store: PostgresStore) -> None:
    ref = await _register(store)
    key = f"{ref.resource_id}/race"
    results = await asyncio.gather(
        *(store.record_transition(_move(ref, S.REGISTERED, key=key)) for _ in range(12))
    )
    assert len({r.transition_id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert len(await store.list_transitions(ref.resource_id)) == 2


async def test_an_illegal_arrow_is_refused_and_changes_nothing(store: PostgresStore) -> None:
    ref = await _register(store)
    with pytest.raises(IllegalTransitionError, match=r"created -> active"):
        await store.record_transition(_move(ref, S.ACTIVE))
    row = await store.get_resource(ref.resource_id)
    assert row is not None and row.current_state is S.CREATED
    assert len(await store.list_transitions(ref.resource_id)) == 1


async def test_the_database_itself_refuses_an_illegal_arrow(
    pg_dsn: str, store: PostgresStore
) -> None:
    """Not the adapter: a raw SQL call gets the refusal from the function."""
    ref = await _register(store)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        with pytest.raises(psycopg.Error) as caught:
            await conn.execute(
                "select * from record_transition(resource_id => %s, to_state => 'active',"
                " actor => 'mallory', idempotency_key => %s)",
                (ref.resource_id, unique_id("k")),
            )
    assert caught.value.sqlstate == "RSM01"
    assert "created -> active" in str(caught.value)


async def test_writing_the_table_directly_cannot_skip_the_history(store: PostgresStore) -> None:
    """Every row of the walk is in state_transitions: the function is the only writer we use."""
    ref = await _register(store)
    for state in (S.REGISTERED, S.BUILDING, S.FAILED, S.REGISTERED):
        await store.record_transition(_move(ref, state))
    walk = [(t.from_state, t.to_state) for t in await store.list_transitions(ref.resource_id)]
    assert walk == [
        (None, S.CREATED),
        (S.CREATED, S.REGISTERED),
        (S.REGISTERED, S.BUILDING),
        (S.BUILDING, S.FAILED),
        (S.FAILED, S.REGISTERED),
    ]


async def test_unknown_resource_and_stale_state_are_named(store: PostgresStore) -> None:
    ghost = ResourceRef(resource_type=ResourceType.TEAM, resource_id=unique_id("ghost"))
    with pytest.raises(UnknownResourceError, match=ghost.resource_id):
        await store.record_transition(_move(ghost, S.REGISTERED))
    ref = await _register(store)
    with pytest.raises(StaleStateError, match="is in created, not building"):
        await store.record_transition(_move(ref, S.BUILT, from_state=S.BUILDING))


async def test_a_value_the_database_cannot_hold_is_named_and_records_nothing(
    store: PostgresStore,
) -> None:
    # The message models refuse NULs first; this is the store's own answer when one gets past.
    ref = await _register(store)
    with pytest.raises(InvalidValueError, match=r"NUL|0x00"):
        await store.record_transition(_move(ref, S.REGISTERED, actor="a\x00b"))
    with pytest.raises(InvalidValueError):
        await store.record_transition(_move(ref, S.REGISTERED, metadata={"k": "\u0000"}))
    assert [t.to_state for t in await store.list_transitions(ref.resource_id)] == [S.CREATED]


async def test_a_database_that_does_not_exist_is_named_at_once(pg_dsn: str) -> None:
    started = asyncio.get_running_loop().time()
    with pytest.raises(StoreUnavailableError, match='database "no_such_db" does not exist'):
        await PostgresStore.connect(pg_dsn.rsplit("/", 1)[0] + "/no_such_db", timeout=15)
    assert asyncio.get_running_loop().time() - started < 5  # not the pool's 15 s of retrying


async def test_a_state_the_database_does_not_know_is_schema_drift(
    pg_dsn: str, store: PostgresStore
) -> None:
    ref = await _register(store)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        with pytest.raises(psycopg.Error) as caught:
            await conn.execute(
                "select * from record_transition(resource_id => %s, to_state => 'hibernating',"
                " actor => 'x', idempotency_key => %s)",
                (ref.resource_id, unique_id("k")),
            )
    assert caught.value.sqlstate == "RSM04"
    assert "apply the migration" in (caught.value.diag.message_hint or "")
    from state.postgres import _translate

    assert isinstance(_translate(caught.value), SchemaDriftError)


async def test_the_database_holds_the_python_machines(pg_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cur = await conn.execute(
            "select resource_type, machine_version, from_state, to_state from state_machine_arrows"
        )
        in_db = set(await cur.fetchall())
    in_python = {
        (m.resource_type.value, m.version, f.value, t.value)
        for m in MACHINES.values()
        for f, t in m.arrows
    }
    assert in_db == in_python


async def test_migrations_are_idempotent(pg_dsn: str) -> None:
    assert await apply_migrations(pg_dsn) == []


async def test_views_show_counts_registry_and_what_awaits_action(
    pg_dsn: str, store: PostgresStore
) -> None:
    async def count(state: str) -> int:
        rows = [
            r
            for r in await store.overview()
            if r["resource_type"] == "mcp_server" and r["state"] == state
        ]
        return int(rows[0]["count"]) if rows else 0

    before_failed = await count("failed")
    ref = await _register(store)
    for state in (S.REGISTERED, S.BUILDING, S.FAILED):
        await store.record_transition(_move(ref, state))
    assert await count("failed") == before_failed + 1

    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(
            "insert into deployment_requirements (resource_id, requirement_type, name)"
            " values (%s, 'credential', 'slack-token')",
            (ref.resource_id,),
        )
        cur = await conn.execute(
            "select current_state, waiting_on from resources_awaiting_action where resource_id = %s",
            (ref.resource_id,),
        )
        assert await cur.fetchone() == ("failed", ["credential:slack-token"])
        cur = await conn.execute(
            "select current_state from mcp_deployment_status where resource_id = %s",
            (ref.resource_id,),
        )
        assert await cur.fetchone() == ("failed",)

    n8n = await _register(store, ResourceType.N8N_WORKFLOW)
    await store.record_transition(_move(n8n, S.REGISTERED))
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cur = await conn.execute(
            "select current_state, last_transition_to from workflow_deployment_pipeline"
            " where resource_id = %s",
            (n8n.resource_id,),
        )
        assert await cur.fetchone() == ("registered", "registered")


async def test_the_version_follows_what_each_deploy_deployed(store: PostgresStore) -> None:
    ref = await _register(store)  # registered as v1
    for to in (S.REGISTERED, S.BUILDING, S.BUILT, S.DEPLOYING):
        await store.record_transition(_move(ref, to))
    await store.record_transition(_move(ref, S.DEPLOYED, metadata={"version": "v2"}))
    assert (await store.get_resource(ref.resource_id)).version == "v2"  # type: ignore[union-attr]

    team = await _register(store, ResourceType.TEAM)
    for to in (S.REGISTERED, S.BUILDING, S.BUILT, S.DEPLOYING):
        await store.record_transition(_move(team, to))
    await store.record_transition(
        _move(team, S.DEPLOYED, metadata={"deployment": {"version": "v3", "replicas": 2}})
    )
    assert (await store.get_resource(team.resource_id)).version == "v3"  # type: ignore[union-attr]

    # A row that names no version (an n8n workflow's first deploy) leaves it as registered.
    n8n = await _register(store, ResourceType.N8N_WORKFLOW)
    for to in (S.REGISTERED, S.VALIDATING, S.VALIDATED, S.DEPLOYING):
        await store.record_transition(_move(n8n, to))
    await store.record_transition(_move(n8n, S.DEPLOYED, metadata={"n8n_workflow_id": "abc"}))
    assert (await store.get_resource(n8n.resource_id)).version == "v1"  # type: ignore[union-attr]
