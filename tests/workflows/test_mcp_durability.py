"""A worker killed (SIGKILL) in the middle of a build: the lifecycle resumes on another worker and
no step is recorded twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import docker
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from control.client import LifecycleClient
from state.machines import ResourceState
from state.models import LifecyclePolicy
from state.postgres import PostgresStore
from state.settings import RsmSettings
from tests.helpers import assert_eventually, running_worker, unique_id
from tests.workflows.test_mcp_lifecycle import HAPPY_WALK, walk
from workers.images import PYTHON_MCP_IMAGE
from workers.worker import real_activities

S = ResourceState
REPO = Path(__file__).resolve().parents[2]


async def test_a_worker_killed_mid_build_resumes_elsewhere_without_repeating_a_step(
    temporal_env: WorkflowEnvironment,
    client: Client,
    store: PostgresStore,
    pg_dsn: str,
    task_queue: str,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    # A real MCP server whose build takes a few seconds, so the kill lands inside the build.
    source = tmp_path / "slow-toolbox"
    source.mkdir()
    toolbox = REPO / "examples/mcp/toolbox"
    for name in ("server.py", "requirements.txt"):
        (source / name).write_text((toolbox / name).read_text())
    (source / "Dockerfile").write_text(
        (toolbox / "Dockerfile")
        .read_text()
        .replace("WORKDIR /app", f"WORKDIR /app\nRUN sleep 6 && echo {unique_id()}")
    )
    settings = RsmSettings(task_queue=task_queue, mcp_base_image=PYTHON_MCP_IMAGE)
    env = {
        **os.environ,
        "RSM_TASK_QUEUE": task_queue,
        "RSM_TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "RSM_DATABASE_URL": pg_dsn,
        "RSM_MCP_BASE_IMAGE": PYTHON_MCP_IMAGE,
    }
    doomed = subprocess.Popen(
        [sys.executable, "-m", "workers.main", "worker"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lc = LifecycleClient(client, settings)
        rid = unique_id("t-killed")
        handle = await lc.register_mcp(
            source,
            resource_id=rid,
            policy=LifecyclePolicy(step_heartbeat_timeout=timedelta(seconds=3)),
        )

        async def building() -> None:
            progress = await lc.progress(handle)
            assert progress and "RUN sleep 6" in str(progress.get("step")), progress

        await assert_eventually(building, timeout=60)
    finally:
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait()

    async with running_worker(client, task_queue, real_activities(store, settings).all()):

        async def active() -> None:
            assert (await lc.status(handle)).state is S.ACTIVE

        await assert_eventually(active, timeout=90)
        assert await walk(store, rid) == HAPPY_WALK
        history = await handle.fetch_history()
        attempts = [
            e.activity_task_started_event_attributes.attempt
            for e in history.events
            if e.HasField("activity_task_started_event_attributes")
        ]
        assert max(attempts) >= 2, "the build ran again on the second worker"
        assert len(docker_client.containers.list(filters={"label": f"rsm.resource_id={rid}"})) == 1
        await lc.command(handle, "archive", actor="test")
        await asyncio.wait_for(handle.result(), 30)
