"""Schemathesis against the served OpenAPI: generated requests (valid and invalid) to every operation
must get no 5xx and only answers that conform to the schema (status codes, headers, bodies).

The API runs on a real uvicorn (its own thread and loop) over its own fresh database in the session's
Postgres cluster, so generated writes (bulk actions, webhooks) cannot touch other tests' resources;
its task queue has no worker, and webhooks may only point at 127.0.0.1 and are deactivated at the end.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from temporalio.testing import WorkflowEnvironment

from control.api.app import openapi_schema
from control.api.settings import ApiSettings
from state.machines import ResourceState, ResourceType
from state.postgres import PostgresStore, apply_migrations
from state.settings import RsmSettings
from tests.control.api_harness import ThreadedApi, Tokens, seed

S = ResourceState
TOKENS = Tokens.new()


def _fresh_database(pg_dsn: str) -> str:
    name = f"rsm_schema_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    return pg_dsn.rsplit("/", 1)[0] + f"/{name}"


async def _prepare(dsn: str) -> None:
    await apply_migrations(dsn)
    store = await PostgresStore.connect(dsn, max_size=2)
    try:
        # A few resources in the states operations act on, none with a workflow behind it.
        await seed(
            store, ResourceType.MCP_SERVER, "schema-failed", [S.REGISTERED, S.BUILDING, S.FAILED]
        )
        await seed(store, ResourceType.N8N_WORKFLOW, "schema-registered", [S.REGISTERED])
        await seed(store, ResourceType.TEAM, "schema-team", [S.REGISTERED], owner_team="core")
    finally:
        await store.close()


async def _deactivate_webhooks(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("update public.webhook_subscriptions set active = false")


@pytest.fixture(scope="module")
def api_server(pg_dsn: str, temporal_env: WorkflowEnvironment) -> Iterator[ThreadedApi]:
    dsn = _fresh_database(pg_dsn)
    asyncio.run(_prepare(dsn))
    settings = RsmSettings(
        task_queue=f"tq-schema-{uuid.uuid4()}",
        temporal_address_override=temporal_env.client.service_client.config.target_host,
    )
    api = ApiSettings(command_timeout_seconds=3, webhook_allowed_hosts=["127.0.0.1"])
    with ThreadedApi(settings, api, TOKENS.access(), dsn) as server:
        yield server
    asyncio.run(_deactivate_webhooks(dsn))


# Loaded at import (schemathesis' lazy fixture loader does not work with pytest 9); the first test
# proves it is the document the server serves.
schema = schemathesis.openapi.from_dict(openapi_schema())
# The same schema with the admin's token configured for the bearer scheme, so schemathesis adds it to
# every request and still knows to try requests without it.
admin_schema = schemathesis.openapi.from_dict(
    openapi_schema(),
    config=SchemathesisConfig.from_dict(
        {"auth": {"openapi": {"HTTPBearer": {"bearer": TOKENS.admin}}}}
    ),
)


def test_the_served_schema_is_the_one_under_test(api_server: ThreadedApi) -> None:
    served = httpx.get(f"{api_server.url}/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == openapi_schema()


@admin_schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_operation_conforms_for_an_admin(case: Any, api_server: ThreadedApi) -> None:
    case.call_and_validate(base_url=api_server.url)


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_operation_conforms_anonymously(case: Any, api_server: ThreadedApi) -> None:
    case.call_and_validate(base_url=api_server.url)
