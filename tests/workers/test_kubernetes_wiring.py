"""How the worker wires the Kubernetes runtime from settings: the access mode for health checks
(RSM_KUBERNETES_ACCESS, else chosen by where the worker runs), the port-forwarder's own client, and
the registry the builder pushes to (RSM_REGISTRY)."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio import activity

from activities.kubernetes_portforward import PortForwardingHealthChecker
from state.postgres import PostgresStore
from state.settings import RsmSettings
from workers.worker import in_cluster, kubernetes_wiring, real_activities

TEMPLATE = "http://{name}.example.org{mcp_path}"


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubeconfig naming a server on 127.0.0.1 (nothing is called while wiring)."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = tmp_path / "kubeconfig"
    path.write_text(
        """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:9"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""
    )
    return path


def test_outside_the_cluster_without_a_template_health_checks_port_forward(
    kubeconfig: Path,
) -> None:
    settings = RsmSettings(kubernetes_enabled=True, kubeconfig=kubeconfig)
    assert not in_cluster(settings)
    runtime, forwarder = kubernetes_wiring(settings)
    assert forwarder is not None
    # The endpoint recorded is the Service's DNS name, which the port-forward recognises.
    assert runtime.config.endpoint_template is None
    assert forwarder._api_client is not runtime._core.api_client  # never the runtime's client


def test_a_template_is_used_as_it_is_unless_port_forward_is_asked_for(kubeconfig: Path) -> None:
    settings = RsmSettings(
        kubernetes_enabled=True, kubeconfig=kubeconfig, kubernetes_endpoint_template=TEMPLATE
    )
    runtime, forwarder = kubernetes_wiring(settings)
    assert forwarder is None and runtime.config.endpoint_template == TEMPLATE

    asked = settings.model_copy(update={"kubernetes_access": "port-forward"})
    runtime, forwarder = kubernetes_wiring(asked)
    assert forwarder is not None and runtime.config.endpoint_template is None


def test_service_access_uses_the_dns_name_without_a_forwarder(kubeconfig: Path) -> None:
    settings = RsmSettings(
        kubernetes_enabled=True, kubeconfig=kubeconfig, kubernetes_access="service"
    )
    runtime, forwarder = kubernetes_wiring(settings)
    assert forwarder is None and runtime.config.endpoint_template is None


async def test_teams_http_health_is_registered_and_shares_the_port_forwarder(
    kubeconfig: Path, store: PostgresStore, docker_engine: object
) -> None:
    settings = RsmSettings(kubernetes_enabled=True, kubeconfig=kubeconfig)
    wiring = real_activities(store, settings)
    assert isinstance(wiring.health, PortForwardingHealthChecker)
    assert wiring.service_health is not None
    # The MCP check and the team's HTTP check reach Services the same way.
    assert wiring.service_health._forwarder is wiring.health._forwarder
    assert wiring.service_health._config == wiring.kubernetes.config  # type: ignore[union-attr]
    names = {activity._Definition.must_from_callable(fn).name for fn in wiring.all()}  # type: ignore[arg-type]
    assert {"kubernetes_apply", "kubernetes_wait_rollout", "kubernetes_service_health"} <= names


def test_a_worker_in_a_pod_is_in_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert in_cluster(RsmSettings())
    # Its own kubeconfig means it talks to that cluster, from wherever it runs.
    assert not in_cluster(RsmSettings(kubeconfig=Path("/etc/kubeconfig")))


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSM_KUBERNETES_ACCESS", "port-forward")
    monkeypatch.setenv("RSM_REGISTRY", "127.0.0.1:5000/")
    settings = RsmSettings()
    assert settings.kubernetes_access == "port-forward"
    assert settings.registry == "127.0.0.1:5000"
    monkeypatch.setenv("RSM_REGISTRY", "http://127.0.0.1:5000")
    with pytest.raises(ValueError, match="without a scheme"):
        RsmSettings()
    monkeypatch.setenv("RSM_KUBERNETES_ACCESS", "tunnel")
    monkeypatch.delenv("RSM_REGISTRY")
    with pytest.raises(ValueError, match="kubernetes_access"):
        RsmSettings()
