"""A team's health through its Service on Kubernetes: one HTTP GET of the manifest's health path,
after the rollout, the way the worker reaches Services (RSM_KUBERNETES_ACCESS, as the MCP check).

The kubelet's readiness probe (an HTTP GET of the same path on every pod, see
activities/kubernetes_rollout.readiness_probe) says each instance answers; this check says the
Service in front of them does: its selector finds the pods, its port leads to the container port,
and what answers there says 2xx. It reaches the Service

- through the Service's cluster DNS name (a worker inside the cluster),
- through a port-forward to a ready pod behind the Service, opened for the duration of the check
  (a worker outside it; activities/kubernetes_portforward.py), or
- through an operator's endpoint template (an ingress), as the apply recorded it.

It retries until the health deadline (connection refused while a port-forward or an ingress comes
up, a 503 from a warming instance), then fails with the non-retryable
`KubernetesFailure.SERVICE_UNHEALTHY`, naming the URL, the Service and how it was reached, the last
status code or connection error, and the start of the body. A port-forward that never carried a
connection is `KubernetesFailure.PORT_FORWARD_FAILED`, as for MCP servers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.kubernetes_portforward import (
    PortForwardError,
    ServicePortForwarder,
    Tunnel,
    service_address,
)
from activities.kubernetes_rollout import object_name
from activities.mcp_health import describe
from state.runtime_models import (
    KubernetesActivity,
    KubernetesFailure,
    KubernetesRuntimeConfig,
    ServiceHealthRequest,
    ServiceHealthResult,
)

BODY_READ_LIMIT = 4096  # bytes read of an answer: a health endpoint's body is short
EXCERPT_CHARS = 200


# -- pure logic ----------------------------------------------------------------------------------


def health_url(endpoint: str, health_path: str) -> str:
    """The health path under the Service's URL: `http://svc:80` + `/healthz`, keeping a path prefix
    a template gives (`https://ingress/teams/x` + `/healthz`); the health path's query wins."""
    base = urlsplit(endpoint)
    path = urlsplit(health_path)
    return urlunsplit(
        (base.scheme, base.netloc, base.path.rstrip("/") + path.path, path.query or base.query, "")
    )


def excerpt(body: bytes, limit: int = EXCERPT_CHARS) -> str:
    """The start of a body on one line, for a reason a person reads."""
    text = " ".join(body.decode("utf-8", errors="replace").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Outcome:
    """One GET: the status and body start, or the connection error."""

    status_code: int | None = None
    body: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def describe(self) -> str:
        if self.status_code is None:
            return f"no answer: {self.error or 'no attempt made'}"
        return f"HTTP {self.status_code}" + (f", body: {self.body}" if self.body else ", no body")


def unhealthy_message(url: str, via: str, last: Outcome, attempts: int, elapsed: float) -> str:
    verb = "answered" if last.status_code is not None else "got"
    return (
        f"health check GET {url} through {via} {verb} {last.describe()} "
        f"(expected 2xx; {attempts} attempts in {elapsed:.1f}s)"
    )


# -- the activity --------------------------------------------------------------------------------


class ServiceHealthChecker:
    """`kubernetes_service_health`. With a forwarder (a worker outside the cluster), a URL that
    names a Service is reached through a port-forward; any other URL (the DNS name from inside the
    cluster, an endpoint template) is asked as it is."""

    def __init__(
        self,
        config: KubernetesRuntimeConfig | None = None,
        forwarder: ServicePortForwarder | None = None,
        attempt_timeout: float = 5.0,
        initial_backoff: float = 0.2,
        max_backoff: float = 2.0,
    ) -> None:
        self._config = config or KubernetesRuntimeConfig()
        self._forwarder = forwarder
        self._attempt_timeout = attempt_timeout
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff

    def _service(self, resource_id: str) -> str:
        return f"Service {self._config.namespace}/{object_name(resource_id)}"

    @activity.defn(name=KubernetesActivity.SERVICE_HEALTH)
    async def service_health(self, req: ServiceHealthRequest) -> ServiceHealthResult:
        url = health_url(req.endpoint, req.health_path)
        address = service_address(url, self._config.cluster_domain)
        if address is None:
            via = f"the endpoint template for {self._service(req.resource_id)}"
            return await self._poll(req, url, url, lambda: via, req.deadline_seconds)
        if self._forwarder is None:
            via = f"{address.describe} (its cluster DNS name)"
            return await self._poll(req, url, url, lambda: via, req.deadline_seconds)
        started = time.monotonic()
        try:
            async with self._forwarder.forward(address) as tunnel:
                remaining = max(req.deadline_seconds - (time.monotonic() - started), 1.0)
                try:
                    return await self._poll(req, url, tunnel.url, tunnel.describe, remaining)
                except ApplicationError as err:
                    raise _through_tunnel(err, url, tunnel) from None
        except PortForwardError as exc:
            raise ApplicationError(
                f"port-forward for the health check of {url} failed: {exc.reason}",
                {"url": url, "service": address.describe},
                type=KubernetesFailure.PORT_FORWARD_FAILED,
                non_retryable=exc.permanent,
            ) from None

    async def _get(self, http: httpx.AsyncClient, url: str) -> Outcome:
        try:
            async with http.stream("GET", url) as response:
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) >= BODY_READ_LIMIT:
                        break
                return Outcome(status_code=response.status_code, body=excerpt(body))
        except Exception as exc:  # refused, reset, timed out, a tunnel closed: try again
            return Outcome(error=describe(exc))

    async def _poll(
        self,
        req: ServiceHealthRequest,
        url: str,
        target: str,
        via: Callable[[], str],
        deadline_seconds: float,
    ) -> ServiceHealthResult:
        """GET `target` (the URL itself, or the tunnel's local URL standing for it) until 2xx or
        the deadline; messages always name `url`, the Service's."""
        started = time.monotonic()
        deadline = started + deadline_seconds
        backoff = self._initial_backoff
        attempts = 0
        last = Outcome()
        # Redirects are not followed: a 3xx is what the Service said, not health.
        async with httpx.AsyncClient(timeout=self._attempt_timeout, follow_redirects=False) as http:
            while True:
                attempts += 1
                activity.heartbeat({"attempt": attempts, "url": url, "last": last.describe()})
                last = await self._get(http, target)
                elapsed = round(time.monotonic() - started, 3)
                if last.ok:
                    assert last.status_code is not None
                    return ServiceHealthResult(
                        url=url,
                        via=via(),
                        status_code=last.status_code,
                        body_excerpt=last.body,
                        attempts=attempts,
                        elapsed_seconds=elapsed,
                    )
                if time.monotonic() + backoff > deadline:
                    raise ApplicationError(
                        unhealthy_message(url, via(), last, attempts, elapsed),
                        {
                            "url": url,
                            "service": self._service(req.resource_id),
                            "via": via(),
                            "status_code": last.status_code,
                            "error": last.error,
                            "body_excerpt": last.body,
                            "attempts": attempts,
                            "elapsed_seconds": elapsed,
                        },
                        type=KubernetesFailure.SERVICE_UNHEALTHY,
                        non_retryable=True,
                    )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)


def _through_tunnel(err: ApplicationError, url: str, tunnel: Tunnel) -> ApplicationError:
    """A port-forward that never carried a connection is the failure itself; otherwise the
    check's failure, with what the pod side said added."""
    details = err.details[0] if err.details and isinstance(err.details[0], dict) else {}
    details = {**details, "port_forward": tunnel.describe(), "port_forward_errors": tunnel.errors}
    pod_errors = "; ".join(tunnel.errors)
    if tunnel.forwarded == 0 and tunnel.errors:
        return ApplicationError(
            f"port-forward for the health check of {url} carried no connection: {pod_errors}",
            details,
            type=KubernetesFailure.PORT_FORWARD_FAILED,
            non_retryable=True,
        )
    message = err.message + (f"; port-forward: {pod_errors}" if pod_errors else "")
    return ApplicationError(message, details, type=err.type, non_retryable=err.non_retryable)
