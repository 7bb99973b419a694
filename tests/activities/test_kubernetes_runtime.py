"""The Kubernetes runtime's activities against kmock + the rollout simulator, and a real cluster.

Tests taking the `cluster` fixture run twice: on kmock (ClusterEmulator + RolloutSimulator, see
k8s_simulator.py) and on the cluster of $KUBECONFIG, which is skipped with "no KUBECONFIG" when it is
unset. Failure modes only the simulator can stage on demand (crash loops, unschedulable pods, a
controller that lags or stalls) take `sim` and run on kmock only. Every activity runs in
temporalio's ActivityEnvironment, which records heartbeats and delivers cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from kmock import Server
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.docker_runtime import LocalDockerRuntime
from activities.kubernetes_rollout import RESOURCE_LABEL, object_name, render
from activities.kubernetes_runtime import KubernetesRuntime
from activities.runtime import Runtime
from state.models import DeployRequest, StopRuntimeRequest
from state.runtime_models import (
    KubernetesDeployRequest,
    KubernetesFailure,
    KubernetesRollbackRequest,
    KubernetesRuntimeConfig,
    KubernetesScaleRequest,
    RolloutStatus,
    RolloutWaitRequest,
)
from tests.activities.k8s_simulator import (
    DEPLOYMENTS,
    PODS,
    Behaviour,
    ClusterEmulator,
    RolloutSimulator,
)
from tests.helpers import unique_id

BAD_PULL_IMAGE = "rsm-test.invalid/missing:0"


@dataclass
class Cluster:
    runtime: KubernetesRuntime
    api: k8s.ApiClient
    namespace: str
    good_image: str
    readiness_probe: bool
    wait_timeout: float
    sim: RolloutSimulator | None = None

    def request(
        self, resource_id: str, version: str = "0.1.0", **kw: Any
    ) -> KubernetesDeployRequest:
        fields: dict[str, Any] = {
            "resource_id": resource_id,
            "name": "toolbox",  # the example MCP server (examples/mcp/toolbox)
            "version": version,
            "image": self.good_image,
            "readiness_probe": self.readiness_probe,
            **kw,
        }
        return KubernetesDeployRequest(**fields)

    async def read_deployment(self, resource_id: str) -> Any:
        # Through a thread: a blocking call on the loop would starve kmock, which serves on it.
        return await asyncio.to_thread(
            k8s.AppsV1Api(self.api).read_namespaced_deployment,
            object_name(resource_id),
            self.namespace,
            _request_timeout=30,
        )


def _config(namespace: str, fast: bool) -> KubernetesRuntimeConfig:
    interval = 0.05 if fast else 1.0
    return KubernetesRuntimeConfig(
        namespace=namespace,
        poll_interval_seconds=interval,
        heartbeat_interval_seconds=interval,
        request_timeout_seconds=5.0 if fast else 30.0,
    )


@contextlib.asynccontextmanager
async def kmock_cluster(**sim_options: Any) -> AsyncIterator[Cluster]:
    async with ClusterEmulator() as emulator, RolloutSimulator(emulator, **sim_options) as sim:
        async with Server(emulator, host="127.0.0.1"):  # a free port on 127.0.0.1
            api = k8s.ApiClient(k8s.Configuration(host=str(emulator.url).rstrip("/")))
            namespace = f"ns-{uuid.uuid4().hex[:8]}"
            try:
                yield Cluster(
                    runtime=KubernetesRuntime(api, _config(namespace, fast=True)),
                    api=api,
                    namespace=namespace,
                    good_image="rsm/toolbox:0.1.0",
                    readiness_probe=True,
                    wait_timeout=10.0,
                    sim=sim,
                )
            finally:
                api.close()


@contextlib.asynccontextmanager
async def kubeconfig_cluster() -> AsyncIterator[Cluster]:
    api = k8s_config.new_client_from_config()
    core = k8s.CoreV1Api(api)
    namespace = os.environ.get("RSM_K8S_TEST_NAMESPACE") or f"rsm-test-{uuid.uuid4().hex[:8]}"
    created = "RSM_K8S_TEST_NAMESPACE" not in os.environ
    if created:
        await asyncio.to_thread(
            core.create_namespace,
            k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)),
        )
    try:
        yield Cluster(
            runtime=KubernetesRuntime(api, _config(namespace, fast=False)),
            api=api,
            namespace=namespace,
            # The pause image runs forever without listening, so no readiness probe there.
            good_image=os.environ.get("RSM_K8S_TEST_IMAGE", "registry.k8s.io/pause:3.10"),
            readiness_probe=False,
            wait_timeout=240.0,
        )
    finally:
        if created:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(core.delete_namespace, namespace)
        api.close()


@pytest.fixture(params=["kmock", "kubeconfig"])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    if request.param == "kmock":
        async with kmock_cluster() as c:
            yield c
        return
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("no KUBECONFIG")
    async with kubeconfig_cluster() as c:
        yield c


@pytest.fixture
async def sim() -> AsyncIterator[Cluster]:
    async with kmock_cluster() as c:
        yield c


@dataclass
class Run:
    """One activity run in its own ActivityEnvironment, with the heartbeats it sent."""

    env: ActivityEnvironment
    heartbeats: list[Any]


def activity_env() -> Run:
    env = ActivityEnvironment()
    run = Run(env, [])
    env.on_heartbeat = lambda *details: run.heartbeats.append(details[0] if details else None)
    return run


async def apply(c: Cluster, req: KubernetesDeployRequest) -> Any:
    return await activity_env().env.run(c.runtime.apply, req)


async def wait(
    c: Cluster, resource_id: str, min_generation: int | None = None, **kw: Any
) -> RolloutStatus:
    req = RolloutWaitRequest(
        resource_id=resource_id,
        min_generation=min_generation,
        timeout_seconds=kw.pop("timeout", c.wait_timeout),
    )
    return await activity_env().env.run(c.runtime.wait_rollout, req)


async def deploy(c: Cluster, req: KubernetesDeployRequest) -> RolloutStatus:
    applied = await apply(c, req)
    return await wait(c, req.resource_id, applied.generation)


async def failure_of(c: Cluster, resource_id: str, **kw: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await wait(c, resource_id, **kw)
    return caught.value


def sim_pods(c: Cluster, resource_id: str) -> list[dict[str, Any]]:
    assert c.sim is not None
    return [
        p
        for p in c.sim.emulator.list_of(PODS, c.namespace)
        if p["metadata"]["labels"].get(RESOURCE_LABEL) == resource_id
    ]


# -- happy path ----------------------------------------------------------------------------------


async def test_apply_and_wait_reports_complete_rollout(cluster: Cluster) -> None:
    rid = unique_id("t")
    req = cluster.request(rid, replicas=2)
    applied = await apply(cluster, req)
    name = object_name(rid)
    assert applied.deployment_name == applied.service_name == name
    assert applied.deployment.runtime == "kubernetes"
    assert applied.deployment.endpoint == (
        f"http://{name}.{cluster.namespace}.svc.cluster.local:80/mcp"
    )
    assert applied.generation == 1

    run = activity_env()
    status = await run.env.run(
        cluster.runtime.wait_rollout,
        RolloutWaitRequest(resource_id=rid, min_generation=1, timeout_seconds=cluster.wait_timeout),
    )
    assert status.complete and status.waiting_for == ""
    assert (status.observed_generation or 0) >= (status.generation or 1)
    assert status.updated_replicas == status.ready_replicas == status.available_replicas == 2
    assert len(status.pods) == 2 and all(p.ready for p in status.pods)
    assert run.heartbeats, "the rollout wait must heartbeat"

    live = await cluster.read_deployment(rid)
    assert live.metadata.labels[RESOURCE_LABEL] == rid
    assert live.spec.selector.match_labels == {RESOURCE_LABEL: rid}
    assert live.spec.template.spec.containers[0].image == cluster.good_image
    svc: Any = await asyncio.to_thread(
        k8s.CoreV1Api(cluster.api).read_namespaced_service, name, cluster.namespace
    )
    assert svc.metadata.labels[RESOURCE_LABEL] == rid
    assert svc.spec.selector == {RESOURCE_LABEL: rid}
    assert svc.spec.ports[0].port == 80

    # Applying the same request again is a no-op: same generation, nothing to roll out.
    again = await apply(cluster, req)
    assert again.generation == applied.generation
    assert again.template_hash == applied.template_hash
    await activity_env().env.run(cluster.runtime.delete, StopRuntimeRequest(resource_id=rid))


async def test_apply_uses_server_side_apply_with_field_manager_rsm(sim: Cluster) -> None:
    rid = unique_id("t")
    await apply(sim, sim.request(rid))
    assert sim.sim is not None
    patches = [
        r
        for r in sim.sim.emulator._requests
        if r.method == "PATCH" and r.name == object_name(rid) and r.subresource is None
    ]
    assert {r.resource.plural for r in patches if r.resource} == {"deployments", "services"}
    for r in patches:
        assert r.headers["Content-Type"] == "application/apply-patch+yaml"
        assert r.params == {"fieldManager": "rsm", "force": "true"}


# -- stale status ----------------------------------------------------------------------------------


async def test_stale_status_is_never_reported_complete(sim: Cluster) -> None:
    assert sim.sim is not None
    rid = unique_id("t")
    await deploy(sim, sim.request(rid, "1.0.0"))
    sim.sim.generation_lag = 0.6
    applied = await apply(sim, sim.request(rid, "2.0.0", image="rsm/toolbox:2.0.0"))
    assert applied.generation == 2

    # What a naive tool reads right now: every count matches spec, but for generation 1.
    live = await sim.read_deployment(rid)
    assert live.status.observed_generation == 1 and live.metadata.generation == 2
    assert live.status.updated_replicas == live.status.ready_replicas == live.spec.replicas == 1

    run = activity_env()
    status = await run.env.run(
        sim.runtime.wait_rollout,
        RolloutWaitRequest(resource_id=rid, min_generation=2, timeout_seconds=10),
    )
    returned_at = time.monotonic()
    observed_at = sim.sim.observed_at[(object_name(rid), 2)]
    assert status.complete and status.observed_generation == 2
    assert returned_at >= observed_at, "reported complete before the controller observed gen 2"
    stale_beats = [b for b in run.heartbeats if b and b.get("observed_generation") == 1]
    assert stale_beats, "the wait should have seen (and heartbeated) the stale status"
    assert all(not b["complete"] for b in stale_beats)
    assert "has not observed" in stale_beats[0]["waiting_for"]


async def test_stale_status_of_a_crashing_new_version_ends_in_crash_loop(sim: Cluster) -> None:
    assert sim.sim is not None
    rid = unique_id("t")
    await deploy(sim, sim.request(rid, "1.0.0"))
    sim.sim.generation_lag = 0.4
    sim.sim.behave("rsm/toolbox:2.0.0", Behaviour("crash_loop"))
    applied = await apply(sim, sim.request(rid, "2.0.0", image="rsm/toolbox:2.0.0"))
    err = await failure_of(sim, rid, min_generation=applied.generation)
    assert err.type == KubernetesFailure.CRASH_LOOP


async def test_progress_deadline_of_an_older_generation_is_not_trusted(sim: Cluster) -> None:
    assert sim.sim is not None
    rid = unique_id("t")
    sim.sim.progress_deadline_seconds = 0.3
    sim.sim.behave("rsm/toolbox:1.0.0", Behaviour("never_ready"))
    await apply(sim, sim.request(rid, "1.0.0", image="rsm/toolbox:1.0.0"))
    err = await failure_of(sim, rid)
    assert err.type == KubernetesFailure.PROGRESS_DEADLINE_EXCEEDED

    # The next generation starts with generation 1's ProgressDeadlineExceeded still in status.
    sim.sim.generation_lag = 0.5
    applied = await apply(sim, sim.request(rid, "1.0.1", image="rsm/toolbox:1.0.1"))
    status = await wait(sim, rid, applied.generation)
    assert status.complete and status.observed_generation == applied.generation


# -- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "failure_type", "state"),
    [
        (
            Behaviour("image_pull", pull_reason="ImagePullBackOff"),
            KubernetesFailure.IMAGE_PULL_FAILED,
            "ImagePullBackOff",
        ),
        (
            Behaviour("image_pull", pull_reason="ErrImagePull"),
            KubernetesFailure.IMAGE_PULL_FAILED,
            "ErrImagePull",
        ),
        (Behaviour("crash_loop"), KubernetesFailure.CRASH_LOOP, "CrashLoopBackOff"),
        (Behaviour("unschedulable"), KubernetesFailure.UNSCHEDULABLE, "Unschedulable"),
        (Behaviour("never_ready"), KubernetesFailure.PROGRESS_DEADLINE_EXCEEDED, "Running"),
    ],
    ids=[
        "ImagePullBackOff",
        "ErrImagePull",
        "CrashLoopBackOff",
        "Unschedulable",
        "ProgressDeadlineExceeded",
    ],
)
async def test_failed_rollout_is_named_with_pod_and_state(
    sim: Cluster, behaviour: Behaviour, failure_type: str, state: str
) -> None:
    assert sim.sim is not None
    sim.sim.progress_deadline_seconds = 0.5
    rid = unique_id("t")
    image = f"rsm/toolbox:{behaviour.kind}"
    sim.sim.behave(image, behaviour)
    await apply(sim, sim.request(rid, image=image))
    err = await failure_of(sim, rid)

    assert err.type == failure_type and err.non_retryable
    [pod] = sim_pods(sim, rid)
    pod_name = pod["metadata"]["name"]
    assert f"pod {pod_name}" in err.message and state in err.message
    details = err.details[0]
    assert details["pod"] == pod_name and details["state"] == state
    if failure_type == KubernetesFailure.CRASH_LOOP:
        assert "after 4 restarts" in err.message and "last exit code 1" in err.message
        assert "RuntimeError: boom" in err.message
        assert details["restart_count"] == 4
        assert details["last_termination_message"] == behaviour.termination_message
    if failure_type == KubernetesFailure.UNSCHEDULABLE:
        assert "Insufficient cpu" in err.message
    if failure_type == KubernetesFailure.PROGRESS_DEADLINE_EXCEEDED:
        assert "timed out progressing" in err.message


async def test_unpullable_image_fails_with_pod_named(cluster: Cluster) -> None:
    if cluster.sim is not None:
        cluster.sim.behave(BAD_PULL_IMAGE, Behaviour("image_pull"))
    rid = unique_id("t")
    await apply(cluster, cluster.request(rid, image=BAD_PULL_IMAGE))
    err = await failure_of(cluster, rid)
    assert err.type == KubernetesFailure.IMAGE_PULL_FAILED and err.non_retryable
    assert err.details[0]["state"] in {"ImagePullBackOff", "ErrImagePull"}
    assert err.details[0]["pod"].startswith(object_name(rid))
    await activity_env().env.run(cluster.runtime.delete, StopRuntimeRequest(resource_id=rid))


async def test_selector_change_is_named_immutable_and_not_retried(cluster: Cluster) -> None:
    rid = unique_id("t")
    name = object_name(rid)
    # A Deployment of that name made by another tool (or an older rsm) with another selector.
    foreign: Any = render(cluster.request(rid), cluster.runtime.config).deployment
    foreign["spec"]["selector"] = {"matchLabels": {"app": "legacy"}}
    foreign["spec"]["template"]["metadata"]["labels"] = {"app": "legacy"}
    await asyncio.to_thread(
        k8s.AppsV1Api(cluster.api).create_namespaced_deployment, cluster.namespace, foreign
    )
    with pytest.raises(ApplicationError) as caught:
        await apply(cluster, cluster.request(rid))
    err = caught.value
    assert err.type == KubernetesFailure.IMMUTABLE_FIELD and err.non_retryable
    assert "spec.selector" in err.message and "immutable" in err.message
    assert err.details[0]["http_status"] == 422
    assert (await cluster.read_deployment(rid)).spec.selector.match_labels == {"app": "legacy"}
    await asyncio.to_thread(
        k8s.AppsV1Api(cluster.api).delete_namespaced_deployment, name, cluster.namespace
    )


async def test_resource_id_that_is_no_label_value_is_refused_by_name(sim: Cluster) -> None:
    with pytest.raises(ApplicationError) as caught:
        await apply(sim, sim.request("bad-id-"))
    assert caught.value.type == KubernetesFailure.APPLY_REJECTED
    assert "label value" in caught.value.message


async def test_wait_times_out_naming_what_it_waits_for(sim: Cluster) -> None:
    assert sim.sim is not None
    sim.sim.generation_lag = 60  # a controller that never gets to it
    rid = unique_id("t")
    await apply(sim, sim.request(rid))
    err = await failure_of(sim, rid, timeout=0.4)
    assert err.type == KubernetesFailure.ROLLOUT_TIMED_OUT and err.non_retryable
    assert "observedGeneration None < generation 1" in err.message


async def test_wait_heartbeats_and_honours_cancellation(sim: Cluster) -> None:
    assert sim.sim is not None
    sim.sim.generation_lag = 60
    rid = unique_id("t")
    await apply(sim, sim.request(rid))
    run = activity_env()
    task = asyncio.ensure_future(
        run.env.run(
            sim.runtime.wait_rollout, RolloutWaitRequest(resource_id=rid, timeout_seconds=60)
        )
    )
    while len(run.heartbeats) < 3:
        assert not task.done(), task
        await asyncio.sleep(0.02)
    assert run.heartbeats[-1]["complete"] is False
    run.env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


async def test_wait_on_a_missing_deployment_is_named(sim: Cluster) -> None:
    err = await failure_of(sim, unique_id("t"))
    assert err.type == KubernetesFailure.NOT_DEPLOYED


# -- scale, deactivate, archive, rollback ----------------------------------------------------------


async def test_scale_deactivate_and_delete(cluster: Cluster) -> None:
    rid = unique_id("t")
    await deploy(cluster, cluster.request(rid))
    env = activity_env().env

    scaled = await env.run(
        cluster.runtime.scale, KubernetesScaleRequest(resource_id=rid, replicas=3)
    )
    assert (scaled.previous_replicas, scaled.replicas) == (1, 3)
    assert scaled.generation == 2
    status = await wait(cluster, rid, scaled.generation)
    assert status.complete and status.ready_replicas == 3 and len(status.pods) == 3

    down = await env.run(cluster.runtime.deactivate, StopRuntimeRequest(resource_id=rid))
    assert (down.previous_replicas, down.replicas) == (3, 0)
    status = await wait(cluster, rid, down.generation)
    assert status.complete and status.desired_replicas == 0
    assert status.replicas == status.ready_replicas == 0
    assert (await cluster.read_deployment(rid)).spec.replicas == 0
    if cluster.sim is not None:
        assert sim_pods(cluster, rid) == []

    deleted = await env.run(cluster.runtime.delete, StopRuntimeRequest(resource_id=rid))
    name = object_name(rid)
    assert deleted == [f"deployment/{name}", f"service/{name}"]
    with pytest.raises(k8s.ApiException) as gone:
        await cluster.read_deployment(rid)
    assert gone.value.status == 404
    assert await env.run(cluster.runtime.delete, StopRuntimeRequest(resource_id=rid)) == []


async def test_scale_of_a_resource_never_deployed_is_named(sim: Cluster) -> None:
    with pytest.raises(ApplicationError) as caught:
        await activity_env().env.run(
            sim.runtime.scale, KubernetesScaleRequest(resource_id=unique_id("t"), replicas=2)
        )
    assert caught.value.type == KubernetesFailure.NOT_DEPLOYED and caught.value.non_retryable


async def test_rollback_reapplies_the_last_good_spec(cluster: Cluster) -> None:
    rid = unique_id("t")
    good = cluster.request(rid, "1.0.0")
    await deploy(cluster, good)
    good_hash = render(good, cluster.runtime.config).template_hash

    bad = cluster.request(rid, "2.0.0", image=BAD_PULL_IMAGE)
    if cluster.sim is not None:
        cluster.sim.behave(BAD_PULL_IMAGE, Behaviour("crash_loop"))
    applied = await apply(cluster, bad)
    err = await failure_of(cluster, rid, min_generation=applied.generation)
    assert err.type in {KubernetesFailure.CRASH_LOOP, KubernetesFailure.IMAGE_PULL_FAILED}
    if cluster.sim is not None:
        # The surge strategy kept the good version serving while the bad one failed.
        ready_old = [
            p
            for p in sim_pods(cluster, rid)
            if p["metadata"]["labels"]["rsm.template_hash"] == good_hash
            and p["status"]["phase"] == "Running"
        ]
        assert len(ready_old) == 1

    rolled = await activity_env().env.run(
        cluster.runtime.rollback, KubernetesRollbackRequest(last_good=good, reason=err.message)
    )
    assert rolled.template_hash == good_hash
    assert rolled.generation == 3
    status = await wait(cluster, rid, rolled.generation)
    assert status.complete and status.observed_generation == 3
    live = await cluster.read_deployment(rid)
    assert live.spec.template.spec.containers[0].image == cluster.good_image
    assert live.metadata.annotations["rsm.version"] == "1.0.0"
    if cluster.sim is not None:
        hashes = {p["metadata"]["labels"]["rsm.template_hash"] for p in sim_pods(cluster, rid)}
        assert hashes == {good_hash}
    await activity_env().env.run(cluster.runtime.delete, StopRuntimeRequest(resource_id=rid))


# -- the readiness probe ---------------------------------------------------------------------------


def _probe_of(req: KubernetesDeployRequest) -> Any:
    manifests = render(req, KubernetesRuntimeConfig(namespace="ns"))
    return manifests.deployment["spec"]["template"]["spec"]["containers"][0].get("readinessProbe")


def test_a_health_path_makes_the_readiness_probe_an_http_get_of_it() -> None:
    team = KubernetesDeployRequest(
        resource_id="t", name="t", version="1", image="i", mcp_path="", health_path="/healthz"
    )
    assert _probe_of(team) == {
        # On the container port the Service targets (named "http"), as the kubelet asks every pod.
        "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
        "periodSeconds": 2,
        "failureThreshold": 3,
    }
    # Without a health path (an MCP server, whose endpoint wants a session): a TCP connect.
    mcp = KubernetesDeployRequest(
        **DeployRequest(resource_id="t", name="t", version="1", image="i").model_dump()
    )
    assert _probe_of(mcp) == {
        "tcpSocket": {"port": "http"},
        "periodSeconds": 2,
        "failureThreshold": 3,
    }
    assert _probe_of(team.model_copy(update={"readiness_probe": False})) is None
    # The probe is part of the pod template: changing it is a new template, i.e. a new rollout.
    config = KubernetesRuntimeConfig(namespace="ns")
    assert (
        render(team, config).template_hash
        != render(team.model_copy(update={"health_path": None}), config).template_hash
    )


@pytest.fixture
async def real_cluster() -> AsyncIterator[Cluster]:
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("no KUBECONFIG")
    async with kubeconfig_cluster() as c:
        yield c


async def test_on_a_real_cluster_apply_switches_the_probe_between_tcp_and_http(
    real_cluster: Cluster,
) -> None:
    """Server-side apply drops what rsm's field manager applied before and no longer applies: a
    probe handler left behind would make two handlers, which the API server refuses (422).
    (kmock merges apply patches instead, so this runs on a real API server only.)"""
    rid = unique_id("t")
    tcp = real_cluster.request(
        rid, readiness_probe=True
    )  # the spec is read; pods may never be ready
    try:
        await apply(real_cluster, tcp)
        await apply(real_cluster, tcp.model_copy(update={"health_path": "/healthz"}))
        probe = (await real_cluster.read_deployment(rid)).spec.template.spec.containers[0]
        assert probe.readiness_probe.tcp_socket is None
        assert probe.readiness_probe.http_get.path == "/healthz"
        await apply(real_cluster, tcp)
        probe = (await real_cluster.read_deployment(rid)).spec.template.spec.containers[0]
        assert probe.readiness_probe.http_get is None
        assert probe.readiness_probe.tcp_socket.port == "http"
    finally:
        await activity_env().env.run(
            real_cluster.runtime.delete, StopRuntimeRequest(resource_id=rid)
        )


# -- the Runtime protocol ----------------------------------------------------------------------------


def _as_runtime(runtime: Runtime) -> Runtime:
    return runtime  # mypy checks both implementations against the protocol through this


def test_both_runtimes_offer_the_protocol_methods() -> None:
    for cls in (LocalDockerRuntime, KubernetesRuntime):
        for method in ("deploy", "stop_runtime"):
            fn = getattr(cls, method)
            assert inspect.iscoroutinefunction(fn), (cls, method)
            assert list(inspect.signature(fn).parameters) == ["self", "req"], (cls, method)


async def test_kubernetes_runtime_deploys_as_a_plain_runtime(sim: Cluster) -> None:
    runtime = _as_runtime(sim.runtime)
    rid = unique_id("t")
    # Outside any activity: no heartbeats, still the full apply + truthful wait.
    info = await runtime.deploy(sim.request(rid))
    assert info.runtime == "kubernetes" and info.runtime_ref.endswith(
        f"deployment/{object_name(rid)}"
    )
    assert (await sim.read_deployment(rid)).status.observed_generation == 1
    assert await runtime.stop_runtime(StopRuntimeRequest(resource_id=rid)) == [
        f"deployment/{object_name(rid)}",
        f"service/{object_name(rid)}",
    ]
    assert sim.sim is not None
    assert sim.sim.emulator.read(DEPLOYMENTS, sim.namespace, object_name(rid)) is None


def test_object_names_are_valid_and_distinct() -> None:
    ids = ["toolbox", "a.b", "a-b", "a_b", "x" * 63, "9lives"]
    names = [object_name(i) for i in ids]
    assert len(set(names)) == len(names)
    assert names[0] == "rsm-toolbox"
    for name in names:
        assert len(name) <= 63 and name[0].isalpha() and name[-1].isalnum()
        assert all(ch.isdigit() or ch == "-" or ("a" <= ch <= "z") for ch in name)
