"""A Docker engine to build and run on: the one that answers, or dockerd started by us.

Without `--bridge=none --iptables=false` the default bridge is broken on these machines (DESIGN §9);
containers then run with host networking.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import docker

from workers.services.process import ServiceError, read_pid, spawn, stop_pid, wait_until


def engine_answers(base_url: str | None = None) -> bool:
    try:
        client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


class DockerEngine:
    def __init__(self, state_dir: Path) -> None:
        self.pid_file = state_dir / "pids" / "dockerd.pid"
        self.log = state_dir / "logs" / "dockerd.log"

    def started_by_us(self) -> bool:
        return read_pid(self.pid_file) is not None

    def start(self) -> bool:
        """Make sure an engine answers; True if we had to start dockerd."""
        if engine_answers():
            return False
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise ServiceError(
                "no Docker engine answers and dockerd is missing: apt-get install docker.io"
            )
        spawn([dockerd, "--bridge=none", "--iptables=false"], self.log, self.pid_file)
        wait_until(engine_answers, 60, "dockerd", self.log)
        return True

    def stop(self) -> bool:
        return stop_pid(self.pid_file, timeout=30)
