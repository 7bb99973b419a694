"""The team lifecycle on the Kubernetes runtime: kmock + the rollout simulator stand in for the API
server and the Deployment controller. The team's image is built for real (Docker); its dependency,
the example MCP server, runs on the local Docker runtime. No container stands in for the team's
pods: on Kubernetes the team's health is the rollout's ready pods (the readiness probe)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest
from kubernetes import client as k8s
from temporalio.client import Client

from activities.kubernetes_rollout import object_name
from control.client import CommandRefused, LifecycleClient
from control.team_client import register_team, team_status
from state.machines import ResourceState
from state.postgres import PostgresStore
from state.settings import RsmSettings
from state.team_models import ManifestError, TeamStatus, load_manifest
from tests.activities.k8s_simulator import Behaviour
from tests.activities.test_kubernetes_runtime import Cluster, kmock_cluster
from tests.helpers import assert_eventually, running_worker, unique_id
from tests.workflows.test_mcp_lifecycle import settled, walk
from tests.workflows.test_team_lifecycle import (
    BUILT_WALK,
    TOOLBOX,
    archive,
    example_team,
    in_state,
)
from workers.images import PYTHON_MCP_IMAGE
from workers.worker import real_activities

S = ResourceState
PREFIX = "t-tk"  # every resource here; the cleanup removes only these containers


@pytest.fixture(autouse=True)
def _remove_containers(docker_client: docker.DockerClient) -> Iterator[None]:
    yield
    for container in docker_client.containers.list(all=True, filters={"label": "rsm.resource_id"}):
        if container.labels["rsm.resource_id"].startswith(PREFIX):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                container.remove(force=True)


@contextlib.asynccontextmanager
async def kubernetes_lifecycle(
    client: Client, store: PostgresStore, task_queue: str
) -> AsyncIterator[tuple[LifecycleClient, Cluster]]:
    async with kmock_cluster() as cluster:
        # The default runtime stays docker: only the team's manifest asks for Kubernetes.
        settings = RsmSettings(task_queue=task_queue, mcp_base_image=PYTHON_MCP_IMAGE)
        wiring = real_activities(store, settings)
        wiring.kubernetes = cluster.runtime
        async with running_worker(client, task_queue, wiring.all()):
            yield LifecycleClient(client, settings), cluster


def on_kubernetes(manifest: Path) -> Path:
    manifest.write_text(manifest.read_text() + "runtime: kubernetes\n")
    return manifest


async def spec_replicas(cluster: Cluster, rid: str) -> int:
    return int((await cluster.read_deployment(rid)).spec.replicas)


async def test_the_example_team_deploys_through_kubernetes_waits_scales_and_is_archived(
    client: Client,
    store: PostgresStore,
    task_queue: str,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    mcp_id, team_id = unique_id(f"{PREFIX}-tbx"), unique_id(f"{PREFIX}-team")
    async with kubernetes_lifecycle(client, store, task_queue) as (lc, cluster):
        handle = await register_team(
            lc, on_kubernetes(example_team(tmp_path, mcp_id)), actor="alice", resource_id=team_id
        )
        # Deployed (the rollout of 2 replicas complete) while it waits for its MCP server.
        waiting = await in_state(lc, handle, S.AWAITING_DEPENDENCIES)
        assert waiting.blocked_on == [f"dependency:mcp_server/{mcp_id}"]
        team = waiting.team
        assert team is not None and team.runtime == "kubernetes" and team.replicas == 2
        assert team.runtime_ref == f"{cluster.namespace}/deployment/{object_name(team_id)}"
        assert team.instances == []
        assert waiting.health is not None and waiting.health.healthy
        assert len(waiting.health.instances) == 2
        assert all(
            i.container_id.startswith(object_name(team_id)) for i in waiting.health.instances
        )
        live = await cluster.read_deployment(team_id)
        assert live.spec.replicas == 2
        assert live.spec.template.spec.containers[0].image == team.image
        assert live.status.observed_generation >= live.metadata.generation
        assert live.status.ready_replicas == 2
        env = {e.name: e.value for e in live.spec.template.spec.containers[0].env}
        assert env["AGENT_ROLE"] == "researcher"
        rows = await store.list_transitions(team_id)
        assert rows[4].reason == f"deploying 2 instance(s) of {team.image} on Kubernetes"
        assert rows[5].reason.startswith("2 of 2 instances healthy: http://")
        assert rows[5].metadata["deployment"]["desired_replicas"] == 2

        # Its dependency, on the local Docker runtime, becomes active: the team follows.
        mcp = await lc.register_mcp(TOOLBOX, resource_id=mcp_id, actor="alice")
        assert (await settled(lc, mcp)).state is S.ACTIVE
        await in_state(lc, handle, S.ACTIVE, timeout=10)
        assert await walk(store, team_id) == [
            *BUILT_WALK,
            (S.DEPLOYED, S.AWAITING_DEPENDENCIES),
            (S.AWAITING_DEPENDENCIES, S.ACTIVE),
        ]

        # scale 2 -> 3: the Deployment's spec.replicas, and the rollout waited for.
        result = await lc.run_command("team", team_id, "scale", actor="ops", replicas=3)
        assert result.accepted

        async def scaled() -> TeamStatus:
            assert (await walk(store, team_id))[-2:] == [
                (S.ACTIVE, S.SCALING),
                (S.SCALING, S.ACTIVE),
            ]
            return await team_status(handle)

        status = await assert_eventually(scaled, timeout=60)
        assert status.replicas == 3 and status.team is not None and status.team.replicas == 3
        assert await spec_replicas(cluster, team_id) == 3
        assert (await cluster.read_deployment(team_id)).status.ready_replicas == 3
        row = (await store.list_transitions(team_id))[-1]
        assert row.reason == "3 replicas: 3 of 3 instances healthy"
        assert (row.metadata["replicas"], row.metadata["previous_replicas"]) == (3, 2)
        with pytest.raises(CommandRefused, match="the team runs 3 replicas already"):
            await lc.run_command("team", team_id, "scale", actor="ops", replicas=3)

        # deactivate scales to zero and keeps the objects; activate rolls the 3 replicas out again.
        await lc.run_command("team", team_id, "deactivate", actor="ops")
        await in_state(lc, handle, S.INACTIVE, timeout=30)
        assert await spec_replicas(cluster, team_id) == 0
        await lc.run_command("team", team_id, "activate", actor="ops")
        await in_state(lc, handle, S.ACTIVE, timeout=60)
        assert await spec_replicas(cluster, team_id) == 3

        # archive deletes the Deployment (and its Service).
        await archive(lc, "team", team_id)
        with pytest.raises(k8s.ApiException) as gone:
            await cluster.read_deployment(team_id)
        assert gone.value.status == 404
        await archive(lc, "mcp_server", mcp_id)


async def test_a_crash_looping_team_fails_naming_the_pod(
    client: Client, store: PostgresStore, task_queue: str, tmp_path: Path
) -> None:
    team_id = unique_id(f"{PREFIX}-crash")
    image = f"rsm/{team_id}:1"
    manifest = tmp_path / "team.yaml"
    manifest.write_text(
        f"name: crashy\nowner: qa\nimage: {image}\nreplicas: 2\nruntime: kubernetes\n"
    )
    async with kubernetes_lifecycle(client, store, task_queue) as (lc, cluster):
        assert cluster.sim is not None
        cluster.sim.behave(
            image,
            Behaviour(kind="crash_loop", restarts=5, termination_message="KeyError: MODEL_KEY"),
        )
        handle = await register_team(lc, manifest, resource_id=team_id)
        status = await settled(lc, handle)
        assert status.state is S.FAILED
        reason = status.failure_reason or ""
        assert f"pod {object_name(team_id)}-" in reason, reason
        for text in ("CrashLoopBackOff", "5 restarts", "KeyError: MODEL_KEY"):
            assert text in reason, reason
        failed = (await store.list_transitions(team_id))[-1]
        assert (failed.from_state, failed.to_state) == (S.DEPLOYING, S.FAILED)
        assert failed.metadata["error_type"] == "CrashLoopBackOff"
        assert failed.metadata["step"] == "kubernetes_wait_rollout"

        await lc.run_command("team", team_id, "archive", actor="ops")
        assert (await asyncio.wait_for(handle.result(), 60)).final_state is S.ARCHIVED
        with pytest.raises(k8s.ApiException) as gone:
            await cluster.read_deployment(team_id)
        assert gone.value.status == 404


def test_a_team_manifest_names_an_unknown_runtime_and_defaults_to_docker(tmp_path: Path) -> None:
    manifest = tmp_path / "team.yaml"
    manifest.write_text("name: t\nowner: qa\nimage: busybox\n")
    assert load_manifest(manifest).runtime == "docker"
    assert load_manifest(on_kubernetes(manifest)).runtime == "kubernetes"
    manifest.write_text("name: t\nowner: qa\nimage: busybox\nruntime: nomad\n")
    with pytest.raises(ManifestError) as bad:
        load_manifest(manifest)
    assert bad.value.field == "runtime"
