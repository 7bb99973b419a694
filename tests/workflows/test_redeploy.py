"""Redeploys on the real stack: a bad version rolls back to the last known good one by itself and
is refused afterwards; a redeploy supersedes one still building."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import Client

from control.client import CommandRefused, LifecycleClient
from control.sources import directory_version
from state.machines import ResourceState
from state.models import LifecyclePolicy
from state.postgres import PostgresStore
from state.settings import RsmSettings
from tests.conftest import EXAMPLES
from tests.helpers import assert_eventually, running_worker, unique_id
from tests.workflows.test_mcp_lifecycle import save_history, settled, walk
from workers.images import PYTHON_MCP_IMAGE
from workers.worker import real_activities

S = ResourceState
FAST = LifecyclePolicy(health_deadline=timedelta(seconds=4))


@pytest.fixture
async def lifecycle(
    client: Client, store: PostgresStore, task_queue: str, docker_engine: object
) -> AsyncIterator[LifecycleClient]:
    settings = RsmSettings(task_queue=task_queue, mcp_base_image=PYTHON_MCP_IMAGE)
    async with running_worker(client, task_queue, real_activities(store, settings).all()):
        yield LifecycleClient(client, settings)


def toolbox_copy(root: Path, name: str, *, mcp_path: str = "/mcp", build_step: str = "") -> Path:
    target = root / name
    shutil.copytree(EXAMPLES / "mcp/toolbox", target)
    server = target / "server.py"
    server.write_text(
        server.read_text().replace(
            "stateless_http=True,", f'stateless_http=True,\n    streamable_http_path="{mcp_path}",'
        )
        + f"\n# {name}\n"
    )
    if build_step:
        dockerfile = target / "Dockerfile"
        dockerfile.write_text(
            dockerfile.read_text().replace("WORKDIR /app", f"WORKDIR /app\n{build_step}")
        )
    return target


async def test_a_bad_version_rolls_back_to_the_last_good_one_and_is_refused_after(
    lifecycle: LifecycleClient, store: PostgresStore, tmp_path: Path
) -> None:
    good = toolbox_copy(tmp_path, "v1")
    # Serves MCP on another path: the handshake at /mcp fails.
    bad = toolbox_copy(tmp_path, "v2", mcp_path="/elsewhere")
    rid = unique_id("t-rollback")
    handle = await lifecycle.register_mcp(good, resource_id=rid, actor="alice", policy=FAST)
    assert (await settled(lifecycle, handle)).state is S.ACTIVE
    good_version = directory_version(good)
    bad_version = directory_version(bad)

    result = await lifecycle.run_command("mcp_server", rid, "redeploy", actor="bob", path=str(bad))
    assert result.accepted

    async def rolled_back() -> None:
        status = await lifecycle.status(handle)
        assert status.state is S.ACTIVE and status.bad_versions == [bad_version], status
        assert status.version == good_version and status.last_good_version == good_version

    await assert_eventually(rolled_back, timeout=120)
    rows = await store.list_transitions(rid)
    tail = [(t.from_state, t.to_state) for t in rows[9:]]
    assert tail == [
        (S.ACTIVE, S.BUILDING),
        (S.BUILDING, S.BUILT),
        (S.BUILT, S.DEPLOYING),
        (S.DEPLOYING, S.DEPLOYED),
        (S.DEPLOYED, S.HEALTH_CHECKING),
        (S.HEALTH_CHECKING, S.FAILED),
        (S.FAILED, S.DEPLOYING),
        (S.DEPLOYING, S.DEPLOYED),
        (S.DEPLOYED, S.HEALTH_CHECKING),
        (S.HEALTH_CHECKING, S.AVAILABLE),
        (S.AVAILABLE, S.ACTIVE),
    ]
    assert rows[9].actor == "bob"
    rollback = rows[15]
    assert rollback.reason.startswith(
        f"rolling back to version {good_version} after version {bad_version} failed: MCP handshake"
    )
    assert rows[-2].reason == f"rolled back to version {good_version}"
    # The database names the version that runs: the bad one while it was deployed, then the good.
    assert [t.metadata.get("version") for t in rows if t.to_state is S.DEPLOYED][-2:] == [
        bad_version,
        good_version,
    ]
    assert (await store.get_resource(rid)).version == good_version  # type: ignore[union-attr]

    with pytest.raises(
        CommandRefused, match=f"version {bad_version} failed before; give a newer one"
    ):
        await lifecycle.run_command("mcp_server", rid, "redeploy", actor="bob", path=str(bad))
    await lifecycle.command(handle, "archive", actor="test")
    await asyncio.wait_for(handle.result(), 60)


async def test_a_redeploy_whose_build_fails_leaves_the_good_version_serving(
    lifecycle: LifecycleClient, store: PostgresStore, tmp_path: Path
) -> None:
    good = toolbox_copy(tmp_path, "v1")
    broken = toolbox_copy(tmp_path, "v2", build_step="RUN echo no such tool >&2 && false")
    rid = unique_id("t-keep")
    handle = await lifecycle.register_mcp(good, resource_id=rid, actor="alice", policy=FAST)
    assert (await settled(lifecycle, handle)).state is S.ACTIVE
    serving = (await lifecycle.status(handle)).deployment
    assert serving is not None

    await lifecycle.run_command("mcp_server", rid, "redeploy", actor="bob", path=str(broken))

    async def rolled_back() -> None:
        status = await lifecycle.status(handle)
        assert status.state is S.ACTIVE and status.bad_versions, status

    await assert_eventually(rolled_back, timeout=120)
    # Nothing was deployed, so nothing was restarted: the same container, at the same address.
    kept = (await lifecycle.status(handle)).deployment
    assert kept is not None and kept.kept
    assert (kept.runtime_ref, kept.endpoint) == (serving.runtime_ref, serving.endpoint)
    rows = await store.list_transitions(rid)
    assert [(t.from_state, t.to_state) for t in rows[9:12]] == [
        (S.ACTIVE, S.BUILDING),
        (S.BUILDING, S.FAILED),
        (S.FAILED, S.DEPLOYING),
    ]
    assert "no such tool" in rows[10].reason
    assert rows[12].reason == f"still running at {serving.endpoint}"
    await lifecycle.command(handle, "archive", actor="test")
    await asyncio.wait_for(handle.result(), 60)
    await save_history(handle, "mcp_build_failed_rolled_back_kept_archived")


async def test_a_redeploy_supersedes_a_build_in_flight(
    lifecycle: LifecycleClient, store: PostgresStore, tmp_path: Path
) -> None:
    v1 = toolbox_copy(tmp_path, "v1")
    slow = toolbox_copy(tmp_path, "v2", build_step=f"RUN sleep 20 && echo {unique_id()}")
    v3 = toolbox_copy(tmp_path, "v3")
    rid = unique_id("t-supersede")
    handle = await lifecycle.register_mcp(v1, resource_id=rid, actor="alice")
    assert (await settled(lifecycle, handle)).state is S.ACTIVE

    await lifecycle.run_command("mcp_server", rid, "redeploy", actor="bob", path=str(slow))

    async def building_slow() -> None:
        progress = await lifecycle.progress(handle)
        status = await lifecycle.status(handle)
        assert progress and "RUN sleep 20" in str(progress.get("step")), (progress, status)

    await assert_eventually(building_slow, timeout=60)
    await lifecycle.run_command("mcp_server", rid, "redeploy", actor="carol", path=str(v3))

    async def on_v3() -> None:
        status = await lifecycle.status(handle)
        assert status.state is S.ACTIVE and status.version == directory_version(v3), status

    await assert_eventually(on_v3, timeout=90)
    assert (await store.get_resource(rid)).version == directory_version(v3)  # type: ignore[union-attr]
    rows = await store.list_transitions(rid)
    superseded = [t for t in rows if "superseded" in t.reason]
    assert [(t.from_state, t.to_state) for t in superseded] == [(S.BUILDING, S.FAILED)]
    assert superseded[0].reason == f"version {directory_version(slow)} superseded by a redeploy"
    assert (await walk(store, rid))[-1] == (S.AVAILABLE, S.ACTIVE)
    carol = [t for t in rows if t.actor == "carol"]
    assert [(t.from_state, t.to_state) for t in carol] == [(S.FAILED, S.BUILDING)]
    await lifecycle.command(handle, "archive", actor="test")
    await asyncio.wait_for(handle.result(), 60)
