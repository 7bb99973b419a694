"""`rsm dev up` / `rsm dev down`: the whole stack on one machine, started idempotently.

Postgres (migrations applied), the Temporal dev server (UI on :8233, search attributes registered,
persisting under the state folder), a Docker engine (dockerd started only when none answers), the
local base images and the worker. `down` stops exactly what `up` started, by PID.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import psycopg

from activities.docker_runtime import RESOURCE_LABEL
from state.postgres import apply_migrations
from state.settings import RsmSettings
from workers.images import PYTHON_MCP_IMAGE, ensure_base_images
from workers.services.docker_engine import DockerEngine
from workers.services.n8n import N8nServer
from workers.services.postgres import PostgresServer
from workers.services.process import ServiceError, port_open, read_pid, spawn, stop_pid, wait_until
from workers.services.temporal import TemporalDevServer


def use_n8n(asked: bool | None, configured: bool, running: bool) -> bool:
    """Whether `dev up` brings n8n up and gives the worker its address. Without --n8n, an n8n this
    stack already runs is kept in use: restarting the worker without it would fail every n8n
    resource (and their rollbacks) while n8n still answers."""
    if asked is not None:
        return asked
    return configured or running


# States in which a resource's containers should be running (deployed, at its gate, or active).
RUNNING_STATES = (
    "deployed",
    "health_checking",
    "available",
    "awaiting_dependencies",
    "scaling",
    "active",
)


def resume_containers(client: docker.DockerClient, running_ids: set[str]) -> list[str]:
    """Start again the stopped containers of resources the database says are running: an engine
    that `dev down` stopped took them down with it, and nothing else brings them back (the
    lifecycles rest, and their records would say `active` over a dead endpoint)."""
    resumed = []
    stopped = client.containers.list(
        all=True, filters={"label": RESOURCE_LABEL, "status": "exited"}
    )
    for container in stopped:
        if container.labels.get(RESOURCE_LABEL) in running_ids:
            container.start()
            resumed.append(container.name)
    return sorted(resumed)


def _running_resource_ids(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select resource_id from public.resource_states where current_state = any(%s)",
            (list(RUNNING_STATES),),
        ).fetchall()
    return {row[0] for row in rows}


@dataclass
class DevStack:
    settings: RsmSettings

    @property
    def postgres(self) -> PostgresServer:
        return PostgresServer(self.settings.state_dir / "postgres", self.settings.pg_port)

    @property
    def temporal(self) -> TemporalDevServer:
        s = self.settings
        return TemporalDevServer(
            s.state_dir, s.temporal_port, s.temporal_ui_port, s.temporal_namespace
        )

    @property
    def docker(self) -> DockerEngine:
        return DockerEngine(self.settings.state_dir)

    @property
    def n8n(self) -> N8nServer:
        return N8nServer(self.settings.state_dir, port=self.settings.n8n_port)

    @property
    def worker_pid_file(self) -> Path:
        return self.settings.state_dir / "pids" / "worker.pid"

    @property
    def worker_log(self) -> Path:
        return self.settings.state_dir / "logs" / "worker.log"

    def up(
        self,
        with_worker: bool = True,
        say: Callable[[str], object] = print,
        with_n8n: bool | None = None,
        with_api: bool = True,
    ) -> None:
        s = self.settings
        s.state_dir.mkdir(parents=True, exist_ok=True)
        started = self.docker.start()
        say(f"docker      {'started dockerd' if started else 'engine answers'}")
        dsn = self.postgres.start()
        applied = asyncio.run(apply_migrations(dsn))
        say(f"postgres    {dsn}  ({len(applied)} migration(s) applied)")
        self.temporal.start()
        say(f"temporal    {s.temporal_address}  UI {s.temporal_ui_url}")
        api = docker.APIClient()
        try:
            images = ensure_base_images(api)
        finally:
            api.close()
        say(f"images      {', '.join(images.values())}")
        client = docker.from_env()
        try:
            resumed = resume_containers(client, _running_resource_ids(dsn))
        finally:
            client.close()
        if resumed:
            say(f"containers  started again: {', '.join(resumed)}")
        n8n_env: dict[str, str] = {}
        if use_n8n(with_n8n, s.n8n, self.n8n.running()):
            access = self.n8n.start()
            say(f"n8n         {access.base_url}  (owner and API key in {self.n8n.access_file})")
            n8n_env = {"RSM_N8N_URL": access.base_url, "RSM_N8N_API_KEY": access.api_key}
        if with_worker:
            self.start_worker(n8n_env)
            say(f"worker      task queue {s.task_queue}  log {self.worker_log}")
        if with_api:
            port = self.start_api()
            say(
                f"api         http://127.0.0.1:{port}/  (Resources page; tokens in {self.api_tokens_file})"
            )

    @property
    def api_tokens_file(self) -> Path:
        return self.settings.state_dir / "api-tokens"

    def _api_tokens(self) -> str:
        """One token per role for local use, made once and kept (0600) under the state folder."""
        if not self.api_tokens_file.exists():
            tokens = ",".join(
                f"{actor}:{role}:{secrets.token_urlsafe(24)}"
                for actor, role in (
                    ("admin", "admin"),
                    ("dana", "approver"),
                    ("ops", "operator"),
                    ("viewer", "viewer"),
                )
            )
            self.api_tokens_file.write_text(tokens + "\n")
            self.api_tokens_file.chmod(0o600)
        return self.api_tokens_file.read_text().strip()

    def start_api(self) -> int:
        port = int(os.environ.get("RSM_API_PORT", "8000"))
        pid_file = self.settings.state_dir / "pids" / "api.pid"
        log = self.settings.state_dir / "logs" / "api.log"
        if read_pid(pid_file) is None:
            if port_open(port):
                raise ServiceError(f"port {port} is taken by another process: set RSM_API_PORT")
            env = {
                "RSM_DATABASE_URL": self.settings.database_url,
                "RSM_TEMPORAL_ADDRESS": self.settings.temporal_address,
                "RSM_API_PORT": str(port),
                "RSM_API_TOKENS": self._api_tokens(),
                "PYTHONUNBUFFERED": "1",
            }
            spawn([sys.executable, "-m", "workers.main", "api"], log, pid_file, env=env)
        wait_until(lambda: port_open(port), 60, f"the rsm API on 127.0.0.1:{port}", log)
        return port

    def start_worker(self, extra_env: dict[str, str] | None = None) -> None:
        env = {
            "RSM_MCP_BASE_IMAGE": self.settings.mcp_base_image or PYTHON_MCP_IMAGE,
            "RSM_DATABASE_URL": self.settings.database_url,
            "RSM_TEMPORAL_ADDRESS": self.settings.temporal_address,
            **(extra_env or {}),
        }
        # A worker started without n8n (or with another n8n) would fail n8n deploys: restart it
        # when what it was started with differs from what this `up` would give it.
        fingerprint = self.worker_pid_file.with_suffix(".env")
        wanted = hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()
        if read_pid(self.worker_pid_file) is not None:
            if fingerprint.exists() and fingerprint.read_text() == wanted:
                return
            stop_pid(self.worker_pid_file)
        self.worker_pid_file.parent.mkdir(parents=True, exist_ok=True)
        fingerprint.write_text(wanted)
        spawn(
            [sys.executable, "-m", "workers.main", "worker"],
            self.worker_log,
            self.worker_pid_file,
            env={**env, "PYTHONUNBUFFERED": "1"},
        )
        # The worker logs this line once it polls; fail early with its log if it dies first.
        wait_until(
            lambda: (
                read_pid(self.worker_pid_file) is not None
                and "polling" in self.worker_log.read_text(errors="replace")
            ),
            60,
            "the rsm worker",
            self.worker_log,
        )

    def down(self, say: Callable[[str], object] = print) -> None:
        api_pid = self.settings.state_dir / "pids" / "api.pid"
        say(f"api         {'stopped' if stop_pid(api_pid) else 'not running'}")
        say(f"worker      {'stopped' if stop_pid(self.worker_pid_file) else 'not running'}")
        say(f"n8n         {'stopped' if self.n8n.stop() else 'not running'}")
        say(f"temporal    {'stopped' if self.temporal.stop() else 'not running'}")
        say(f"postgres    {'stopped' if self.postgres.stop() else 'not running'}")
        if self.docker.started_by_us():
            self.docker.stop()
            say("docker      stopped the dockerd we started")
        else:
            say("docker      left alone (not started by rsm)")

    def status(self, say: Callable[[str], object] = print) -> None:
        def mark(ok: bool) -> str:
            return "up" if ok else "down"

        say(f"postgres    {mark(self.postgres.running())}  {self.postgres.dsn}")
        say(f"temporal    {mark(self.temporal.running())}  {self.settings.temporal_address}")
        say(f"n8n         {mark(self.n8n.running())}")
        say(f"worker      {mark(read_pid(self.worker_pid_file) is not None)}")
        api_up = read_pid(self.settings.state_dir / "pids" / "api.pid") is not None
        say(
            f"api         {mark(api_up)}  http://127.0.0.1:{os.environ.get('RSM_API_PORT', '8000')}/"
        )
        say(
            f"docker      {'started by rsm' if self.docker.started_by_us() else 'external or down'}"
        )
