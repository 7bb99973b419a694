"""Long-lived lifecycles continue as new: what they know must survive it.

A Temporal dev server of this module's own suggests continue-as-new after a few dozen events (the
session's server keeps the default of thousands), so a handful of operator commands crosses runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import docker
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from control.client import LifecycleClient
from control.state_manager import StateClient, WorkflowStateManager
from state.commands import ApprovalPolicy
from state.machines import ResourceState
from state.models import LifecyclePolicy, LifecycleStatus, workflow_id_for
from state.postgres import PostgresStore
from state.settings import RsmSettings
from tests.conftest import EXAMPLES
from tests.helpers import assert_eventually, running_worker, unique_id
from workers.images import PYTHON_MCP_IMAGE
from workers.services.temporal import temporal_cli
from workers.worker import real_activities
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

S = ResourceState
SUGGEST_AFTER_EVENTS = 40


@pytest.fixture(scope="module")
async def short_history_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
        dev_server_extra_args=[
            "--dynamic-config-value",
            f"limit.historyCount.suggestContinueAsNew={SUGGEST_AFTER_EVENTS}",
        ],
    )
    yield env
    await env.shutdown()


@pytest.fixture
async def settings_and_client(
    short_history_env: WorkflowEnvironment,
    store: PostgresStore,
    pg_dsn: str,
    task_queue: str,
    docker_engine: object,
) -> AsyncIterator[tuple[RsmSettings, Client]]:
    client = short_history_env.client
    settings = RsmSettings(
        task_queue=task_queue,
        mcp_base_image=PYTHON_MCP_IMAGE,
        RSM_DATABASE_URL=pg_dsn,
        RSM_TEMPORAL_ADDRESS=client.service_client.config.target_host,
    )
    async with running_worker(client, task_queue, real_activities(store, settings).all()):
        yield settings, client


@pytest.fixture(autouse=True)
def _remove_containers(docker_client: docker.DockerClient) -> Iterator[None]:
    yield
    for container in docker_client.containers.list(all=True, filters={"label": "rsm.resource_id"}):
        if container.labels["rsm.resource_id"].startswith("t-can-"):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                container.remove(force=True)


async def runs(handle: WorkflowHandle[Any, Any]) -> int:
    """How many runs this workflow id has had (1 + continue-as-new events so far)."""
    count = 1
    client = handle._client  # the handle's own client, whatever server it talks to
    run_id: str | None = None
    while True:
        history = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        first = history.events[0].workflow_execution_started_event_attributes
        if not first.continued_execution_run_id:
            return count
        count += 1
        run_id = first.continued_execution_run_id


def continued(history_events: list[Any]) -> bool:
    return any(
        e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
        for e in history_events
    )


async def test_an_approved_mcp_server_stays_approved_across_continue_as_new(
    settings_and_client: tuple[RsmSettings, Client],
) -> None:
    settings, client = settings_and_client
    lc = LifecycleClient(client, settings)
    rid = unique_id("t-can-mcp")
    policy = LifecyclePolicy(approval=ApprovalPolicy(required=True, approvers=["dana"]))
    handle = await lc.register_mcp(
        EXAMPLES / "mcp/toolbox", resource_id=rid, actor="alice", policy=policy
    )

    async def state_is(state: S) -> LifecycleStatus:
        async def check() -> LifecycleStatus:
            status = await lc.status(handle)
            assert status.state is state, (status.state, status.blocked_on, status.failure_reason)
            return status

        return await assert_eventually(check, timeout=90, interval=0.2)

    await state_is(S.AVAILABLE)
    await lc.approve("mcp_server", rid, "dana", "reviewed")
    await state_is(S.ACTIVE)

    # Deactivate and activate until the lifecycle has continued as new at least once, then once more.
    for _ in range(6):
        await lc.run_command("mcp_server", rid, "deactivate", "ops")
        await state_is(S.INACTIVE)
        await lc.run_command("mcp_server", rid, "activate", "ops")
        status = await state_is(S.ACTIVE)
        if await runs(handle) > 1:
            break
    assert await runs(handle) > 1, "the lifecycle never continued as new"
    await lc.run_command("mcp_server", rid, "deactivate", "ops")
    await state_is(S.INACTIVE)
    await lc.run_command("mcp_server", rid, "activate", "ops")
    status = await state_is(S.ACTIVE)
    assert status.approved_by == "dana"
    assert status.blocked_on == []


async def test_a_reported_resource_keeps_its_state_and_requirements_across_continue_as_new(
    settings_and_client: tuple[RsmSettings, Client],
) -> None:
    settings, client = settings_and_client
    rid = unique_id("t-can-wf")
    connection = await asyncio.to_thread(StateClient, settings)
    try:

        def walk_and_toggle() -> None:
            mgr = WorkflowStateManager(connection)
            assert mgr.register_workflow(rid, "Toggler", "ops", "import-api") == (True, None)
            for state in ("validating", "validated", "deploying", "deployed", "active"):
                assert mgr.transition_state(rid, "Toggler", state, "step", "ci") == (True, None)
            assert mgr.add_deployment_requirement(rid, "credential", "SMTP")
            for _ in range(12):
                assert mgr.transition_state(rid, "Toggler", "inactive", "off", "ops")[0]
                ok, error = mgr.transition_state(rid, "Toggler", "active", "on", "ops")
                assert not ok and error == "not active while waiting on credential:SMTP"
                assert mgr.update_requirement_status(rid, "SMTP", "satisfied")
                assert mgr.transition_state(rid, "Toggler", "active", "on", "ops") == (True, None)
                assert mgr.update_requirement_status(rid, "SMTP", "pending")

        await asyncio.to_thread(walk_and_toggle)
        handle = client.get_workflow_handle(workflow_id_for("n8n_workflow", rid))
        assert await runs(handle) > 1, "the lifecycle never continued as new"

        status = await handle.query("get_status", result_type=LifecycleStatus)
        assert status.state is S.ACTIVE
        assert status.blocked_on == ["credential:SMTP"]

        def still_gated() -> tuple[bool, str | None]:
            mgr = WorkflowStateManager(connection)
            assert mgr.transition_state(rid, "Toggler", "inactive", "off", "ops") == (True, None)
            return mgr.transition_state(rid, "Toggler", "active", "on", "ops")

        assert await asyncio.to_thread(still_gated) == (
            False,
            "not active while waiting on credential:SMTP",
        )
    finally:
        await asyncio.to_thread(connection.close)
