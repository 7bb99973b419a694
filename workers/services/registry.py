"""A throwaway container registry: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1.

Its config file, storage and log live in one folder of the caller's; it listens on 127.0.0.1 only,
on a port the caller gives, and is stopped by the PID it was started with. The Docker engine treats
registries on 127.0.0.0/8 as insecure, so it pushes over plain HTTP without any engine setting.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from workers.services.process import ServiceError, read_pid, spawn, stop_pid, wait_until

REGISTRY_BINARY = "docker-registry"


def registry_binary() -> str | None:
    return shutil.which(REGISTRY_BINARY)


class LocalRegistry:
    def __init__(self, state_dir: Path, port: int, read_only: bool = False) -> None:
        self.state_dir = state_dir
        self.port = port
        # Distribution's maintenance mode: pulls work, every push is refused (HTTP 405).
        self.read_only = read_only
        self.config_file = state_dir / "config.yml"
        self.pid_file = state_dir / "registry.pid"
        self.log = state_dir / "registry.log"

    @property
    def address(self) -> str:
        """What RSM_REGISTRY names: host:port, no scheme."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def _config(self) -> str:
        # JSON is YAML: no YAML writer needed. Health checks of the storage driver and the
        # debug server are off (the latter would listen on another port).
        return json.dumps(
            {
                "version": 0.1,
                "log": {"level": "warn", "accesslog": {"disabled": True}},
                "storage": {
                    "filesystem": {"rootdirectory": str(self.state_dir / "storage")},
                    "delete": {"enabled": True},
                    "maintenance": {"readonly": {"enabled": self.read_only}},
                },
                "http": {"addr": self.address},
            },
            indent=2,
        )

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v2/", timeout=1) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def start(self) -> str:
        binary = registry_binary()
        if binary is None:
            raise ServiceError(
                "docker-registry is not installed: apt-get install docker-registry "
                "(scripts/bootstrap.sh does)"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self._config())
        spawn([binary, "serve", str(self.config_file)], self.log, self.pid_file)
        wait_until(self.answers, 20, f"docker-registry on {self.address}", self.log)
        return self.address

    def running(self) -> bool:
        return read_pid(self.pid_file) is not None

    def stop(self) -> bool:
        return stop_pid(self.pid_file, timeout=10)

    def get(self, path: str) -> Any:
        """GET a registry API path (`/v2/...`) and return its JSON."""
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as response:
            return json.loads(response.read())

    def tags(self, repository: str) -> list[str]:
        return list(self.get(f"/v2/{repository}/tags/list").get("tags") or [])
