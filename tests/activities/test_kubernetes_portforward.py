"""The health check through a port-forward (activities/kubernetes_portforward.py).

kmock cannot upgrade a request to the port-forward websocket stream: it answers
`GET .../pods/NAME/portforward` like a read of the pod (`Handshake status 200 OK`). So:

- the pure parts are unit-tested: which access mode, which endpoint names a Service, which pod,
  which container port, and the local listener on 127.0.0.1;
- on kmock + the rollout simulator, everything up to the stream is real: the Service is read, a
  ready pod is chosen through its selector, the named target port is resolved, and the refused
  upgrade (or a missing Service, or no ready pod) fails the health check by name;
- our end of the stream (the 127.0.0.1 listener, one port-forward per connection, the splice, the
  error channel) carries a real MCP handshake to the example server running locally, with only
  the client's PortForward object stood in for (`LocalPortForward`);
- the stream itself runs against the cluster of $KUBECONFIG (skipped with "no KUBECONFIG"
  otherwise): a port nothing listens on is named from the kubelet's error channel, and with
  RSM_K8S_TEST_MCP_IMAGE (an MCP server image the cluster can pull) a full MCP handshake goes
  through the tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.kubernetes_portforward import (
    PortForwardError,
    PortForwardingHealthChecker,
    ServiceAddress,
    ServicePortForwarder,
    Target,
    Tunnel,
    choose_access,
    connect_error,
    label_selector,
    loopback_listener,
    pick_pod,
    service_address,
    target_port,
)
from activities.kubernetes_rollout import object_name, render, service_endpoint
from activities.mcp_health import McpHealthChecker
from state.errors import FailureType
from state.models import HealthCheckRequest, StopRuntimeRequest
from state.runtime_models import (
    KubernetesDeployRequest,
    KubernetesFailure,
    KubernetesRuntimeConfig,
)
from tests.activities.test_kubernetes_runtime import (
    Cluster,
    deploy,
    kmock_cluster,
    kubeconfig_cluster,
)
from tests.conftest import EXAMPLES
from tests.helpers import unique_id
from workers.services.process import free_port, port_open, wait_until

# -- choosing the access mode --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "template", "in_cluster", "expected"),
    [
        (None, None, True, "service"),  # a worker in a pod uses the Service's DNS name
        (None, None, False, "port-forward"),  # outside, with nothing else given
        (None, "http://{name}.example.org{mcp_path}", False, "template"),  # a template is meant
        (None, "http://{name}.example.org{mcp_path}", True, "template"),
        ("port-forward", "http://{name}.example.org{mcp_path}", True, "port-forward"),
        ("service", None, False, "service"),
        ("template", "http://x{mcp_path}", True, "template"),
    ],
)
def test_access_mode_follows_the_setting_then_a_template_then_where_the_worker_runs(
    requested: Any, template: str | None, in_cluster: bool, expected: str
) -> None:
    assert choose_access(requested, template, in_cluster) == expected


def test_template_access_without_a_template_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="RSM_KUBERNETES_ENDPOINT_TEMPLATE"):
        choose_access("template", None, in_cluster=False)


# -- which endpoints name a Service ----------------------------------------------------------------


def test_the_runtimes_own_service_endpoint_is_recognised() -> None:
    config = KubernetesRuntimeConfig(namespace="team-a")
    mcp = KubernetesDeployRequest(resource_id="toolbox", name="toolbox", version="1", image="i")
    assert service_address(service_endpoint(mcp, config)) == ServiceAddress(
        namespace="team-a", name="rsm-toolbox", port=80, scheme="http", path="/mcp"
    )
    team = mcp.model_copy(update={"mcp_path": ""})
    assert service_address(service_endpoint(team, config)) == ServiceAddress(
        "team-a", "rsm-toolbox", 80, "http", ""
    )


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("http://web.prod.svc:8080/x?y=1", ServiceAddress("prod", "web", 8080, "http", "/x?y=1")),
        ("https://web.prod.svc.cluster.local/", ServiceAddress("prod", "web", 443, "https", "/")),
        ("http://web.prod.svc.corp.internal/mcp", None),  # another cluster domain
        ("http://127.0.0.1:8000/mcp", None),  # a template's or a local URL: checked as it is
        ("http://toolbox.example.org/mcp", None),
        ("http://web.svc.cluster.local/", None),
    ],
)
def test_service_address_parsing(endpoint: str, expected: ServiceAddress | None) -> None:
    assert service_address(endpoint) == expected


def test_a_configured_cluster_domain_is_honoured() -> None:
    assert service_address("http://a.b.svc.corp.internal/", "corp.internal") == ServiceAddress(
        "b", "a", 80, "http", "/"
    )


# -- which pod, which port -------------------------------------------------------------------------


def _pod(name: str, *, ready: bool = True, phase: str = "Running", deleting: bool = False) -> Any:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-03T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {
            "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8000}]}]
        },
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_pick_pod_takes_a_ready_running_pod_that_is_not_being_deleted() -> None:
    pods = [
        _pod("c"),
        _pod("a", ready=False),
        _pod("b", deleting=True),
        _pod("0", phase="Pending", ready=False),
        _pod("d"),
    ]
    assert pick_pod(pods)["metadata"]["name"] == "c"  # type: ignore[index]
    assert pick_pod(list(reversed(pods)))["metadata"]["name"] == "c"  # type: ignore[index]
    assert pick_pod([_pod("a", ready=False), _pod("b", deleting=True)]) is None
    assert pick_pod([]) is None


def test_target_port_follows_the_services_target_port_by_number_or_name() -> None:
    config = KubernetesRuntimeConfig(namespace="ns")
    manifests = render(
        KubernetesDeployRequest(resource_id="t", name="t", version="1", image="i"), config
    )
    pod = {"metadata": {"name": "p"}, "spec": manifests.deployment["spec"]["template"]["spec"]}
    # What the runtime renders: Service port 80 -> targetPort "http" -> containerPort 8000.
    assert target_port(manifests.service, pod, 80) == 8000
    numeric = {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80, "targetPort": 9000}]}}
    assert target_port(numeric, pod, 80) == 9000
    unset = {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 8080}]}}
    assert target_port(unset, pod, 8080) == 8080
    with pytest.raises(PortForwardError, match="has no port 81 \\(it has 80\\)"):
        target_port(manifests.service, pod, 81)
    named = {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80, "targetPort": "grpc"}]}}
    with pytest.raises(PortForwardError, match="targets 'grpc', which pod p lacks"):
        target_port(named, pod, 80)


def test_label_selector_is_stable() -> None:
    assert label_selector({"b": "2", "a": "1"}) == "a=1,b=2"


def test_connect_errors_are_one_line() -> None:
    handshake = k8s.ApiException(
        status=0, reason="Handshake status 403 Forbidden -+-+- {'a': 'b'} -+-+- b'{...}'"
    )
    assert connect_error(handshake) == (
        "Handshake status 403 Forbidden "
        "(the API server did not upgrade the request to a port-forward stream)"
    )
    assert connect_error(TimeoutError()) == "TimeoutError"


# -- the local end ---------------------------------------------------------------------------------


def test_the_local_listener_binds_loopback_only_on_a_port_the_kernel_picks() -> None:
    first, second = loopback_listener(), loopback_listener()
    try:
        for sock in (first, second):
            host, port = sock.getsockname()
            assert host == "127.0.0.1" and port > 0
        assert first.getsockname()[1] != second.getsockname()[1]
        with socket.create_connection(("127.0.0.1", first.getsockname()[1]), timeout=2):
            pass  # it accepts (the backlog takes it before anyone calls accept)
    finally:
        first.close()
        second.close()


def test_the_tunnel_url_keeps_the_services_path_and_scheme() -> None:
    tunnel = Tunnel(ServiceAddress("ns", "rsm-x", 80, "http", "/mcp?a=1"), 41000)
    assert tunnel.url == "http://127.0.0.1:41000/mcp?a=1"
    assert tunnel.describe() == (
        "port-forward 127.0.0.1:41000 -> no pod yet of Service ns/rsm-x port 80"
    )
    for n in range(8):
        tunnel.note_error("same")
        tunnel.note_error(f"e{n}")
    assert tunnel.errors == ["e5", "same", "e6", "same", "e7"]  # the last five, no direct repeats


# -- on kmock: everything up to the stream ---------------------------------------------------------


def _checker(cluster: Cluster, api: k8s.ApiClient) -> PortForwardingHealthChecker:
    return PortForwardingHealthChecker(
        McpHealthChecker(attempt_timeout=1.0, initial_backoff=0.05, max_backoff=0.1),
        ServicePortForwarder(api, cluster.runtime.config, connect_timeout_seconds=5),
    )


@contextlib.asynccontextmanager
async def own_client(cluster: Cluster) -> AsyncIterator[k8s.ApiClient]:
    """The forwarder's own ApiClient over the cluster's configuration, as the worker makes one."""
    api = k8s.ApiClient(cluster.api.configuration)
    try:
        yield api
    finally:
        api.close()


async def health_failure(
    checker: PortForwardingHealthChecker, endpoint: str, deadline: float = 1.5
) -> ApplicationError:
    req = HealthCheckRequest(resource_id="x", endpoint=endpoint, deadline_seconds=deadline)
    with pytest.raises(ApplicationError) as caught:
        await asyncio.wait_for(ActivityEnvironment().run(checker.health_check, req), 60)
    return caught.value


async def test_on_kmock_the_pod_behind_the_service_is_resolved_and_the_refused_upgrade_is_named() -> (
    None
):
    async with kmock_cluster() as cluster, own_client(cluster) as api:
        rid = unique_id("t-pf")
        req = cluster.request(rid, replicas=2)
        await deploy(cluster, req)
        forwarder = ServicePortForwarder(api, cluster.runtime.config)
        endpoint = service_endpoint(req, cluster.runtime.config)
        address = forwarder.address_of(endpoint)
        assert address is not None
        target = await forwarder.resolve(address)
        assert target.port == 8000  # Service port 80 -> targetPort "http" -> containerPort 8000
        assert target.pod.startswith(object_name(rid))

        err = await health_failure(_checker(cluster, api), endpoint)
        assert err.type == KubernetesFailure.PORT_FORWARD_FAILED and err.non_retryable
        assert err.message.startswith(
            f"port-forward for the health check of {endpoint} carried no connection: "
            f"port-forward to pod {target.pod} failed: Handshake status 200 OK"
        )
        details = err.details[0]
        assert details["endpoint"] == endpoint
        assert (
            f"pod {target.pod} port 8000 of Service {cluster.namespace}/"
            in (details["port_forward"])
        )


async def test_on_kmock_a_missing_service_fails_at_once_and_permanently() -> None:
    async with kmock_cluster() as cluster, own_client(cluster) as api:
        endpoint = f"http://rsm-nothing.{cluster.namespace}.svc.cluster.local:80/mcp"
        err = await health_failure(_checker(cluster, api), endpoint, deadline=30)
        assert err.type == KubernetesFailure.PORT_FORWARD_FAILED and err.non_retryable
        assert f"cannot read Service {cluster.namespace}/rsm-nothing port 80: HTTP 404" in (
            err.message
        )


async def test_on_kmock_no_ready_pod_is_waited_for_then_named() -> None:
    async with kmock_cluster() as cluster, own_client(cluster) as api:
        rid = unique_id("t-pf")
        req = cluster.request(rid, replicas=0)
        await deploy(cluster, req)
        endpoint = service_endpoint(req, cluster.runtime.config)
        err = await health_failure(_checker(cluster, api), endpoint, deadline=1.0)
        assert err.type == KubernetesFailure.PORT_FORWARD_FAILED
        assert f"no ready pod behind Service {cluster.namespace}/{object_name(rid)} port 80" in (
            err.message
        )
        assert "selector rsm.resource_id=" in err.message


async def test_an_endpoint_that_names_no_service_is_checked_as_it_is() -> None:
    async with kmock_cluster() as cluster, own_client(cluster) as api:
        endpoint = f"http://127.0.0.1:{free_port()}/mcp"  # a template's URL; nothing listens
        err = await health_failure(_checker(cluster, api), endpoint, deadline=0.5)
        assert err.type == FailureType.HEALTH_CHECK_FAILED
        assert err.message.startswith(f"MCP handshake with {endpoint} failed")


# -- our end of the stream, with the client's PortForward object stood in for ----------------------


class LocalPortForward:
    """Stands in for the object `kubernetes.stream.portforward()` returns (the same `socket(port)`
    and `error(port)`): one end of a socketpair, whose other end is piped to a local port as the
    kubelet pipes the stream to the container's. It proves the tunnel's own plumbing (listener,
    splice, error channel, counting), never the API server's part, which the real-cluster tests do."""

    def __init__(self, local_port: int | None, error: str | None = None) -> None:
        self._app, self._far = socket.socketpair()
        self._error = error
        threading.Thread(target=self._pipe, args=(local_port,), daemon=True).start()

    def socket(self, port: int) -> socket.socket:
        return self._app

    def error(self, port: int) -> str | None:
        return self._error

    def _pipe(self, local_port: int | None) -> None:
        if local_port is None:  # the kubelet found nothing listening: error, then end of stream
            self._far.close()
            return
        upstream = socket.create_connection(("127.0.0.1", local_port))
        ends = [self._far, upstream]
        try:
            while True:
                readable, _, _ = select.select(ends, [], [])
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is self._far else self._far).sendall(data)
        except OSError:
            return
        finally:
            upstream.close()
            self._far.close()


class StoodInForwarder(ServicePortForwarder):
    def __init__(self, api: k8s.ApiClient, config: Any, local_port: int | None, error: str = ""):
        super().__init__(api, config)
        self.local_port, self.error, self.connects = local_port, error, 0

    def _connect(self, namespace: str, target: Target) -> Any:
        self.connects += 1
        return LocalPortForward(self.local_port, self.error or None)


@pytest.fixture(scope="module")
def toolbox_server() -> Iterator[int]:
    """The example MCP server as a local process on 127.0.0.1 (stopped by its PID)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "mcp/toolbox/server.py")],
        env={**os.environ, "HOST": "127.0.0.1", "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: port_open(port), 30, "toolbox MCP server")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def test_an_mcp_handshake_goes_through_the_tunnels_plumbing(toolbox_server: int) -> None:
    async with kmock_cluster() as cluster, own_client(cluster) as api:
        rid = unique_id("t-pf")
        req = cluster.request(rid)
        await deploy(cluster, req)
        forwarder = StoodInForwarder(api, cluster.runtime.config, toolbox_server)
        checker = PortForwardingHealthChecker(McpHealthChecker(), forwarder)
        beats: list[Any] = []
        env = ActivityEnvironment()
        env.on_heartbeat = lambda *details: beats.append(details[0])
        endpoint = service_endpoint(req, cluster.runtime.config)
        result = await env.run(
            checker.health_check,
            HealthCheckRequest(resource_id=rid, endpoint=endpoint, deadline_seconds=20),
        )
        assert result.server_name == "toolbox"
        assert result.tools == ["add", "utc_now", "word_count"]
        assert forwarder.connects >= 1  # one port-forward per connection the MCP client opened
        assert any("port-forward 127.0.0.1:" in str(b.get("step", "")) for b in beats), beats


async def test_the_kubelets_error_channel_names_the_failure() -> None:
    refused = "error forwarding port 8000 to pod p, uid : connection refused"
    async with kmock_cluster() as cluster, own_client(cluster) as api:
        rid = unique_id("t-pf")
        req = cluster.request(rid)
        await deploy(cluster, req)
        forwarder = StoodInForwarder(api, cluster.runtime.config, None, refused)
        checker = PortForwardingHealthChecker(
            McpHealthChecker(attempt_timeout=1.0, initial_backoff=0.05, max_backoff=0.1),
            forwarder,
        )
        err = await health_failure(checker, service_endpoint(req, cluster.runtime.config))
        assert err.type == KubernetesFailure.PORT_FORWARD_FAILED and err.non_retryable
        assert f"port 8000: {refused}" in err.message
        assert forwarder.connects >= 2  # the health check kept trying until its deadline


# -- against a real cluster: the stream itself -----------------------------------------------------


@pytest.fixture
async def real_cluster() -> AsyncIterator[Cluster]:
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("no KUBECONFIG")
    async with kubeconfig_cluster() as c:
        yield c


@contextlib.asynccontextmanager
async def real_forwarder(cluster: Cluster) -> AsyncIterator[PortForwardingHealthChecker]:
    api = k8s_config.new_client_from_config()  # its own client, as the worker makes it
    try:
        yield PortForwardingHealthChecker(
            McpHealthChecker(),
            ServicePortForwarder(api, cluster.runtime.config, connect_timeout_seconds=30),
        )
    finally:
        api.close()


async def test_on_a_real_cluster_a_port_nothing_listens_on_is_named_by_the_kubelet(
    real_cluster: Cluster,
) -> None:
    rid = unique_id("t-pf")
    # The default test image (pause) runs without listening on the container port.
    req = real_cluster.request(rid)
    await deploy(real_cluster, req)
    try:
        endpoint = service_endpoint(req, real_cluster.runtime.config)
        async with real_forwarder(real_cluster) as checker:
            err = await health_failure(checker, endpoint, deadline=10)
        assert err.type == KubernetesFailure.PORT_FORWARD_FAILED, err.message
        assert f"pod {object_name(rid)}" in err.message and "port 8000" in err.message
    finally:
        await ActivityEnvironment().run(
            real_cluster.runtime.delete, StopRuntimeRequest(resource_id=rid)
        )


async def test_on_a_real_cluster_the_mcp_handshake_goes_through_the_port_forward(
    real_cluster: Cluster,
) -> None:
    image = os.environ.get("RSM_K8S_TEST_MCP_IMAGE")
    if not image:
        pytest.skip("no RSM_K8S_TEST_MCP_IMAGE (an MCP server image the cluster can pull)")
    rid = unique_id("t-pf")
    req = real_cluster.request(rid, image=image, readiness_probe=True)
    await deploy(real_cluster, req)
    try:
        endpoint = service_endpoint(req, real_cluster.runtime.config)
        async with real_forwarder(real_cluster) as checker:
            result = await ActivityEnvironment().run(
                checker.health_check,
                HealthCheckRequest(resource_id=rid, endpoint=endpoint, deadline_seconds=60),
            )
        assert result.tools and result.server_name
    finally:
        await ActivityEnvironment().run(
            real_cluster.runtime.delete, StopRuntimeRequest(resource_id=rid)
        )
