"""The local Docker runtime: one container per resource, on host networking, bound to 127.0.0.1.

Deploying replaces the resource's previous container (found by label), so a deploy retried after a
worker crash leaves exactly one container, and a redeploy never leaves the old version running. A
rollback (`keep_running`) keeps a container of the good version that is still running: a redeploy
whose build failed never touched it, and restarting it would drop its clients for nothing.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import docker
from docker.models.containers import Container
from temporalio import activity
from temporalio.exceptions import ApplicationError

from state.errors import FailureType
from state.models import DeploymentInfo, DeployRequest, StopRuntimeRequest

RESOURCE_LABEL = "rsm.resource_id"
RUNTIME_NAME = "docker"


def free_port(host: str = "127.0.0.1") -> int:
    # Another process may take the port before the container binds it; the health check then fails
    # with a named error and `retry` picks a new port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _deploy_failed(message: str, **details: Any) -> ApplicationError:
    return ApplicationError(message, details, type=FailureType.DEPLOY_FAILED, non_retryable=True)


class LocalDockerRuntime:
    def __init__(
        self, client: docker.DockerClient, host: str = "127.0.0.1", settle_seconds: float = 1.5
    ):
        self._client = client
        self._host = host
        # How long a fresh container must stay up before the deploy counts; a crash at start-up
        # is reported here with its logs rather than as a vague health-check timeout.
        self._settle_seconds = settle_seconds

    def _containers_of(self, resource_id: str) -> list[Container]:
        return list(
            self._client.containers.list(
                all=True, filters={"label": f"{RESOURCE_LABEL}={resource_id}"}
            )
        )

    def _remove_all(self, resource_id: str) -> list[str]:
        removed = []
        for container in self._containers_of(resource_id):
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                continue  # already gone: removing is idempotent
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: a removal already in progress
                    raise
            removed.append(container.short_id)
        return removed

    def _running_of_version(
        self, req: DeployRequest, image_id: str
    ) -> tuple[Container, int] | None:
        """The resource's running container of exactly this version and image, and its port."""
        for container in self._containers_of(req.resource_id):
            if (
                container.status != "running"
                or container.labels.get("rsm.version") != req.version
                or container.attrs.get("Image") != image_id
            ):
                continue
            env = dict(
                item.split("=", 1)
                for item in container.attrs["Config"].get("Env") or []
                if "=" in item
            )
            if env.get("PORT", "").isdigit():
                return container, int(env["PORT"])
        return None

    def _run(self, req: DeployRequest) -> DeploymentInfo:
        try:
            image = self._client.images.get(req.image)
        except docker.errors.ImageNotFound:
            raise _deploy_failed(
                f"image {req.image} is not on this Docker engine", image=req.image
            ) from None
        if req.keep_running and (running := self._running_of_version(req, image.id)):
            container, port = running
            others = [c for c in self._containers_of(req.resource_id) if c.id != container.id]
            for other in others:
                other.remove(force=True)
            activity.logger.info("kept %s running (version %s)", container.short_id, req.version)
            return self._info(req, container, port, kept=True)
        replaced = self._remove_all(req.resource_id)
        port = free_port(self._host)
        try:
            container = self._client.containers.run(
                req.image,
                detach=True,
                name=f"rsm-{req.resource_id}",
                network_mode="host",
                environment={
                    "HOST": self._host,
                    "PORT": str(port),
                    "RSM_RESOURCE_ID": req.resource_id,
                },
                labels={RESOURCE_LABEL: req.resource_id, "rsm.version": req.version},
            )
        except docker.errors.APIError as exc:
            raise _deploy_failed(f"docker refused to start {req.image}: {exc.explanation}") from exc
        deadline = time.monotonic() + self._settle_seconds
        while time.monotonic() < deadline:
            time.sleep(0.2)
            container.reload()
            if container.status in {"exited", "dead"}:
                state = container.attrs.get("State", {})
                logs = container.logs(tail=20).decode(errors="replace").splitlines()
                last = logs[-1] if logs else ""
                raise _deploy_failed(
                    f"container {container.short_id} exited with code {state.get('ExitCode')}"
                    + (f": {last}" if last else ""),
                    exit_code=state.get("ExitCode"),
                    log_tail=logs,
                    container=container.short_id,
                )
        activity.logger.info("deployed %s (replaced %s)", container.short_id, replaced or "nothing")
        return self._info(req, container, port)

    def _info(
        self, req: DeployRequest, container: Container, port: int, kept: bool = False
    ) -> DeploymentInfo:
        return DeploymentInfo(
            runtime=RUNTIME_NAME,
            runtime_ref=container.id or "",
            endpoint=f"http://{self._host}:{port}{req.mcp_path}",
            image=req.image,
            version=req.version,
            kept=kept,
        )

    @activity.defn(name="deploy")
    async def deploy(self, req: DeployRequest) -> DeploymentInfo:
        activity.heartbeat({"step": "starting container", "image": req.image})
        return await asyncio.to_thread(self._run, req)

    @activity.defn(name="stop_runtime")
    async def stop_runtime(self, req: StopRuntimeRequest) -> list[str]:
        return await asyncio.to_thread(self._remove_all, req.resource_id)
