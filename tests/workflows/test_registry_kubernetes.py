"""The MCP lifecycle on Kubernetes with a registry configured (RSM_REGISTRY): the build pushes the
image to a real registry (Debian's docker-registry on 127.0.0.1, tests/registry_fixtures.py), and
the Deployment applied to kmock runs the pushed reference, pinned by its digest. The workflow is
unchanged: build_image returns the pushed reference as the built image."""

from __future__ import annotations

from pathlib import Path

import docker
from temporalio.client import Client

from activities.kubernetes_runtime import KubernetesRuntime
from control.client import LifecycleClient
from control.sources import directory_version
from state.machines import ResourceState
from state.postgres import PostgresStore
from state.settings import RsmSettings
from tests.activities.test_kubernetes_runtime import kmock_cluster
from tests.helpers import assert_eventually, running_worker, unique_id
from tests.workflows.test_mcp_kubernetes import toolbox
from tests.workflows.test_mcp_lifecycle import settled
from workers.images import PYTHON_MCP_IMAGE
from workers.services.process import free_port
from workers.services.registry import LocalRegistry
from workers.worker import real_activities

pytest_plugins = ["tests.registry_fixtures"]

S = ResourceState


async def test_the_deployment_runs_the_image_pushed_to_the_registry(
    client: Client,
    store: PostgresStore,
    task_queue: str,
    docker_client: docker.DockerClient,
    registry: LocalRegistry,
    tmp_path: Path,
) -> None:
    source = toolbox(tmp_path)
    rid = unique_id("t-k8sreg")
    version = directory_version(source)
    port = free_port()
    settings = RsmSettings(
        task_queue=task_queue,
        mcp_base_image=PYTHON_MCP_IMAGE,
        default_runtime="kubernetes",
        registry=registry.address,
    )
    async with kmock_cluster() as cluster:
        wiring = real_activities(store, settings)
        config = cluster.runtime.config.model_copy(
            update={"endpoint_template": f"http://127.0.0.1:{port}{{mcp_path}}"}
        )
        wiring.kubernetes = KubernetesRuntime(cluster.api, config)
        async with running_worker(client, task_queue, wiring.all()):
            lc = LifecycleClient(client, settings)
            handle = await lc.register_mcp(source, resource_id=rid, actor="alice")

            async def built() -> str:
                rows = [r for r in await store.list_transitions(rid) if r.to_state == S.BUILT]
                assert rows, "not built yet"
                return str(rows[0].metadata["image"])

            pushed = await assert_eventually(built, timeout=180)
            reference = f"{registry.address}/rsm/{rid}:{version}"
            assert pushed.startswith(f"{reference}@sha256:"), pushed
            assert registry.tags(f"rsm/{rid}") == [version]

            # The pods behind the Service, as the template URL reaches them, run what was pushed.
            pod = docker_client.containers.run(
                pushed,
                detach=True,
                network_mode="host",
                environment={"PORT": str(port)},
                labels={"rsm.resource_id": rid},
            )
            try:
                status = await settled(lc, handle)
                assert status.state is S.ACTIVE, status.failure_reason
                live = await cluster.read_deployment(rid)
                assert live.spec.template.spec.containers[0].image == pushed
                rows = await store.list_transitions(rid)
                assert [r.reason for r in rows if r.to_state == S.DEPLOYING] == [
                    f"deploying {pushed} on Kubernetes"
                ]
                await lc.command(handle, "archive", actor="ops")
                await settled(lc, handle, states=frozenset({S.ARCHIVED}))
            finally:
                pod.remove(force=True)
                for image in (reference, f"rsm/{rid}:{version}"):
                    docker_client.images.remove(image, force=True)
