"""A worker newer than its database: a state the schema does not know is a named error saying a
migration is missing; the transition is kept (workflow history, worker log), the resource shows
`schema-drift` as what it waits on, and it goes on by itself once the migration is applied."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import psycopg
import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from control.client import LifecycleClient
from state.machines import ResourceState
from state.models import LifecyclePolicy, TransitionRequest
from state.postgres import PostgresStore, apply_migrations
from state.settings import RsmSettings
from tests.conftest import EXAMPLES
from tests.helpers import assert_eventually, running_worker, unique_id
from tests.workflows.test_mcp_lifecycle import HAPPY_WALK, walk
from workers.images import PYTHON_MCP_IMAGE
from workers.worker import real_activities

S = ResourceState


@pytest.fixture
async def old_schema_dsn(pg_dsn: str) -> AsyncIterator[str]:
    """A database whose schema does not know the state `available` yet."""
    name = unique_id("drift").replace("-", "_")
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(f"create database {name}")
    dsn = pg_dsn.rsplit("/", 1)[0] + f"/{name}"
    await apply_migrations(dsn)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for table, column in (
            ("state_machine_arrows", "to_state"),
            ("state_machine_arrows", "from_state"),
            ("state_transitions", "to_state"),
            ("state_transitions", "from_state"),
            ("resource_states", "current_state"),
        ):
            await conn.execute(f"alter table {table} drop constraint {table}_{column}_fkey")
        await conn.execute("delete from lifecycle_states where name = 'available'")
    yield dsn
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(f"drop database {name} with (force)")


async def test_schema_drift_is_named_kept_and_recovered_once_migrated(
    client: Client,
    task_queue: str,
    docker_engine: object,
    old_schema_dsn: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    store = await PostgresStore.connect(old_schema_dsn)
    settings = RsmSettings(task_queue=task_queue, mcp_base_image=PYTHON_MCP_IMAGE)
    try:
        async with running_worker(client, task_queue, real_activities(store, settings).all()):
            lc = LifecycleClient(client, settings)
            rid = unique_id("t-drift")
            handle = await lc.register_mcp(
                EXAMPLES / "mcp/toolbox",
                resource_id=rid,
                policy=LifecyclePolicy(schema_drift_retry=timedelta(seconds=1)),
            )

            async def drifting() -> None:
                status = await lc.status(handle)
                assert status.state is S.HEALTH_CHECKING and status.blocked_on == ["schema-drift"]
                assert status.schema_error is not None
                assert "unknown lifecycle state 'available'" in status.schema_error
                assert "apply the migration that adds this state" in status.schema_error

            await assert_eventually(drifting, timeout=120)

            async def in_the_inbox() -> None:
                ids = [
                    w.id
                    async for w in client.list_workflows(
                        f'BlockedOn="schema-drift" AND WorkflowId="{handle.id}"'
                    )
                ]
                assert ids == [handle.id]

            await assert_eventually(in_the_inbox)
            assert any(
                "could not record health_checking -> available" in r.getMessage()
                for r in caplog.records
            ), "the worker log names the transition it could not record"
            # The workflow's history keeps the transition it could not record and the refusal.
            history = await handle.fetch_history()
            requests = [
                (
                    await pydantic_data_converter.decode(
                        e.activity_task_scheduled_event_attributes.input.payloads,
                        [TransitionRequest],
                    )
                )[0]
                for e in history.events
                if e.HasField("activity_task_scheduled_event_attributes")
                and e.activity_task_scheduled_event_attributes.activity_type.name
                == "record_transition"
            ]
            kept = [r for r in requests if r.to_state is S.AVAILABLE]
            assert kept and kept[0].reason == "toolbox answers with 3 tools"
            assert kept[0].metadata["tools"] == ["add", "utc_now", "word_count"]
            failures = [
                e.activity_task_failed_event_attributes.failure
                for e in history.events
                if e.HasField("activity_task_failed_event_attributes")
            ]
            assert any(f.application_failure_info.type == "SchemaDrift" for f in failures)

            # The missing migration is applied: the lifecycle goes on by itself.
            async with await psycopg.AsyncConnection.connect(
                old_schema_dsn, autocommit=True
            ) as conn:
                await conn.execute("insert into lifecycle_states (name) values ('available')")

            async def active() -> None:
                status = await lc.status(handle)
                assert status.state is S.ACTIVE and status.schema_error is None

            await assert_eventually(active, timeout=60)
            assert await walk(store, rid) == HAPPY_WALK
            await lc.command(handle, "archive", actor="test")
            await asyncio.wait_for(handle.result(), 60)
    finally:
        await store.close()
