"""Shared fixtures: real Postgres, a real Temporal dev server, a real Docker engine.

Each session starts its own throwaway Postgres cluster and Temporal dev server on free 127.0.0.1
ports (so tests never touch a running dev stack), and makes sure a Docker engine answers and the
local base images exist. Every test gets its own task queue and resource ids.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from state.postgres import PostgresStore, apply_migrations
from workers.images import ensure_base_images
from workers.services.docker_engine import DockerEngine
from workers.services.postgres import PostgresServer
from workers.services.process import free_port
from workers.services.temporal import temporal_cli
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="session")
def session_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="rsm-tests-"))
    path.chmod(0o755)  # the postgres user must reach its data folder inside
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_dsn(session_dir: Path) -> Iterator[str]:
    server = PostgresServer(session_dir / "pg", free_port(), durable=False)
    dsn = server.start()
    asyncio.run(apply_migrations(dsn))
    yield dsn
    server.destroy()


@pytest.fixture(scope="session")
async def store(pg_dsn: str) -> AsyncIterator[PostgresStore]:
    s = await PostgresStore.connect(pg_dsn, max_size=16)
    yield s
    await s.close()


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


@pytest.fixture
def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture(scope="session")
def docker_engine(session_dir: Path) -> Iterator[DockerEngine]:
    engine = DockerEngine(session_dir)
    started = engine.start()
    api = docker.APIClient()
    try:
        ensure_base_images(api)
    finally:
        api.close()
    yield engine
    if started:
        engine.stop()


@pytest.fixture(scope="session")
def docker_client(docker_engine: DockerEngine) -> Iterator[docker.DockerClient]:
    c = docker.from_env()
    yield c
    c.close()


@pytest.fixture(scope="session")
def docker_api(docker_engine: DockerEngine) -> Iterator[docker.APIClient]:
    c = docker.APIClient()
    yield c
    c.close()


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"


def pytest_report_header(config: pytest.Config) -> str:
    return f"rsm tests: real Postgres, Temporal dev server and Docker (uid {os.geteuid()})"
