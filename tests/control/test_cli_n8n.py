"""`rsm register workflow FILE --wait` as a user runs it: a real process against the session's
Temporal, Postgres and n8n, with the worker in the test."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.n8n_activities import N8nApi
from control.client import LifecycleClient
from state.n8n_queries import N8nQueries
from state.postgres import PostgresStore
from state.settings import RsmSettings
from tests.conftest import REPO
from tests.helpers import running_worker, unique_id
from tests.n8n_helpers import N8N_EXAMPLES, n8n_worker_activities, ours_in_n8n, webhook_export
from workers.services.n8n import N8nAccess
from workflows.n8n_lifecycle import N8nLifecycleWorkflow

# One n8n per session, whichever module asks first (a plugin, not a per-module import).
pytest_plugins = ["tests.n8n_fixtures"]

# `rsm` with the n8n command registered, whether or not workers/main.py imports it yet.
# The console entry point itself: it leaves through os._exit (sdk-python#300 aborts at teardown).
RSM = (
    "import sys; sys.argv[0] = 'rsm'; import control.cli_n8n; from workers.main import main; main()"
)


@pytest.fixture
async def rsm(
    temporal_env: WorkflowEnvironment,
    client: Client,
    store: PostgresStore,
    n8n_queries: N8nQueries,
    n8n_api: N8nApi,
    pg_dsn: str,
    task_queue: str,
) -> AsyncIterator[dict[str, str]]:
    env = {
        **os.environ,
        "RSM_TASK_QUEUE": task_queue,
        "RSM_TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "RSM_DATABASE_URL": pg_dsn,
        "RSM_TEMPORAL_UI_URL": "http://127.0.0.1:8233",
    }
    activities = n8n_worker_activities(store, n8n_queries, n8n_api)
    async with running_worker(client, task_queue, activities, workflows=[N8nLifecycleWorkflow]):
        yield env


async def run_rsm(env: dict[str, str], *args: str, timeout: float = 120) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RSM,
        *args,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_register_workflow_wait_reaches_active_and_the_webhook_answers(
    rsm: dict[str, str],
    client: Client,
    task_queue: str,
    n8n_api: N8nApi,
    n8n_access: N8nAccess,
    tmp_path: Path,
) -> None:
    text, path = webhook_export()
    export = tmp_path / "hello-webhook.json"
    export.write_text(text)
    rid = unique_id("t-cli-n8n")
    code, out, err = await run_rsm(rsm, "register", "workflow", str(export), "--id", rid, "--wait")
    assert code == 0, out + err
    for state in ("registered", "validating", "validated", "deploying", "deployed", "active"):
        assert f"→ {state}" in out, (state, out)
    [ours] = await ours_in_n8n(n8n_api, "Hello webhook", rid)
    assert f"resource/n8n_workflow/{rid} is active as n8n workflow {ours['id']}" in out
    assert f"webhook: GET /webhook/{path}" in out
    async with httpx.AsyncClient(base_url=n8n_access.base_url, timeout=10) as http:
        answer = await http.get(f"/webhook/{path}", params={"name": "cli"})
    assert answer.status_code == 200 and answer.json()["name"] == "cli"

    lc = LifecycleClient(client, RsmSettings(task_queue=task_queue))
    handle = lc.handle("n8n_workflow", rid)
    await lc.command(handle, "archive", actor="test")
    await asyncio.wait_for(handle.result(), 60)


async def test_register_broken_workflow_wait_lists_every_problem(
    rsm: dict[str, str], client: Client, task_queue: str
) -> None:
    rid = unique_id("t-cli-n8n-broken")
    # Relative to where rsm runs (the repository); the history names the file absolutely.
    relative = (N8N_EXAMPLES / "broken.json").relative_to(REPO)
    code, out, err = await run_rsm(
        rsm, "register", "workflow", str(relative), "--id", rid, "--wait"
    )
    assert code == 1, out + err
    assert "→ failed_validation" in out
    assert f"validating {N8N_EXAMPLES / 'broken.json'} against n8n" in out
    assert f"resource/n8n_workflow/{rid} failed_validation: 8 problem(s)" in err
    problem_lines = [line for line in err.splitlines() if line.startswith("  - ")]
    assert len(problem_lines) == 8, err
    for rule in (
        "shape [Half-written]",
        "duplicate_node_name [Shape]",
        "unknown_connection_target [Fetch items]",
        "unknown_connection_source [Deleted trigger]",
        "plaintext_secret [Fetch items]",
        "unsupported_type_version [Shape]",
        "unknown_node_type [Legacy step]",
        "no_trigger:",
    ):
        assert any(rule in line for line in problem_lines), (rule, err)

    # Another export under the same id is not silently ignored: redeploy is the way.
    hello = N8N_EXAMPLES / "hello-webhook.json"
    code, out, err = await run_rsm(rsm, "register", "workflow", str(hello), "--id", rid)
    assert code == 1, out + err
    assert f"resource/n8n_workflow/{rid} is already registered and runs version" in err
    assert f"To deploy it: rsm command {rid} redeploy --path {hello}" in err


async def test_register_a_file_that_is_not_json_is_recorded_not_a_traceback(
    rsm: dict[str, str], tmp_path: Path, store: PostgresStore
) -> None:
    export = tmp_path / "half.json"
    export.write_text('{"name": "cut off", "nodes": [')
    rid = unique_id("t-cli-n8n-json")
    code, _, err = await run_rsm(rsm, "register", "workflow", str(export), "--id", rid, "--wait")
    assert code == 1 and "Traceback" not in err
    assert "- json: not valid JSON" in err
    resource = await store.get_resource(rid)
    assert resource is not None and resource.current_state.value == "failed_validation"
    assert resource.name == "half"

    code, _, err = await run_rsm(rsm, "register", "workflow", str(tmp_path / "missing.json"))
    assert code == 1 and "is not a file" in err and "Traceback" not in err
    assert json.loads(export.read_text() + "]}") is not None  # the file itself is left untouched
