"""A throwaway PostgreSQL cluster from Debian's postgresql-15 (DESIGN §6, §9).

`initdb` refuses root, so as root every server command runs as the `postgres` user. The cluster
listens on 127.0.0.1 only, trusts local connections (it is a development database) and is stopped
with `pg_ctl stop`, which signals the PID in its own postmaster.pid.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from workers.services.process import ServiceError, port_open, wait_until

PG_BIN_CANDIDATES = (Path("/usr/lib/postgresql/15/bin"), Path("/usr/lib/postgresql/16/bin"))


def pg_bin(tool: str) -> str:
    for directory in PG_BIN_CANDIDATES:
        if (directory / tool).exists():
            return str(directory / tool)
    found = shutil.which(tool)
    if found is None:
        raise ServiceError(f"{tool} not found: install postgresql-15 (scripts/bootstrap.sh does)")
    return found


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _postgres_can_use(path: Path) -> bool:
    if os.geteuid() != 0:
        return True
    probe = path if path.exists() else path.parent
    result = subprocess.run(
        _as_postgres(["test", "-x", str(probe)]), capture_output=True, check=False
    )
    return result.returncode == 0


class PostgresServer:
    def __init__(
        self, data_dir: Path, port: int, database: str = "rsm", durable: bool = True
    ) -> None:
        # Tests trade durability for speed; the dev stack keeps fsync so a crash loses nothing.
        self.durable = durable
        if not _postgres_can_use(data_dir.parent):
            # The postgres user cannot reach the chosen folder (e.g. under /root): keep the cluster
            # in a folder it can reach, named after the requested one so each checkout has its own.
            digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
            data_dir = Path("/var/lib/rsm") / f"pg-{digest}"
        self.data_dir = data_dir
        self.socket_dir = data_dir.parent / (data_dir.name + "-socket")
        self.port = port
        self.database = database
        self.log = data_dir.parent / (data_dir.name + ".log")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(_as_postgres(argv), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceError(
                f"{' '.join(argv[:2])} failed: {(result.stderr or result.stdout).strip()}"
            )
        return result

    def _chown(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")

    def running(self) -> bool:
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return False
        result = subprocess.run(
            _as_postgres([pg_bin("pg_ctl"), "status", "-D", str(self.data_dir)]),
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def start(self) -> str:
        """Start (or reuse) the cluster and make sure the database exists; returns the DSN."""
        if not (self.data_dir / "PG_VERSION").exists():
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            self._chown(self.data_dir)
            self._run(
                [
                    pg_bin("initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            )
        self._chown(self.socket_dir)
        if not self.running():
            if port_open(self.port):
                raise ServiceError(
                    f"port {self.port} is taken by another process: set RSM_PG_PORT to a free port"
                )
            self.log.touch(exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(self.log, "postgres", "postgres")
            options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir}"
            if not self.durable:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            self._run(
                [
                    pg_bin("pg_ctl"),
                    "start",
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "30",
                ]
            )
        wait_until(
            lambda: port_open(self.port), 30, f"PostgreSQL on 127.0.0.1:{self.port}", self.log
        )
        exists = self._run(
            [
                pg_bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-tAc",
                f"select 1 from pg_database where datname = '{self.database}'",
            ]
        )
        if exists.stdout.strip() != "1":
            self._run(
                [
                    pg_bin("createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                    self.database,
                ]
            )
        return self.dsn

    def stop(self) -> bool:
        if not self.running():
            return False
        self._run([pg_bin("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w"])
        return True

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        self.log.unlink(missing_ok=True)
