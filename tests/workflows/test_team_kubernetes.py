"""The team lifecycle on the Kubernetes runtime: kmock + the rollout simulator stand in for the API
server and the Deployment controller. The team's image is built for real (Docker); its dependency,
the example MCP server, runs on the local Docker runtime.

On Kubernetes a team's instances are checked by the kubelet (the readiness probe GETs health_path on
every pod; the simulator plays its verdict), then the team's Service by one GET of health_path. kmock
cannot port-forward, so the worker reaches "the Service" through the endpoint template, pointing at
a real HTTP server on 127.0.0.1 standing in for it: the team's own agent process for the example
team, a small server answering a chosen status for the others (HealthServer)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import docker
import pytest
from kubernetes import client as k8s
from temporalio.client import Client

from activities.kubernetes_rollout import object_name
from activities.kubernetes_runtime import KubernetesRuntime
from control.client import CommandRefused, LifecycleClient
from control.team_client import register_team, team_status
from state.machines import ResourceState
from state.models import LifecyclePolicy
from state.postgres import PostgresStore
from state.runtime_models import KubernetesFailure
from state.settings import RsmSettings
from state.team_models import ManifestError, TeamStatus, load_manifest
from tests.activities.k8s_simulator import Behaviour
from tests.activities.test_kubernetes_runtime import Cluster, kmock_cluster
from tests.activities.test_kubernetes_service_health import HealthServer
from tests.conftest import EXAMPLES
from tests.helpers import assert_eventually, running_worker, unique_id
from tests.workflows.test_mcp_lifecycle import settled, walk
from tests.workflows.test_team_lifecycle import (
    BUILT_WALK,
    TOOLBOX,
    archive,
    example_team,
    in_state,
    record_history,
)
from workers.images import PYTHON_MCP_IMAGE
from workers.services.process import free_port, port_open, wait_until
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
    client: Client, store: PostgresStore, task_queue: str, service_port: int | None = None
) -> AsyncIterator[tuple[LifecycleClient, Cluster]]:
    """A worker on kmock; with service_port, Services are reached through the endpoint template
    http://127.0.0.1:<service_port> (RSM_KUBERNETES_ACCESS=template), where a test's server
    stands in for them."""
    async with kmock_cluster() as cluster:
        # The default runtime stays docker: only the team's manifest asks for Kubernetes.
        settings = RsmSettings(task_queue=task_queue, mcp_base_image=PYTHON_MCP_IMAGE)
        wiring = real_activities(store, settings)
        wiring.kubernetes = cluster.runtime
        if service_port is not None:
            config = cluster.runtime.config.model_copy(
                update={"endpoint_template": f"http://127.0.0.1:{service_port}{{mcp_path}}"}
            )
            wiring.kubernetes = KubernetesRuntime(cluster.api, config)
        async with running_worker(client, task_queue, wiring.all()):
            yield LifecycleClient(client, settings), cluster


@pytest.fixture
def research_agent() -> Iterator[int]:
    """The example team's agent as a local process on 127.0.0.1 (stopped by its PID): the pods
    behind its Service. Yields its port."""
    port = free_port()
    agent = EXAMPLES / "teams/research-team/agent/agent.py"
    proc = subprocess.Popen(
        [sys.executable, str(agent)],
        env={**os.environ, "HOST": "127.0.0.1", "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: port_open(port), 30, "the research-team agent")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def image_team(tmp_path: Path, team_id: str, health_path: str | None = "/healthz") -> Path:
    """A two-replica team from an image (kmock pulls nothing, so no build is needed)."""
    manifest = tmp_path / f"{team_id}.yaml"
    manifest.write_text(
        f"name: svc\nowner: qa\nimage: rsm/{team_id}:1\nreplicas: 2\nruntime: kubernetes\n"
        + (f"health_path: {health_path}\n" if health_path else "")
    )
    return manifest


def service_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/healthz"


def via_template(cluster: Cluster, rid: str) -> str:
    return f"the endpoint template for Service {cluster.namespace}/{object_name(rid)}"


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
    research_agent: int,
) -> None:
    mcp_id, team_id = unique_id(f"{PREFIX}-tbx"), unique_id(f"{PREFIX}-team")
    port = research_agent
    async with kubernetes_lifecycle(client, store, task_queue, port) as (lc, cluster):
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
        checked = (
            f"GET {service_url(port)} through {via_template(cluster, team_id)} answered HTTP 200"
        )
        assert rows[5].reason == (f"2 of 2 instances healthy: http://127.0.0.1:{port}; {checked}")
        assert rows[5].metadata["deployment"]["desired_replicas"] == 2
        # The agent's own answer came back through "the Service".
        service_check = rows[5].metadata["health"]["service_check"]
        assert service_check["body_excerpt"] == '{"status": "ok", "replica": "0"}'
        probe = live.spec.template.spec.containers[0].readiness_probe
        assert (probe.http_get.path, probe.tcp_socket) == ("/healthz", None)

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
        # Scaling waits for the rollout, then checks the Service again.
        assert row.reason == f"3 replicas: 3 of 3 instances healthy; {checked}"
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
        reactivated = [t for t in await store.list_transitions(team_id) if t.to_state is S.DEPLOYED]
        assert len(reactivated) == 2 and reactivated[-1].reason.endswith(checked)

        # archive deletes the Deployment (and its Service).
        await archive(lc, "team", team_id)
        with pytest.raises(k8s.ApiException) as gone:
            await cluster.read_deployment(team_id)
        assert gone.value.status == 404
        await record_history(handle, "team_kubernetes_service_checked_scaled_archived")
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


async def test_a_team_whose_service_answers_200_on_its_health_path_goes_active(
    client: Client, store: PostgresStore, task_queue: str, tmp_path: Path
) -> None:
    team_id = unique_id(f"{PREFIX}-ok")
    with HealthServer(200, "all good") as service:
        async with kubernetes_lifecycle(client, store, task_queue, service.port) as (lc, cluster):
            handle = await register_team(lc, image_team(tmp_path, team_id), resource_id=team_id)
            status = await settled(lc, handle)
            assert status.state is S.ACTIVE, status.failure_reason
            assert service.paths and set(service.paths) == {"/healthz"}
            rows = await store.list_transitions(team_id)
            deployed = next(t for t in rows if t.to_state is S.DEPLOYED)
            check = deployed.metadata["health"]["service_check"]
            assert check["url"] == service_url(service.port)
            assert check["via"] == via_template(cluster, team_id)
            assert (check["status_code"], check["body_excerpt"]) == (200, "all good")
            assert deployed.reason.endswith(
                f"; GET {service_url(service.port)} through {via_template(cluster, team_id)}"
                " answered HTTP 200"
            )
            team = await team_status(handle)
            assert team.health is not None and team.health.service_check is not None
            assert team.health.service_check.status_code == 200
            await archive(lc, "team", team_id)


async def test_a_team_whose_service_answers_500_fails_naming_the_path_and_the_status(
    client: Client, store: PostgresStore, task_queue: str, tmp_path: Path
) -> None:
    team_id = unique_id(f"{PREFIX}-500")
    policy = LifecyclePolicy(health_deadline=timedelta(seconds=2))
    with HealthServer(500, "database   down\n") as service:
        async with kubernetes_lifecycle(client, store, task_queue, service.port) as (lc, cluster):
            handle = await register_team(
                lc, image_team(tmp_path, team_id), policy=policy, resource_id=team_id
            )
            status = await settled(lc, handle)
            assert status.state is S.FAILED
            reason = status.failure_reason or ""
            assert reason.startswith(
                f"health check GET {service_url(service.port)} through "
                f"{via_template(cluster, team_id)} answered HTTP 500, body: database down "
            ), reason
            assert "(expected 2xx;" in reason
            # Every pod was ready (the kubelet's probe passed in the simulator): only the
            # Service's answer failed the team, which never reported active.
            assert (await cluster.read_deployment(team_id)).status.ready_replicas == 2
            assert await walk(store, team_id) == [
                (None, S.CREATED),
                (S.CREATED, S.REGISTERED),
                (S.REGISTERED, S.BUILDING),
                (S.BUILDING, S.BUILT),
                (S.BUILT, S.DEPLOYING),
                (S.DEPLOYING, S.FAILED),
            ]
            failed = (await store.list_transitions(team_id))[-1]
            assert failed.reason == reason
            assert failed.metadata["step"] == "kubernetes_service_health"
            assert failed.metadata["error_type"] == KubernetesFailure.SERVICE_UNHEALTHY
            assert failed.metadata["status_code"] == 500
            assert (
                failed.metadata["service"] == f"Service {cluster.namespace}/{object_name(team_id)}"
            )
            assert len(service.paths) >= 2  # retried until the health deadline

            await lc.run_command("team", team_id, "archive", actor="ops")
            assert (await asyncio.wait_for(handle.result(), 60)).final_state is S.ARCHIVED
            await record_history(handle, "team_kubernetes_service_unhealthy_archived")


async def test_a_scale_whose_service_check_fails_fails_the_team(
    client: Client, store: PostgresStore, task_queue: str, tmp_path: Path
) -> None:
    team_id = unique_id(f"{PREFIX}-scale")
    policy = LifecyclePolicy(health_deadline=timedelta(seconds=2))
    with HealthServer(200) as service:
        async with kubernetes_lifecycle(client, store, task_queue, service.port) as (lc, cluster):
            handle = await register_team(
                lc, image_team(tmp_path, team_id), policy=policy, resource_id=team_id
            )
            assert (await settled(lc, handle)).state is S.ACTIVE
            service.status = 503
            await lc.run_command("team", team_id, "scale", actor="ops", replicas=3)

            async def failed() -> None:
                assert (await walk(store, team_id))[-2:] == [
                    (S.ACTIVE, S.SCALING),
                    (S.SCALING, S.FAILED),
                ]

            await assert_eventually(failed, timeout=60)
            reason = (await store.list_transitions(team_id))[-1].reason
            assert f"GET {service_url(service.port)}" in reason and "HTTP 503" in reason
            assert via_template(cluster, team_id) in reason
            await archive(lc, "team", team_id)


async def test_the_applied_deployment_probes_the_health_path_over_http(
    client: Client, store: PostgresStore, task_queue: str, tmp_path: Path
) -> None:
    with_path, without = unique_id(f"{PREFIX}-http"), unique_id(f"{PREFIX}-tcp")
    with HealthServer(200) as service:
        async with kubernetes_lifecycle(client, store, task_queue, service.port) as (lc, cluster):
            teams = {
                with_path: image_team(tmp_path, with_path, "/healthz"),
                without: image_team(tmp_path, without, None),
            }
            handles = {
                rid: await register_team(lc, manifest, resource_id=rid)
                for rid, manifest in teams.items()
            }
            for rid, handle in handles.items():
                assert (await settled(lc, handle)).state is S.ACTIVE, rid
            probe: Any = (
                (await cluster.read_deployment(with_path)).spec.template.spec.containers[0]
            ).readiness_probe
            assert probe.tcp_socket is None
            assert (probe.http_get.path, probe.http_get.port) == ("/healthz", "http")
            assert probe.http_get.scheme == "HTTP"
            plain: Any = (
                (await cluster.read_deployment(without)).spec.template.spec.containers[0]
            ).readiness_probe
            assert plain.http_get is None and plain.tcp_socket.port == "http"
            # Without a health path there is nothing to ask the Service: no check.
            deployed = next(
                t for t in await store.list_transitions(without) if t.to_state is S.DEPLOYED
            )
            assert deployed.metadata["health"]["service_check"] is None
            for rid in handles:
                await archive(lc, "team", rid)


def test_a_team_manifest_names_an_unknown_runtime_and_defaults_to_docker(tmp_path: Path) -> None:
    manifest = tmp_path / "team.yaml"
    manifest.write_text("name: t\nowner: qa\nimage: busybox\n")
    assert load_manifest(manifest).runtime == "docker"
    assert load_manifest(on_kubernetes(manifest)).runtime == "kubernetes"
    manifest.write_text("name: t\nowner: qa\nimage: busybox\nruntime: nomad\n")
    with pytest.raises(ManifestError) as bad:
        load_manifest(manifest)
    assert bad.value.field == "runtime"
