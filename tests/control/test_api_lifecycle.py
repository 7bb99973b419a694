"""The HTTP API driving real lifecycles (a worker with the real activities, Docker builds included),
and the `rsm api` entry point as a real process: register, approve, commands and bulk go through the
workflows, and every answer is checked against the database."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from control.api.app import create_app
from control.api.settings import ApiSettings
from control.client import LifecycleClient
from state.postgres import PostgresStore
from state.settings import RsmSettings
from tests.conftest import EXAMPLES, REPO
from tests.control.api_harness import Tokens, bearer
from tests.helpers import assert_eventually, running_worker, unique_id
from workers.images import PYTHON_MCP_IMAGE
from workers.services.process import free_port
from workers.worker import real_activities

UI = "http://127.0.0.1:8233"


@pytest.fixture(scope="module")
def tokens() -> Tokens:
    return Tokens.new()


@pytest.fixture
def settings(task_queue: str) -> RsmSettings:
    return RsmSettings(task_queue=task_queue, temporal_ui_url_override=UI)


def detail(response: httpx.Response) -> str:
    body: dict[str, Any] = response.json()
    return str(body["detail"])


# -- through real lifecycles -----------------------------------------------------------------


@pytest.fixture
async def lifecycle_api(
    client: Client,
    store: PostgresStore,
    settings: RsmSettings,
    tokens: Tokens,
    task_queue: str,
    docker_engine: object,
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with a worker running the real activities (Docker builds) on the test's queue."""
    worker_settings = settings.model_copy(update={"mcp_base_image": PYTHON_MCP_IMAGE})
    async with running_worker(client, task_queue, real_activities(store, worker_settings).all()):
        app = create_app(
            settings,
            store,
            LifecycleClient(client, settings),
            api_settings=ApiSettings(command_timeout_seconds=30, source_roots=[EXAMPLES]),
            access=tokens.access(),
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api", timeout=60
        ) as http:
            yield http


async def state_of(api: httpx.AsyncClient, rid: str) -> str:
    r = await api.get(f"/api/resources/{rid}")
    assert r.status_code == 200, r.text
    return str(r.json()["resource"]["current_state"])


async def reaches(api: httpx.AsyncClient, rid: str, state: str, timeout: float = 120) -> None:
    async def check() -> None:
        assert await state_of(api, rid) == state

    await assert_eventually(check, timeout=timeout, interval=0.25)


async def test_register_approve_command_and_bulk_through_the_workflows(
    lifecycle_api: httpx.AsyncClient, tokens: Tokens
) -> None:
    api = lifecycle_api
    rid = unique_id("t-api")
    body = {
        "type": "mcp_server",
        "path": str(EXAMPLES / "mcp/toolbox"),
        "id": rid,
        "owner_team": "core",
        "policy": {"approval_required": True},
    }
    r = await api.post("/api/resources", json=body)
    assert r.status_code == 401
    r = await api.post("/api/resources", json=body, headers=bearer(tokens.approver))
    assert r.status_code == 403 and detail(r) == "alice (approver) may not register/mcp_server"
    r = await api.post(
        "/api/resources", json={**body, "path": "/etc"}, headers=bearer(tokens.admin)
    )
    assert r.status_code == 403 and r.json()["error"] == "path_not_allowed"

    r = await api.post("/api/resources", json=body, headers=bearer(tokens.admin))
    assert r.status_code == 202, r.text
    assert r.json()["workflow_id"] == f"resource/mcp_server/{rid}"
    assert r.json()["actor"] == "root"
    again = await api.post("/api/resources", json=body, headers=bearer(tokens.admin))
    assert again.status_code == 202  # registering twice is harmless

    await reaches(api, rid, "available")
    r = await api.get("/api/resources/awaiting-action", headers=bearer(tokens.approver))
    [item] = [i for i in r.json()["items"] if i["resource_id"] == rid]
    assert "approval:approval" in item["waiting_on"]
    assert item["actions"] == ["approve", "reject"]

    # An operator's token cannot approve; the registrant may not approve their own resource.
    r = await api.post(f"/api/resources/{rid}/approve", json={}, headers=bearer(tokens.operator))
    assert r.status_code == 403 and detail(r) == "olga (operator) may not approve/mcp_server"
    r = await api.post(f"/api/resources/{rid}/approve", json={}, headers=bearer(tokens.admin))
    assert r.status_code == 409 and r.json()["error"] == "refused"
    assert "root registered this resource" in detail(r)
    assert await state_of(api, rid) == "available"

    key = unique_id("key")
    approve = {"reason": "looks right"}
    headers = {**bearer(tokens.approver), "Idempotency-Key": key}
    r = await api.post(f"/api/resources/{rid}/approve", json=approve, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] is True and r.json()["actor"] == "alice"
    # The retried request replays the answer instead of approving twice (which would be refused).
    r2 = await api.post(f"/api/resources/{rid}/approve", json=approve, headers=headers)
    assert r2.status_code == 200 and r2.json() == r.json()
    await reaches(api, rid, "active")
    history = (await api.get(f"/api/resources/{rid}/transitions")).json()["items"]
    assert (history[-1]["to_state"], history[-1]["actor"]) == ("active", "alice")

    # A manual transition the operator may move, and one the machine refuses.
    r = await api.post(
        f"/api/resources/{rid}/transition",
        json={"to_state": "registered", "reason": "nope"},
        headers=bearer(tokens.admin),
    )
    assert r.status_code == 409
    r = await api.post(
        f"/api/resources/{rid}/commands/deactivate",
        json={"reason": "maintenance"},
        headers=bearer(tokens.operator),
    )
    assert r.status_code == 200, r.text
    await reaches(api, rid, "inactive")
    r = await api.post(
        f"/api/resources/{rid}/commands/deactivate", json={}, headers=bearer(tokens.operator)
    )
    assert r.status_code == 409 and r.json()["error"] == "refused"

    # Bulk: archive every inactive MCP server of this id set; each result is reported.
    r = await api.post(
        "/api/bulk/commands/archive",
        json={
            "filter": {"type": "mcp_server", "state": "inactive", "resource_ids": [rid]},
            "reason": "cleanup",
        },
        headers=bearer(tokens.operator),
    )
    assert r.status_code == 200, r.text
    result = r.json()
    assert (result["matched"], result["accepted"]) == (1, 1)
    [item] = result["items"]
    assert (item["resource_id"], item["outcome"], item["state_before"]) == (
        rid,
        "accepted",
        "inactive",
    )
    await reaches(api, rid, "archived")
    r = await api.post(
        f"/api/resources/{rid}/commands/archive", json={}, headers=bearer(tokens.operator)
    )
    assert r.status_code == 409


# -- the `rsm api` entry point ---------------------------------------------------------------


async def test_the_api_command_serves_the_api_and_the_page(
    temporal_env: WorkflowEnvironment, pg_dsn: str, tokens: Tokens
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "RSM_DATABASE_URL": pg_dsn,
        "RSM_TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "RSM_API_TOKENS": f"alice:approver:{tokens.approver}",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import typer; from control.api.serve import api_command; typer.run(api_command)",
        "--port",
        str(port),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:

            async def up() -> None:
                try:
                    r = await http.get("/api/health")
                except httpx.TransportError as exc:
                    raise AssertionError(str(exc)) from None
                assert r.status_code == 200, r.text

            await assert_eventually(up, timeout=30, interval=0.2)
            assert (await http.get("/api/health")).json() == {"database": "ok", "temporal": "ok"}
            page = await http.get("/", follow_redirects=True)
            assert page.status_code == 200 and "<title>rsm · Resources</title>" in page.text
            assert (await http.get("/page/app.js")).status_code == 200
            r = await http.post("/api/resources/x/approve", json={})
            assert r.status_code == 401  # anonymous POST refused
            r = await http.get("/api/me", headers=bearer(tokens.approver))
            assert r.json()["actor"] == "alice"
            assert "paths" in (await http.get("/openapi.json")).json()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)


async def test_a_broken_access_file_is_named_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "access.yaml"
    bad.write_text("tokens:\n  - {actor: bob, role: wizard, token: 0123456789abcdef}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import typer; from control.api.serve import api_command; typer.run(api_command)",
        "--auth-file",
        str(bad),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert f"error: access file {bad}" in err.decode()
    assert "wizard" in err.decode() and "Traceback" not in err.decode()
