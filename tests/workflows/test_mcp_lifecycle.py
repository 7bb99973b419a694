"""The MCP lifecycle end to end on real components: Temporal dev server, Postgres, Docker, MCP."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import docker
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

from control.client import CommandRefused, LifecycleClient, RegistrationRefused
from control.sources import directory_version
from state.machines import ResourceState
from state.models import LifecyclePolicy, LifecycleStatus
from state.postgres import PostgresStore
from state.settings import RsmSettings
from tests.conftest import EXAMPLES
from tests.helpers import assert_eventually, running_worker, unique_id
from workers.images import BUSYBOX_IMAGE, PYTHON_MCP_IMAGE
from workers.worker import real_activities

S = ResourceState
HAPPY_WALK = [
    (None, S.CREATED),
    (S.CREATED, S.REGISTERED),
    (S.REGISTERED, S.BUILDING),
    (S.BUILDING, S.BUILT),
    (S.BUILT, S.DEPLOYING),
    (S.DEPLOYING, S.DEPLOYED),
    (S.DEPLOYED, S.HEALTH_CHECKING),
    (S.HEALTH_CHECKING, S.AVAILABLE),
    (S.AVAILABLE, S.ACTIVE),
]
HISTORIES = Path(__file__).parent / "histories"
FAST_POLICY = LifecyclePolicy(health_deadline=timedelta(seconds=4))


@pytest.fixture
async def lifecycle(
    client: Client, store: PostgresStore, task_queue: str, docker_engine: object
) -> AsyncIterator[LifecycleClient]:
    settings = RsmSettings(task_queue=task_queue, mcp_base_image=PYTHON_MCP_IMAGE)
    activities = real_activities(store, settings).all()
    async with running_worker(client, task_queue, activities):
        yield LifecycleClient(client, settings)


@pytest.fixture(autouse=True)
def _remove_test_containers(docker_client: docker.DockerClient) -> AsyncIterator[None]:  # type: ignore[misc]
    yield  # type: ignore[misc]
    for container in docker_client.containers.list(all=True, filters={"label": "rsm.resource_id"}):
        if container.labels["rsm.resource_id"].startswith("t-"):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                container.remove(force=True)


async def settled(
    lc: LifecycleClient,
    handle: WorkflowHandle[Any, Any],
    timeout: float = 120,
    states: frozenset[S] = frozenset({S.ACTIVE, S.FAILED, S.ARCHIVED, S.INACTIVE}),
) -> LifecycleStatus:
    async def check() -> LifecycleStatus:
        status = await lc.status(handle)
        assert status.state in states, status.state
        return status

    return await assert_eventually(check, timeout=timeout, interval=0.2)


async def walk(store: PostgresStore, resource_id: str) -> list[tuple[S | None, S]]:
    return [(t.from_state, t.to_state) for t in await store.list_transitions(resource_id)]


async def save_history(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """With RSM_RECORD_HISTORIES=1, keep this run's history for the replay tests (a behaviour
    change then needs workflow.patched to replay the saved one)."""
    if os.environ.get("RSM_RECORD_HISTORIES") == "1":
        history = await handle.fetch_history()
        HISTORIES.mkdir(exist_ok=True)
        (HISTORIES / f"{name}.json").write_text(history.to_json())


def dockerfile_dir(tmp_path: Path, body: str) -> Path:
    tmp_path.joinpath("Dockerfile").write_text(f"FROM {BUSYBOX_IMAGE}\n{body}\n")
    return tmp_path


async def test_example_mcp_server_walks_to_active_and_serves_its_tools(
    lifecycle: LifecycleClient, store: PostgresStore, client: Client
) -> None:
    rid = unique_id("t-toolbox")
    handle = await lifecycle.register_mcp(EXAMPLES / "mcp/toolbox", resource_id=rid, actor="alice")
    status = await settled(lifecycle, handle)
    assert status.state is S.ACTIVE, status.failure_reason

    history = await store.list_transitions(rid)
    assert [(t.from_state, t.to_state) for t in history] == HAPPY_WALK
    assert history[0].actor == history[1].actor == "alice"
    available = history[-2]
    assert available.metadata["server_name"] == "toolbox"
    assert available.metadata["tools"] == ["add", "utc_now", "word_count"]
    assert available.metadata["protocol_version"]
    registry = await store.mcp_status(rid)
    assert registry is not None and registry["endpoint"] == status.deployment.endpoint  # type: ignore[union-attr]

    # The server is really there: call a tool through MCP.
    async with (
        streamable_http_client(status.deployment.endpoint) as (read, write, _),  # type: ignore[union-attr]
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        result = await session.call_tool("add", {"a": 2, "b": 3})
    assert "5" in result.content[0].text  # type: ignore[union-attr]

    async def listed_as_active() -> None:
        ids = [
            wf.id
            async for wf in client.list_workflows(
                f'ResourceState="active" AND ResourceType="mcp_server" AND WorkflowId="{handle.id}"'
            )
        ]
        assert ids == [handle.id]

    await assert_eventually(listed_as_active)

    await lifecycle.command(handle, "archive", actor="alice", reason="test over")
    result = await handle.result()
    assert result.final_state is S.ARCHIVED
    assert (await walk(store, rid))[-1] == (S.ACTIVE, S.ARCHIVED)
    await save_history(handle, "mcp_active_then_archived")


async def test_registering_twice_gives_one_workflow_and_one_history(
    lifecycle: LifecycleClient, store: PostgresStore
) -> None:
    rid = unique_id("t-twice")
    first, second = await asyncio.gather(
        lifecycle.register_mcp(EXAMPLES / "mcp/toolbox", resource_id=rid),
        lifecycle.register_mcp(EXAMPLES / "mcp/toolbox", resource_id=rid),
    )
    assert first.id == second.id and first.result_run_id == second.result_run_id
    assert (await settled(lifecycle, first)).state is S.ACTIVE
    third = await lifecycle.register_mcp(EXAMPLES / "mcp/toolbox", resource_id=rid)
    assert third.result_run_id == first.result_run_id
    assert await walk(store, rid) == HAPPY_WALK
    await lifecycle.command(first, "archive", actor="test")
    await first.result()


async def test_registering_another_source_or_an_archived_id_is_refused_saying_what_to_do(
    lifecycle: LifecycleClient, store: PostgresStore, tmp_path: Path
) -> None:
    rid = unique_id("t-other")
    handle = await lifecycle.register_mcp(EXAMPLES / "mcp/toolbox", resource_id=rid)
    assert (await settled(lifecycle, handle)).state is S.ACTIVE
    other = dockerfile_dir(tmp_path, 'CMD ["sleep", "60"]')
    # Before, the running lifecycle was returned and the new source silently ignored.
    with pytest.raises(RegistrationRefused) as refused:
        await lifecycle.register_mcp(other, resource_id=rid)
    running = directory_version(EXAMPLES / "mcp/toolbox")
    assert str(refused.value) == (
        f"resource/mcp_server/{rid} is already registered and runs version {running} (active);"
        f" this source is version {directory_version(other)}. To deploy it:"
        f" rsm command {rid} redeploy --path {other}"
    )
    assert await walk(store, rid) == HAPPY_WALK  # nothing recorded

    await lifecycle.command(handle, "archive", actor="test")
    await handle.result()
    for source in (EXAMPLES / "mcp/toolbox", other):
        with pytest.raises(RegistrationRefused, match="was archived: an archived id is not reused"):
            await lifecycle.register_mcp(source, resource_id=rid)
    assert (await walk(store, rid))[-1] == (S.ACTIVE, S.ARCHIVED)


async def test_a_failing_run_step_fails_with_that_line_and_waits_for_retry(
    lifecycle: LifecycleClient, store: PostgresStore, tmp_path: Path
) -> None:
    # The classic builder can lose the output of a step that exits within milliseconds of starting
    # (it attaches after the start); a short sleep makes the step's own error line arrive.
    source = dockerfile_dir(
        tmp_path, 'RUN sleep 0.5 && echo preparing && cat /etc/rsm-missing.conf\nCMD ["true"]'
    )
    rid = unique_id("t-badrun")
    handle = await lifecycle.register_mcp(source, resource_id=rid)
    status = await settled(lifecycle, handle)
    assert status.state is S.FAILED
    assert "returned a non-zero code: 1" in (status.failure_reason or "")
    assert "can't open '/etc/rsm-missing.conf'" in (status.failure_reason or "")
    failed = (await store.list_transitions(rid))[-1]
    assert (failed.from_state, failed.to_state) == (S.BUILDING, S.FAILED)
    assert failed.reason == status.failure_reason
    assert failed.metadata["error_type"] == "BuildFailed"
    assert any("preparing" in line for line in failed.metadata["log_tail"])

    # The failure waits for a person; retry runs the build again (and it fails again, recorded).
    await lifecycle.command(handle, "retry", actor="bob", reason="try again")

    async def failed_twice() -> None:
        states = [t for _, t in await walk(store, rid)]
        assert states.count(S.FAILED) == 2

    await assert_eventually(failed_twice, timeout=60)
    retry_row = [t for t in await store.list_transitions(rid) if t.actor == "bob"]
    assert [(t.from_state, t.to_state, t.reason) for t in retry_row] == [
        (S.FAILED, S.REGISTERED, "try again")
    ]
    await lifecycle.command(handle, "archive", actor="bob")
    assert (await handle.result()).final_state is S.ARCHIVED
    await save_history(handle, "mcp_build_failed_retried_archived")


async def test_a_server_that_fails_the_mcp_handshake_fails_with_the_mcp_error(
    lifecycle: LifecycleClient, store: PostgresStore, tmp_path: Path
) -> None:
    # Answers HTTP on the port, but is no MCP server: busybox httpd refuses the POST with a 501.
    source = dockerfile_dir(
        tmp_path,
        'CMD ["sh", "-c", "mkdir -p /www && echo hello > /www/index.html && '
        'exec httpd -f -p 127.0.0.1:$PORT -h /www"]',
    )
    rid = unique_id("t-nomcp")
    handle = await lifecycle.register_mcp(source, resource_id=rid, policy=FAST_POLICY)
    status = await settled(lifecycle, handle)
    assert status.state is S.FAILED
    reason = status.failure_reason or ""
    assert reason.startswith(f"MCP handshake with {status.deployment.endpoint} failed after")  # type: ignore[union-attr]
    assert reason.endswith(
        "HTTPStatusError: Server error '501 Not Implemented' for url "
        f"'{status.deployment.endpoint}'"
    )  # type: ignore[union-attr]
    last = (await store.list_transitions(rid))[-1]
    assert (last.from_state, last.to_state) == (S.HEALTH_CHECKING, S.FAILED)
    assert last.metadata["error_type"] == "McpHealthCheckFailed"
    assert last.metadata["attempts"] >= 2
    await lifecycle.command(handle, "archive", actor="test")
    await handle.result()


async def test_a_container_that_exits_at_start_fails_the_deploy_with_its_log(
    lifecycle: LifecycleClient, store: PostgresStore, tmp_path: Path
) -> None:
    source = dockerfile_dir(tmp_path, 'CMD ["sh", "-c", "echo missing TOOLBOX_TOKEN >&2; exit 3"]')
    rid = unique_id("t-crash")
    handle = await lifecycle.register_mcp(source, resource_id=rid)
    status = await settled(lifecycle, handle)
    assert status.state is S.FAILED
    assert "exited with code 3: missing TOOLBOX_TOKEN" in (status.failure_reason or "")
    assert (await walk(store, rid))[-1] == (S.DEPLOYING, S.FAILED)
    await lifecycle.command(handle, "archive", actor="test")
    await handle.result()


async def test_kubernetes_asked_of_a_worker_without_it_fails_saying_which_worker_is_missing(
    lifecycle: LifecycleClient, store: PostgresStore, task_queue: str
) -> None:
    # The fixture's worker runs with RSM_KUBERNETES_ENABLED unset.
    rid = unique_id("t-nok8s")
    handle = await lifecycle.register_mcp(
        EXAMPLES / "mcp/toolbox", resource_id=rid, runtime="kubernetes"
    )
    status = await settled(lifecycle, handle)
    assert status.state is S.FAILED
    assert status.failure_reason == (
        f"no worker on task queue {task_queue} runs kubernetes_apply: start a worker with"
        " RSM_KUBERNETES_ENABLED=true (and its KUBECONFIG), or register the resource for the"
        " docker runtime"
    )
    failed = (await store.list_transitions(rid))[-1]
    assert (failed.from_state, failed.to_state) == (S.DEPLOYING, S.FAILED)
    assert failed.metadata["error_type"] == "ActivityNotRegistered"
    # Nothing was ever deployed, so archiving has nothing to stop: it is not held hostage by the
    # missing worker (whose kubernetes_delete it still asked for first).
    result = await lifecycle.run_command("mcp_server", rid, "archive", actor="test")
    assert (result.accepted, result.state) == (True, S.ARCHIVED)
    assert (await handle.result()).final_state is S.ARCHIVED
    archived = (await store.list_transitions(rid))[-1]
    assert (archived.from_state, archived.to_state, archived.actor) == (
        S.FAILED,
        S.ARCHIVED,
        "test",
    )
    assert archived.reason.startswith(
        f"archived; nothing was deployed (no worker on task queue {task_queue} runs"
        " kubernetes_delete"
    )
    await save_history(handle, "mcp_kubernetes_without_worker_archived")


async def test_deactivate_stops_the_container_and_activate_brings_it_back(
    lifecycle: LifecycleClient, store: PostgresStore, docker_client: docker.DockerClient
) -> None:
    rid = unique_id("t-toggle")
    handle = await lifecycle.register_mcp(EXAMPLES / "mcp/toolbox", resource_id=rid)
    assert (await settled(lifecycle, handle)).state is S.ACTIVE
    await lifecycle.command(handle, "deactivate", actor="ops", reason="maintenance")
    await settled(lifecycle, handle, states=frozenset({S.INACTIVE}))
    assert (
        docker_client.containers.list(all=True, filters={"label": f"rsm.resource_id={rid}"}) == []
    )

    # Recording active by hand would leave nothing running: activate is the way back.
    with pytest.raises(CommandRefused, match="the activate command starts it again"):
        await lifecycle.transition("mcp_server", rid, "active", actor="ops", reason="on")
    await lifecycle.command(handle, "activate", actor="ops")

    async def active_again() -> None:
        assert (await walk(store, rid))[-1] == (S.AVAILABLE, S.ACTIVE)
        assert (await lifecycle.status(handle)).state is S.ACTIVE

    await assert_eventually(active_again, timeout=60)
    assert len(docker_client.containers.list(filters={"label": f"rsm.resource_id={rid}"})) == 1
    # Whoever asked is on the row the command started, as deactivate's is.
    rows = await store.list_transitions(rid)
    toggled = [(t.from_state, t.to_state, t.actor) for t in rows if t.actor == "ops"]
    assert toggled == [(S.ACTIVE, S.INACTIVE, "ops"), (S.INACTIVE, S.DEPLOYING, "ops")]
    await lifecycle.command(handle, "archive", actor="ops")
    await handle.result()
    assert (await handle.describe()).status is WorkflowExecutionStatus.COMPLETED
    await save_history(handle, "mcp_deactivated_activated_archived")
