"""The local Docker runtime for teams: N containers per team, on host networking, bound to 127.0.0.1.

Every container carries the labels `rsm.resource_id`, `rsm.replica`, `rsm.version` and `rsm.port`,
so the runtime's truth is the engine itself: a deploy replaces whatever the team ran before (a deploy
retried after a worker crash still leaves exactly N containers), a scale keeps the running instances
of the current version and only adds or removes the difference, and the endpoints of kept instances
are read back from their labels.

`team_health` aggregates the instances: a team is healthy when every instance is running (and has
been for `settle_seconds`, so a crash at start-up is not mistaken for health) and, when the manifest
names a health path, answers HTTP 200 on it. An instance that exited fails the check at once; the
others are given until the deadline. The failure is a non-retryable `TeamUnhealthy` whose message
names each failing instance, its container and why.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import docker
import httpx
from docker.models.containers import Container
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.docker_runtime import free_port
from state.errors import FailureType
from state.models import StopRuntimeRequest
from state.team_models import (
    PORT_LABEL,
    REPLICA_LABEL,
    RESOURCE_LABEL,
    TEAM_UNHEALTHY,
    VERSION_LABEL,
    InstanceHealth,
    TeamDeployment,
    TeamDeployRequest,
    TeamHealth,
    TeamHealthRequest,
    TeamInstance,
)

RUNTIME_NAME = "docker"
_FRACTION = re.compile(r"\.(\d{6})\d*")


def _deploy_failed(message: str, **details: Any) -> ApplicationError:
    return ApplicationError(message, details, type=FailureType.DEPLOY_FAILED, non_retryable=True)


def _started_at(state: dict[str, Any]) -> datetime | None:
    # The engine reports nanoseconds ("...:05.123456789Z"); datetime takes microseconds.
    raw = str(state.get("StartedAt") or "")
    if not raw or raw.startswith("0001-"):
        return None
    try:
        return datetime.fromisoformat(_FRACTION.sub(r".\1", raw).replace("Z", "+00:00"))
    except ValueError:
        return None


class TeamDockerRuntime:
    def __init__(
        self,
        client: docker.DockerClient,
        host: str = "127.0.0.1",
        settle_seconds: float = 1.0,
        poll_interval: float = 0.25,
        http_timeout: float = 2.0,
    ) -> None:
        self._client = client
        self._host = host
        self._settle_seconds = settle_seconds
        self._poll_interval = poll_interval
        self._http_timeout = http_timeout

    # -- the engine's view of a team ----------------------------------------------------------

    def _containers_of(self, resource_id: str) -> list[Container]:
        return list(
            self._client.containers.list(
                all=True, filters={"label": f"{RESOURCE_LABEL}={resource_id}"}
            )
        )

    def _remove(self, containers: list[Container]) -> list[str]:
        removed = []
        for container in containers:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                continue  # already gone: removing is idempotent
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: a removal already in progress
                    raise
            removed.append(container.short_id)
        return removed

    def _require_image(self, image: str) -> None:
        try:
            self._client.images.get(image)
        except docker.errors.ImageNotFound:
            raise _deploy_failed(
                f"image {image} is not on this Docker engine", image=image
            ) from None

    def _instance(self, container: Container) -> TeamInstance:
        labels = container.labels
        return TeamInstance(
            replica=int(labels[REPLICA_LABEL]),
            container_id=container.id or "",
            name=container.name or "",
            endpoint=f"http://{self._host}:{labels[PORT_LABEL]}",
        )

    def _start(self, req: TeamDeployRequest, replica: int) -> TeamInstance:
        port = free_port(self._host)
        environment = {
            **req.env,
            req.port_env: str(port),
            "HOST": self._host,
            "PORT": str(port),
            "RSM_REPLICA": str(replica),
            "RSM_RESOURCE_ID": req.resource_id,
        }
        try:
            container = self._client.containers.run(
                req.image,
                detach=True,
                # A fresh suffix: a removal still in progress never blocks the name.
                name=f"rsm-{req.resource_id}-{replica}-{secrets.token_hex(3)}",
                network_mode="host",
                environment=environment,
                labels={
                    RESOURCE_LABEL: req.resource_id,
                    REPLICA_LABEL: str(replica),
                    VERSION_LABEL: req.version,
                    PORT_LABEL: str(port),
                },
            )
        except docker.errors.APIError as exc:
            raise _deploy_failed(
                f"docker refused to start replica {replica} of {req.image}: {exc.explanation}",
                replica=replica,
            ) from exc
        return self._instance(container)

    def _deployment(self, req: TeamDeployRequest, instances: list[TeamInstance]) -> TeamDeployment:
        return TeamDeployment(
            runtime=RUNTIME_NAME,
            image=req.image,
            version=req.version,
            instances=sorted(instances, key=lambda i: i.replica),
        )

    def _deploy(self, req: TeamDeployRequest) -> TeamDeployment:
        self._require_image(req.image)
        replaced = self._remove(self._containers_of(req.resource_id))
        instances = [self._start(req, replica) for replica in range(req.replicas)]
        activity.logger.info(
            "team %s: started %d instances (replaced %s)",
            req.resource_id,
            len(instances),
            replaced or "nothing",
        )
        return self._deployment(req, instances)

    def _scale(self, req: TeamDeployRequest) -> TeamDeployment:
        self._require_image(req.image)
        keep: dict[int, Container] = {}
        drop: list[Container] = []
        for container in self._containers_of(req.resource_id):
            labels = container.labels
            replica = int(labels.get(REPLICA_LABEL, "-1"))
            if (
                container.status == "running"
                and 0 <= replica < req.replicas
                and labels.get(VERSION_LABEL) == req.version
                and replica not in keep
            ):
                keep[replica] = container
            else:
                drop.append(container)  # beyond the new count, stopped, or of another version
        removed = self._remove(drop)
        started = [self._start(req, r) for r in range(req.replicas) if r not in keep]
        activity.logger.info(
            "team %s scaled to %d: kept %d, started %d, removed %s",
            req.resource_id,
            req.replicas,
            len(keep),
            len(started),
            removed or "nothing",
        )
        return self._deployment(req, [self._instance(c) for c in keep.values()] + started)

    # -- health ---------------------------------------------------------------------------------

    def _inspect(self, container_id: str) -> tuple[dict[str, Any], str] | None:
        try:
            container = self._client.containers.get(container_id)
        except docker.errors.NotFound:
            return None
        state = dict(container.attrs.get("State") or {})
        last = ""
        if state.get("Status") in {"exited", "dead"}:
            lines = container.logs(tail=20).decode(errors="replace").splitlines()
            last = next((line.strip() for line in reversed(lines) if line.strip()), "")
        return state, last

    async def _probe(
        self, http: httpx.AsyncClient, instance: TeamInstance, health_path: str | None
    ) -> tuple[InstanceHealth, bool]:
        """The instance's health and whether the verdict is final (an exited container)."""

        def result(healthy: bool, detail: str) -> InstanceHealth:
            return InstanceHealth(
                replica=instance.replica,
                container_id=instance.container_id,
                endpoint=instance.endpoint,
                healthy=healthy,
                detail=detail,
            )

        inspected = await asyncio.to_thread(self._inspect, instance.container_id)
        if inspected is None:
            return result(False, "is gone (container removed)"), True
        state, last_line = inspected
        status = state.get("Status")
        if status in {"exited", "dead"}:
            detail = f"exited with code {state.get('ExitCode')}" + (
                f": {last_line}" if last_line else ""
            )
            return result(False, detail), True
        if status != "running":
            return result(False, f"is {status}"), False
        started = _started_at(state)
        up = (datetime.now(UTC) - started).total_seconds() if started else 0.0
        if up < self._settle_seconds:
            return result(False, f"running for {up:.1f}s only"), False
        if health_path is None:
            return result(True, "running"), False
        url = instance.endpoint + health_path
        try:
            response = await http.get(url)
        except httpx.HTTPError as exc:
            return result(False, f"no answer on {health_path}: {type(exc).__name__}"), False
        if response.status_code != 200:
            return result(False, f"answers HTTP {response.status_code} on {health_path}"), False
        return result(True, f"answers HTTP 200 on {health_path}"), False

    # -- activities ------------------------------------------------------------------------------

    @activity.defn(name="deploy_team")
    async def deploy_team(self, req: TeamDeployRequest) -> TeamDeployment:
        activity.heartbeat({"step": f"starting {req.replicas} instances", "image": req.image})
        return await asyncio.to_thread(self._deploy, req)

    @activity.defn(name="scale_team")
    async def scale_team(self, req: TeamDeployRequest) -> TeamDeployment:
        activity.heartbeat({"step": f"scaling to {req.replicas} instances", "image": req.image})
        return await asyncio.to_thread(self._scale, req)

    @activity.defn(name="team_health")
    async def team_health(self, req: TeamHealthRequest) -> TeamHealth:
        started = time.monotonic()
        deadline = started + req.deadline_seconds
        async with httpx.AsyncClient(timeout=self._http_timeout) as http:
            while True:
                probes = await asyncio.gather(
                    *(self._probe(http, i, req.health_path) for i in req.deployment.instances)
                )
                health = TeamHealth(
                    instances=[p for p, _ in probes],
                    elapsed_seconds=round(time.monotonic() - started, 3),
                )
                activity.heartbeat({"step": health.summary()})
                if health.healthy:
                    return health
                # An exited instance fails the team now, and is the one named; otherwise the
                # deadline names every instance that is not healthy yet.
                failed = [p for p, is_final in probes if is_final]
                if failed or time.monotonic() + self._poll_interval > deadline:
                    raise ApplicationError(
                        health.summary(failed or None),
                        health.model_dump(mode="json"),
                        type=TEAM_UNHEALTHY,
                        non_retryable=True,
                    )
                await asyncio.sleep(self._poll_interval)

    @activity.defn(name="stop_team")
    async def stop_team(self, req: StopRuntimeRequest) -> list[str]:
        return await asyncio.to_thread(lambda: self._remove(self._containers_of(req.resource_id)))
