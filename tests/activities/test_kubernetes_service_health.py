"""A team's HTTP health through its Service (activities/kubernetes_service_health.py).

- the pure parts: the health URL under the Service's URL, the body excerpt, the failure's wording;
- the activity against a real HTTP server on 127.0.0.1 reached as an endpoint template is (2xx
  passes, a warming 503 is waited out, a 500, a redirect or nothing listening fails by name), and a
  Service DNS name asked directly, as a worker in the cluster does;
- on kmock, the port-forward mode: the Service and its ready pod are resolved for real and the GET
  goes through the tunnel's own plumbing to the local server (only the client's PortForward object
  stood in for, as in test_kubernetes_portforward.py); without the stand-in, kmock's refused upgrade
  is named;
- against the cluster of $KUBECONFIG (skipped with "no KUBECONFIG" otherwise): a pod that does not
  listen is named from the kubelet's error channel, and with RSM_K8S_TEST_HTTP_IMAGE (an image the
  cluster can pull that serves HTTP on $PORT, 2xx on RSM_K8S_TEST_HTTP_PATH, default /healthz)
  the GET goes through a real port-forward to pods that passed the httpGet readiness probe.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import config as k8s_config
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.kubernetes_portforward import ServicePortForwarder
from activities.kubernetes_rollout import object_name, service_endpoint
from activities.kubernetes_service_health import (
    Outcome,
    ServiceHealthChecker,
    excerpt,
    health_url,
    unhealthy_message,
)
from state.models import StopRuntimeRequest
from state.runtime_models import (
    KubernetesDeployRequest,
    KubernetesFailure,
    KubernetesRuntimeConfig,
    ServiceHealthRequest,
    ServiceHealthResult,
)
from tests.activities.test_kubernetes_portforward import StoodInForwarder, own_client
from tests.activities.test_kubernetes_runtime import (
    Cluster,
    deploy,
    kmock_cluster,
    kubeconfig_cluster,
)
from tests.helpers import unique_id
from workers.services.process import free_port

CONFIG = KubernetesRuntimeConfig(namespace="team-a")


class HealthServer:
    """A real HTTP server on 127.0.0.1: `status` and `body` on /healthz (after the statuses in
    `script`, one per request), 404 elsewhere; `paths` keeps what was asked. Change `status` to
    break it."""

    def __init__(self, status: int = 200, body: str = "ok", script: list[int] | None = None):
        self.status, self.body, self.script = status, body, list(script or [])
        self.paths: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.paths.append(self.path)
                if self.path != "/healthz":
                    code, text = 404, "no route"
                else:
                    code = server.script.pop(0) if server.script else server.status
                    text = server.body
                data = text.encode()
                self.send_response(code)
                if 300 <= code < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> HealthServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _checker(
    config: KubernetesRuntimeConfig = CONFIG, forwarder: ServicePortForwarder | None = None
) -> ServiceHealthChecker:
    return ServiceHealthChecker(
        config, forwarder, attempt_timeout=2.0, initial_backoff=0.05, max_backoff=0.2
    )


async def check(
    checker: ServiceHealthChecker, endpoint: str, deadline: float = 5.0, rid: str = "research"
) -> ServiceHealthResult:
    req = ServiceHealthRequest(
        resource_id=rid, endpoint=endpoint, health_path="/healthz", deadline_seconds=deadline
    )
    return await asyncio.wait_for(ActivityEnvironment().run(checker.service_health, req), 60)


async def failure(
    checker: ServiceHealthChecker, endpoint: str, deadline: float = 0.5, rid: str = "research"
) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await check(checker, endpoint, deadline, rid)
    return caught.value


# -- pure logic ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "path", "expected"),
    [
        (  # the Service's DNS name the apply records for a team (no MCP path)
            "http://rsm-research.team-a.svc.cluster.local:80",
            "/healthz",
            "http://rsm-research.team-a.svc.cluster.local:80/healthz",
        ),
        ("http://127.0.0.1:5000", "/healthz", "http://127.0.0.1:5000/healthz"),
        (  # a template with a path prefix keeps it
            "https://ingress.example.org/teams/research/",
            "/healthz?deep=1",
            "https://ingress.example.org/teams/research/healthz?deep=1",
        ),
        ("http://h/x?a=1", "/ready", "http://h/x/ready?a=1"),
    ],
)
def test_the_health_url_is_the_path_under_the_services_url(
    endpoint: str, path: str, expected: str
) -> None:
    assert health_url(endpoint, path) == expected


def test_the_body_excerpt_is_one_short_line() -> None:
    assert excerpt(b"  database\n\n  down \t") == "database down"
    long = excerpt(b"x" * 500)
    assert len(long) == 200 and long.endswith("…")
    assert excerpt(b"bad \xff byte") == "bad \ufffd byte"
    assert excerpt(b"") == ""


def test_the_failure_names_the_url_the_route_and_the_answer() -> None:
    answered = Outcome(status_code=500, body="database down")
    assert unhealthy_message("http://s/healthz", "Service ns/s port 80", answered, 4, 2.04) == (
        "health check GET http://s/healthz through Service ns/s port 80 answered HTTP 500, "
        "body: database down (expected 2xx; 4 attempts in 2.0s)"
    )
    silent = Outcome(error="ConnectError: All connection attempts failed")
    assert unhealthy_message("http://s/healthz", "x", silent, 1, 0.1) == (
        "health check GET http://s/healthz through x got no answer: ConnectError: All connection"
        " attempts failed (expected 2xx; 1 attempts in 0.1s)"
    )
    assert Outcome(status_code=204).describe() == "HTTP 204, no body"
    assert Outcome(status_code=204).ok and not Outcome(status_code=302).ok
    assert not Outcome(error="x").ok


# -- the activity, reaching the URL as it is -------------------------------------------------------


async def test_a_2xx_through_the_endpoint_template_passes_and_says_how_it_was_reached() -> None:
    with HealthServer(200, '{"status": "ok"}') as server:
        result = await check(_checker(), server.url)
    assert result.url == f"{server.url}/healthz"
    assert result.via == "the endpoint template for Service team-a/rsm-research"
    assert (result.status_code, result.body_excerpt, result.attempts) == (
        200,
        '{"status": "ok"}',
        1,
    )
    assert server.paths == ["/healthz"]
    assert result.summary() == (
        f"GET {server.url}/healthz through the endpoint template for Service "
        "team-a/rsm-research answered HTTP 200"
    )


async def test_a_service_that_is_still_coming_up_is_waited_for() -> None:
    with HealthServer(204, "", script=[503, 503]) as server:
        result = await check(_checker(), server.url)
    assert (result.status_code, result.attempts) == (204, 3)


async def test_a_500_fails_permanently_naming_the_url_the_status_and_the_body() -> None:
    with HealthServer(500, "Traceback: database down") as server:
        err = await failure(_checker(), server.url, deadline=0.6)
    assert err.type == KubernetesFailure.SERVICE_UNHEALTHY and err.non_retryable
    assert err.message.startswith(
        f"health check GET {server.url}/healthz through the endpoint template for Service "
        "team-a/rsm-research answered HTTP 500, body: Traceback: database down (expected 2xx; "
    )
    details = err.details[0]
    assert details["status_code"] == 500 and details["error"] is None
    assert details["service"] == "Service team-a/rsm-research"
    assert details["attempts"] == len(server.paths) >= 2  # retried until the deadline


async def test_a_redirect_is_not_followed_and_fails() -> None:
    with HealthServer(302, "moved") as server:
        err = await failure(_checker(), server.url)
    assert "answered HTTP 302" in err.message
    assert set(server.paths) == {"/healthz"}  # /elsewhere was never asked


async def test_nothing_listening_fails_naming_the_connection_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    err = await failure(_checker(), url)
    assert err.type == KubernetesFailure.SERVICE_UNHEALTHY
    assert f"GET {url}/healthz through the endpoint template" in err.message
    assert "got no answer: ConnectError" in err.message
    assert err.details[0]["status_code"] is None and err.details[0]["error"]


async def test_inside_the_cluster_the_services_dns_name_is_asked_directly() -> None:
    team = KubernetesDeployRequest(
        resource_id="research", name="research", version="1", image="i", mcp_path=""
    )
    endpoint = service_endpoint(team, CONFIG)  # http://rsm-research.team-a.svc.cluster.local:80
    err = await failure(_checker(), endpoint, deadline=0.3)  # no cluster DNS here
    assert err.message.startswith(
        f"health check GET {endpoint}/healthz through Service team-a/rsm-research port 80 "
        "(its cluster DNS name) got no answer: "
    )


# -- on kmock: through a port-forward --------------------------------------------------------------


async def _deployed_team(cluster: Cluster) -> tuple[str, str]:
    rid = unique_id("t-sh")
    req = cluster.request(rid, mcp_path="", health_path="/healthz")
    await deploy(cluster, req)
    return rid, service_endpoint(req, cluster.runtime.config)


async def test_through_a_port_forward_the_get_reaches_a_pod_behind_the_service() -> None:
    async with kmock_cluster() as cluster, own_client(cluster) as api:
        rid, endpoint = await _deployed_team(cluster)
        config = cluster.runtime.config
        with HealthServer(200, "ok") as server:
            forwarder = StoodInForwarder(api, config, server.port)
            result = await check(_checker(config, forwarder), endpoint, rid=rid)
            assert server.paths == ["/healthz"]
        assert forwarder.connects >= 1
        assert result.url == f"{endpoint}/healthz"  # the Service's URL, not the local one
        service = f"Service {cluster.namespace}/{object_name(rid)} port 80"
        assert result.via.startswith("port-forward 127.0.0.1:")
        assert result.via.endswith(f" port 8000 of {service}")
        assert f"-> pod {object_name(rid)}-" in result.via

        with HealthServer(500, "boom") as server:
            forwarder = StoodInForwarder(api, config, server.port)
            err = await failure(_checker(config, forwarder), endpoint, rid=rid)
        assert err.type == KubernetesFailure.SERVICE_UNHEALTHY
        assert err.message.startswith(f"health check GET {endpoint}/healthz through port-forward")
        assert "answered HTTP 500, body: boom" in err.message
        assert err.details[0]["port_forward"].endswith(f"of {service}")


async def test_on_kmock_the_refused_port_forward_is_named() -> None:
    async with kmock_cluster() as cluster, own_client(cluster) as api:
        rid, endpoint = await _deployed_team(cluster)
        forwarder = ServicePortForwarder(api, cluster.runtime.config, connect_timeout_seconds=5)
        err = await failure(_checker(cluster.runtime.config, forwarder), endpoint, rid=rid)
        assert err.type == KubernetesFailure.PORT_FORWARD_FAILED and err.non_retryable
        assert err.message.startswith(
            f"port-forward for the health check of {endpoint}/healthz carried no connection: "
            f"port-forward to pod {object_name(rid)}-"
        )
        assert "Handshake status 200 OK" in err.message

        missing = f"http://rsm-nothing.{cluster.namespace}.svc.cluster.local:80"
        err = await failure(_checker(cluster.runtime.config, forwarder), missing, deadline=30)
        assert err.type == KubernetesFailure.PORT_FORWARD_FAILED and err.non_retryable
        assert f"cannot read Service {cluster.namespace}/rsm-nothing port 80: HTTP 404" in (
            err.message
        )


# -- against a real cluster ------------------------------------------------------------------------


@pytest.fixture
async def real_cluster() -> AsyncIterator[Cluster]:
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("no KUBECONFIG")
    async with kubeconfig_cluster() as c:
        yield c


async def _on_real_cluster(cluster: Cluster, req: KubernetesDeployRequest, deadline: float) -> Any:
    api = k8s_config.new_client_from_config()  # its own client, as the worker makes it
    forwarder = ServicePortForwarder(api, cluster.runtime.config, connect_timeout_seconds=30)
    endpoint = service_endpoint(req, cluster.runtime.config)
    try:
        await deploy(cluster, req)
        checker = ServiceHealthChecker(cluster.runtime.config, forwarder)
        try:
            return await check(checker, endpoint, deadline, rid=req.resource_id)
        except ApplicationError as err:
            return err
    finally:
        api.close()
        await ActivityEnvironment().run(
            cluster.runtime.delete, StopRuntimeRequest(resource_id=req.resource_id)
        )


async def test_on_a_real_cluster_a_pod_that_does_not_listen_is_named(
    real_cluster: Cluster,
) -> None:
    # The default test image (pause) runs without listening, so no readiness probe there.
    req = real_cluster.request(unique_id("t-sh"), mcp_path="")
    err = await _on_real_cluster(real_cluster, req, deadline=10)
    assert isinstance(err, ApplicationError), err
    assert err.type == KubernetesFailure.PORT_FORWARD_FAILED, err.message
    assert f"pod {object_name(req.resource_id)}" in err.message and "port 8000" in err.message


async def test_on_a_real_cluster_the_get_goes_through_the_port_forward(
    real_cluster: Cluster,
) -> None:
    image = os.environ.get("RSM_K8S_TEST_HTTP_IMAGE")
    if not image:
        pytest.skip("no RSM_K8S_TEST_HTTP_IMAGE (an HTTP server image the cluster can pull)")
    path = os.environ.get("RSM_K8S_TEST_HTTP_PATH", "/healthz")
    req = real_cluster.request(
        unique_id("t-sh"), image=image, mcp_path="", readiness_probe=True, health_path=path
    )
    result = await _on_real_cluster(real_cluster, req, deadline=60)
    assert isinstance(result, ServiceHealthResult), result
    assert 200 <= result.status_code < 300 and result.via.startswith("port-forward")
    live: Any = await real_cluster.read_deployment(req.resource_id)
    assert live.spec.template.spec.containers[0].readiness_probe.http_get.path == path
