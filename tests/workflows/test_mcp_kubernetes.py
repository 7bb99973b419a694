"""The MCP lifecycle on the Kubernetes runtime: kmock + the rollout simulator stand in for the API
server and the Deployment controller; a local container from the built image stands in for the pods
behind the Service, reached the way a worker outside the cluster reaches it (a port-forward URL)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import docker
import pytest
from kubernetes import client as k8s
from temporalio.client import Client

from activities.kubernetes_rollout import object_name
from activities.kubernetes_runtime import KubernetesRuntime
from control.client import LifecycleClient
from control.sources import directory_version
from state.machines import ResourceState
from state.postgres import PostgresStore
from state.settings import RsmSettings
from tests.activities.k8s_simulator import Behaviour
from tests.activities.test_kubernetes_runtime import Cluster, kmock_cluster
from tests.conftest import EXAMPLES
from tests.helpers import assert_eventually, running_worker, unique_id
from tests.workflows.test_mcp_lifecycle import settled, walk
from workers.images import PYTHON_MCP_IMAGE
from workers.services.process import free_port
from workers.worker import real_activities

S = ResourceState


@contextlib.asynccontextmanager
async def kubernetes_lifecycle(
    client: Client, store: PostgresStore, task_queue: str, port: int
) -> AsyncIterator[tuple[LifecycleClient, Cluster]]:
    async with kmock_cluster() as cluster:
        config = cluster.runtime._config.model_copy(
            update={"endpoint_template": f"http://127.0.0.1:{port}{{mcp_path}}"}
        )
        settings = RsmSettings(
            task_queue=task_queue, mcp_base_image=PYTHON_MCP_IMAGE, default_runtime="kubernetes"
        )
        wiring = real_activities(store, settings)
        wiring.kubernetes = KubernetesRuntime(cluster.api, config)
        async with running_worker(client, task_queue, wiring.all()):
            yield LifecycleClient(client, settings), cluster


def toolbox(tmp_path: Path) -> Path:
    target = tmp_path / "toolbox"
    shutil.copytree(EXAMPLES / "mcp/toolbox", target)
    (target / "server.py").write_text((target / "server.py").read_text() + f"\n# {unique_id()}\n")
    return target


async def deployment(cluster: Cluster, rid: str) -> Any:
    return await cluster.read_deployment(rid)


async def test_the_example_mcp_server_deploys_through_kubernetes(
    client: Client,
    store: PostgresStore,
    task_queue: str,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    port = free_port()
    source = toolbox(tmp_path)
    rid = unique_id("t-k8s")
    image = f"rsm/{rid}:{directory_version(source)}"
    async with kubernetes_lifecycle(client, store, task_queue, port) as (lc, cluster):
        handle = await lc.register_mcp(source, resource_id=rid, actor="alice")

        async def built() -> None:
            assert (await lc.status(handle)).state not in {S.CREATED, S.REGISTERED, S.BUILDING}

        await assert_eventually(built, timeout=120)
        # The pods behind the Service, as a port-forward reaches them.
        pod = docker_client.containers.run(
            image,
            detach=True,
            network_mode="host",
            environment={"PORT": str(port)},
            labels={"rsm.resource_id": rid},
        )
        try:
            status = await settled(lc, handle)
            assert status.state is S.ACTIVE, status.failure_reason
            assert await walk(store, rid) == [
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
            rows = await store.list_transitions(rid)
            assert rows[4].reason == f"deploying {image} on Kubernetes"
            deployed = rows[5].metadata
            assert deployed["runtime"] == "kubernetes" and deployed["image"] == image
            live = await deployment(cluster, rid)
            assert live.spec.template.spec.containers[0].image == image
            assert live.status.observed_generation >= live.metadata.generation

            await lc.command(handle, "deactivate", actor="ops")
            await settled(lc, handle, states=frozenset({S.INACTIVE}))
            assert (await deployment(cluster, rid)).spec.replicas == 0

            await lc.command(handle, "archive", actor="ops")
            assert (await asyncio.wait_for(handle.result(), 60)).final_state is S.ARCHIVED
            with pytest.raises(k8s.ApiException) as gone:
                await deployment(cluster, rid)
            assert gone.value.status == 404
        finally:
            pod.remove(force=True)


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        (Behaviour(kind="image_pull"), ["ImagePullBackOff"]),
        (
            Behaviour(kind="crash_loop", restarts=5, termination_message="RuntimeError: no TOKEN"),
            ["CrashLoopBackOff", "5 restarts", "RuntimeError: no TOKEN"],
        ),
        (Behaviour(kind="unschedulable"), ["Unschedulable", "Insufficient cpu"]),
    ],
    ids=["image-pull", "crash-loop", "unschedulable"],
)
async def test_a_failed_rollout_fails_the_resource_naming_the_pod(
    client: Client,
    store: PostgresStore,
    task_queue: str,
    docker_engine: object,
    tmp_path: Path,
    behaviour: Behaviour,
    expected: list[str],
) -> None:
    source = toolbox(tmp_path)
    rid = unique_id("t-k8sfail")
    image = f"rsm/{rid}:{directory_version(source)}"
    async with kubernetes_lifecycle(client, store, task_queue, free_port()) as (lc, cluster):
        assert cluster.sim is not None
        cluster.sim.behave(image, behaviour)
        handle = await lc.register_mcp(source, resource_id=rid, actor="alice")
        status = await settled(lc, handle)
        assert status.state is S.FAILED
        reason = status.failure_reason or ""
        assert f"pod {object_name(rid)}" in reason, reason
        for text in expected:
            assert text in reason, reason
        assert (await walk(store, rid))[-1] == (S.DEPLOYING, S.FAILED)
        await lc.command(handle, "archive", actor="ops")
        await asyncio.wait_for(handle.result(), 60)
