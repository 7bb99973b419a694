"""The health check through a resource's Service from a worker outside the cluster: a port-forward
through the API server, opened for the duration of the check, listening on 127.0.0.1 only.

How the official client port-forwards (kubernetes.stream.portforward, its examples/pod_portforward.py)
and what that means here:

- it forwards to a pod, never to a Service. Like `kubectl port-forward svc/NAME`, the Service is read,
  a ready pod its selector matches is picked, and the Service port is mapped to the container port
  (its targetPort may be a port name, looked up in the pod's containers);
- one `portforward()` call is one websocket carrying one TCP stream per port, handed over as one end
  of a socketpair. An HTTP client opens several connections (the MCP client does), so the local
  listener opens one port-forward per accepted connection;
- `portforward()` swaps `call_api` on the ApiClient it is given while it connects
  (kubernetes.stream.stream), so any other thread's call on that client meanwhile goes astray (a
  known race: kubernetes-client/python#928). Each port-forward therefore gets a fresh ApiClient over
  the shared Configuration; the reads of Services and pods use the forwarder's own client, never the
  runtime's;
- its proxy thread closes the stream when our end half-closes, so there is no half-close: when
  either side ends, both ends are closed (fine for HTTP);
- a refusal inside the pod (nothing listening) arrives on the port's error channel, read with
  `pf.error(port)` once the stream has ended; it is kept and named in the health check's failure;
- it has no connect timeout of its own, so each connect runs in a thread under a timeout.

kmock cannot serve the port-forward websocket (it answers the upgrade like any GET, so the connect
fails with "Handshake status 200 OK"), so the stream is tested against a real cluster when
KUBECONFIG is set; on kmock the Service and pod resolution run for real, and the pure parts (which
pod, which port, which access mode, which endpoint is a Service) are unit-tested
(tests/activities/test_kubernetes_portforward.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kubernetes.client import ApiClient, CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import portforward
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.mcp_health import McpHealthChecker
from state.errors import FailureType
from state.models import HealthCheckRequest, McpHealthResult
from state.runtime_models import KubernetesAccess, KubernetesFailure, KubernetesRuntimeConfig

log = logging.getLogger("rsm.kubernetes.portforward")

LOOPBACK = "127.0.0.1"


# -- pure logic ----------------------------------------------------------------------------------


def choose_access(
    requested: KubernetesAccess | None, endpoint_template: str | None, in_cluster: bool
) -> KubernetesAccess:
    """The access mode a worker uses: the one asked for, else an operator's URL template when one
    is set (as before this setting existed), else the Service's DNS name inside the cluster, else
    a port-forward."""
    if requested == "template" and not endpoint_template:
        raise ValueError(
            "RSM_KUBERNETES_ACCESS=template needs RSM_KUBERNETES_ENDPOINT_TEMPLATE "
            "(e.g. http://{name}.example.org{mcp_path})"
        )
    if requested is not None:
        return requested
    if endpoint_template:
        return "template"
    return "service" if in_cluster else "port-forward"


@dataclass(frozen=True)
class ServiceAddress:
    """A Service named by an endpoint URL `http://<name>.<namespace>.svc.<domain>:<port>/<path>`."""

    namespace: str
    name: str
    port: int
    scheme: str
    path: str

    @property
    def describe(self) -> str:
        return f"Service {self.namespace}/{self.name} port {self.port}"


def service_address(endpoint: str, cluster_domain: str = "cluster.local") -> ServiceAddress | None:
    """The Service an endpoint URL names, or None for any other URL (a template's, a local one):
    those are checked as they are."""
    parts = urlsplit(endpoint)
    host = (parts.hostname or "").lower()
    labels = host.split(".")
    suffix = ["svc", *cluster_domain.lower().split(".")]
    if len(labels) < 3 or labels[2:] not in (suffix, ["svc"]):
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    path = urlunsplit(("", "", parts.path, parts.query, ""))
    return ServiceAddress(labels[1], labels[0], port, parts.scheme or "http", path)


class PortForwardError(Exception):
    """The port-forward cannot be opened; `permanent` when waiting cannot change that."""

    def __init__(self, reason: str, permanent: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


def label_selector(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def _ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    conditions = status.get("conditions") or []
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
    )


def pick_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A pod the Service would send traffic to: running, ready and not being deleted (the
    endpoints controller's rule). Sorted by name, so the choice is stable between connections."""
    ready = [
        p for p in pods if _ready(p) and not (p.get("metadata") or {}).get("deletionTimestamp")
    ]
    return (
        min(ready, key=lambda p: str((p.get("metadata") or {}).get("name", ""))) if ready else None
    )


def target_port(service: dict[str, Any], pod: dict[str, Any], port: int) -> int:
    """The container port behind `port` of the Service: its targetPort (the port itself when
    unset), a name looked up in the pod's containers."""
    meta = service.get("metadata") or {}
    where = f"Service {meta.get('namespace')}/{meta.get('name')}"
    ports = (service.get("spec") or {}).get("ports") or []
    match = next((p for p in ports if int(p.get("port", 0)) == port), None)
    if match is None:
        have = ", ".join(str(p.get("port")) for p in ports) or "none"
        raise PortForwardError(f"{where} has no port {port} (it has {have})")
    target = match.get("targetPort", port)
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for container_port in container.get("ports") or []:
            if container_port.get("name") == target:
                return int(container_port["containerPort"])
    pod_name = (pod.get("metadata") or {}).get("name")
    raise PortForwardError(f"{where} port {port} targets {target!r}, which pod {pod_name} lacks")


def connect_error(exc: BaseException) -> str:
    """One line for a failed port-forward connect. The client wraps everything in
    ApiException(status=0, reason=...), and websocket-client's handshake error carries the
    response's headers and body after ` -+-+- `: keep the status line, say what it means."""
    reason = str(getattr(exc, "reason", None) or exc or type(exc).__name__)
    reason = reason.split(" -+-+- ")[0].strip().splitlines()[0] if reason.strip() else reason
    if reason.startswith("Handshake status"):
        reason += " (the API server did not upgrade the request to a port-forward stream)"
    return reason or type(exc).__name__


def loopback_listener() -> socket.socket:
    """A listening socket on 127.0.0.1 with a port the kernel picks: never another interface, and
    no window between finding a free port and binding it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((LOOPBACK, 0))
        sock.listen(16)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


# -- the tunnel ----------------------------------------------------------------------------------


@dataclass
class Target:
    pod: str
    port: int


@dataclass
class Tunnel:
    """An open port-forward: the local URL standing for the Service's, and what it carried."""

    address: ServiceAddress
    local_port: int
    connections: int = 0
    forwarded: int = 0  # connections a pod answered
    errors: list[str] = field(default_factory=list)
    # The pod connections go to; None after a failure, so the next connection picks afresh.
    target: Target | None = None
    last_target: Target | None = None  # the last one tried, to name it in a failure

    @property
    def url(self) -> str:
        return f"{self.address.scheme}://{LOOPBACK}:{self.local_port}{self.address.path}"

    def use(self, target: Target | None) -> None:
        self.target = target
        self.last_target = target or self.last_target

    def describe(self) -> str:
        t = self.target or self.last_target
        to = f"pod {t.pod} port {t.port}" if t else "no pod yet"
        return f"port-forward {LOOPBACK}:{self.local_port} -> {to} of {self.address.describe}"

    def note_error(self, error: str) -> None:
        if not self.errors or self.errors[-1] != error:
            self.errors.append(error)
        del self.errors[:-5]


class ServicePortForwarder:
    """Opens port-forwards to the pods behind a Service. Give it its own ApiClient (the worker
    makes a second one from the same kubeconfig), never the one the runtime's threads use."""

    def __init__(
        self,
        api_client: ApiClient,
        config: KubernetesRuntimeConfig | None = None,
        connect_timeout_seconds: float = 10.0,
    ) -> None:
        self._api_client = api_client
        self._core = CoreV1Api(api_client)
        self._config = config or KubernetesRuntimeConfig()
        self._connect_timeout = connect_timeout_seconds

    def address_of(self, endpoint: str) -> ServiceAddress | None:
        return service_address(endpoint, self._config.cluster_domain)

    async def _get(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        call = functools.partial(
            fn,
            *args,
            _preload_content=False,
            _request_timeout=self._config.request_timeout_seconds,
            **kwargs,
        )
        response = await asyncio.to_thread(call)
        return dict(json.loads(response.data)) if response.data else {}

    async def resolve(self, address: ServiceAddress) -> Target:
        """The pod and container port a connection to the Service would reach now."""
        try:
            service = await self._get(
                self._core.read_namespaced_service, address.name, address.namespace
            )
        except ApiException as exc:
            if exc.status in (401, 403, 404):
                raise PortForwardError(
                    f"cannot read {address.describe}: HTTP {exc.status} {exc.reason}"
                ) from None
            raise  # unreachable or overloaded API server: temporary
        selector = (service.get("spec") or {}).get("selector") or {}
        if not selector:
            raise PortForwardError(f"{address.describe} has no selector: no pod to forward to")
        listed = await self._get(
            self._core.list_namespaced_pod,
            address.namespace,
            label_selector=label_selector(selector),
        )
        pods = list(listed.get("items") or [])
        pod = pick_pod(pods)
        if pod is None:
            raise PortForwardError(
                f"no ready pod behind {address.describe} "
                f"(selector {label_selector(selector)}, {len(pods)} pods)",
                permanent=False,  # a pod may become ready before the check's deadline
            )
        return Target(str(pod["metadata"]["name"]), target_port(service, pod, address.port))

    def _connect(self, namespace: str, target: Target) -> Any:
        """Open one port-forward stream (blocking). A fresh ApiClient: portforward() swaps its
        call_api while connecting, which must not touch a client another thread uses."""
        client = ApiClient(self._api_client.configuration)
        try:
            return portforward(
                CoreV1Api(client).connect_get_namespaced_pod_portforward,
                target.pod,
                namespace,
                ports=str(target.port),
            )
        finally:
            client.close()

    @contextlib.asynccontextmanager
    async def forward(self, address: ServiceAddress) -> AsyncIterator[Tunnel]:
        """Listen on 127.0.0.1 until the block ends; each connection is forwarded to a ready pod
        behind the Service. Permanent problems with the Service raise PortForwardError at once;
        a missing ready pod or a failing stream is recorded on the tunnel and the connection is
        closed, so the caller's own retries (the health check's) decide when to give up."""
        tunnel = Tunnel(address, 0)
        try:
            tunnel.use(await self.resolve(address))
        except PortForwardError as exc:
            if exc.permanent:
                raise
            tunnel.note_error(exc.reason)  # no ready pod yet: each connection looks again
        listener = loopback_listener()
        tunnel.local_port = int(listener.getsockname()[1])
        handlers: set[asyncio.Task[None]] = set()

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                handlers.add(task)
            try:
                await self._serve(tunnel, reader, writer)
            finally:
                if task is not None:
                    handlers.discard(task)

        try:
            server = await asyncio.start_server(on_connection, sock=listener)
        except BaseException:
            listener.close()
            raise
        log.info("opened %s", tunnel.describe())
        try:
            yield tunnel
        finally:
            server.close()
            for task in list(handlers):
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            await server.wait_closed()
            log.info(
                "closed %s after %d connections (%d forwarded)",
                tunnel.describe(),
                tunnel.connections,
                tunnel.forwarded,
            )

    async def _open(self, namespace: str, target: Target) -> Any:
        """_connect in a thread, under a timeout. A connect that returns after the timeout is
        closed then, so its websocket and proxy thread do not linger."""
        loop = asyncio.get_running_loop()
        pending = loop.run_in_executor(None, self._connect, namespace, target)
        try:
            return await asyncio.wait_for(asyncio.shield(pending), self._connect_timeout)
        except (TimeoutError, asyncio.CancelledError):
            pending.add_done_callback(
                lambda f: (
                    f.result().close() if not f.cancelled() and f.exception() is None else None
                )
            )
            raise

    async def _serve(
        self, tunnel: Tunnel, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        tunnel.connections += 1
        try:
            try:
                if tunnel.target is None:
                    tunnel.use(await self.resolve(tunnel.address))
                assert tunnel.target is not None
                target = tunnel.target
                forward = await self._open(tunnel.address.namespace, target)
            except PortForwardError as exc:
                tunnel.note_error(exc.reason)
                return
            except Exception as exc:
                # The pod went away, the API server refused the upgrade (403 without the
                # pods/portforward permission; kmock cannot upgrade at all) or did not answer:
                # the connection is closed, and the next one picks a pod afresh.
                reason = connect_error(exc)
                pod = tunnel.target.pod if tunnel.target else "?"
                tunnel.note_error(f"port-forward to pod {pod} failed: {reason}")
                tunnel.use(None)
                return
            # The socketpair end the proxy thread serves, as a plain socket asyncio can drive.
            pod_sock = socket.socket(fileno=forward.socket(target.port).detach())
            pod_reader, pod_writer = await asyncio.open_connection(sock=pod_sock)
            try:
                if await _splice(reader, writer, pod_reader, pod_writer):
                    tunnel.forwarded += 1
            finally:
                pod_writer.close()
                with contextlib.suppress(Exception):
                    await pod_writer.wait_closed()
            error = forward.error(target.port)
            if error:
                # What the kubelet said, e.g. "error forwarding port 8000 to pod ...: connection
                # refused" when nothing listens there.
                tunnel.note_error(f"pod {target.pod} port {target.port}: {error.strip()}")
                tunnel.use(None)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    pod_reader: asyncio.StreamReader,
    pod_writer: asyncio.StreamWriter,
) -> bool:
    """Copy both ways until either side ends; the other direction is then cut (no half-close).
    True when the pod side sent anything, i.e. something listened there."""
    answered = False

    async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter, from_pod: bool) -> None:
        nonlocal answered
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                answered = answered or from_pod
                dst.write(data)
                await dst.drain()

    tasks = [
        asyncio.create_task(copy(reader, pod_writer, from_pod=False)),
        asyncio.create_task(copy(pod_reader, writer, from_pod=True)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return answered


# -- the health check activity -------------------------------------------------------------------


class PortForwardingHealthChecker:
    """`health_check` for a worker outside the cluster: an endpoint that names a Service is checked
    through a port-forward opened for this check; any other endpoint is checked as it is."""

    def __init__(self, checker: McpHealthChecker, forwarder: ServicePortForwarder) -> None:
        self._checker = checker
        self._forwarder = forwarder

    @activity.defn(name="health_check")
    async def health_check(self, req: HealthCheckRequest) -> McpHealthResult:
        address = self._forwarder.address_of(req.endpoint)
        if address is None:
            return await self._checker.health_check(req)
        started = time.monotonic()
        try:
            async with self._forwarder.forward(address) as tunnel:
                activity.heartbeat({"step": tunnel.describe()})
                remaining = max(req.deadline_seconds - (time.monotonic() - started), 1.0)
                try:
                    return await self._checker.health_check(
                        req.model_copy(
                            update={"endpoint": tunnel.url, "deadline_seconds": remaining}
                        )
                    )
                except ApplicationError as err:
                    raise _through_tunnel(err, req.endpoint, tunnel) from None
        except PortForwardError as exc:
            raise ApplicationError(
                f"port-forward for the health check of {req.endpoint} failed: {exc.reason}",
                {"endpoint": req.endpoint, "service": address.describe},
                type=KubernetesFailure.PORT_FORWARD_FAILED,
                non_retryable=exc.permanent,
            ) from None


def _through_tunnel(err: ApplicationError, endpoint: str, tunnel: Tunnel) -> ApplicationError:
    """The checker's failure, told in the Service's terms: which pod the forward reached and what
    the pod side said. A forward that never carried a connection is the failure itself."""
    details = err.details[0] if err.details and isinstance(err.details[0], dict) else {}
    pod_errors = "; ".join(tunnel.errors)
    details = {
        **details,
        "endpoint": endpoint,
        "port_forward": tunnel.describe(),
        "port_forward_errors": tunnel.errors,
    }
    message = err.message.replace(tunnel.url, f"{endpoint} ({tunnel.describe()})")
    if tunnel.forwarded == 0 and tunnel.errors:
        return ApplicationError(
            f"port-forward for the health check of {endpoint} carried no connection: {pod_errors}",
            details,
            type=KubernetesFailure.PORT_FORWARD_FAILED,
            non_retryable=True,
        )
    if pod_errors:
        message += f"; port-forward: {pod_errors}"
    return ApplicationError(
        message,
        details,
        type=err.type or FailureType.HEALTH_CHECK_FAILED,
        non_retryable=err.non_retryable,
    )
