"""Helpers for the n8n tests: the n8n activities wired like the worker wires them, example exports
on webhook paths of their own, and a worker process that can be killed in the middle of a deploy."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import uuid
from pathlib import Path
from typing import Any

import httpx

from activities.gates import GateActivities
from activities.n8n_activities import (
    N8nApi,
    N8nDeployer,
    N8nValidator,
    N8nWebhookRegistry,
    n8n_activities,
    n8n_name,
)
from activities.transitions import TransitionRecorder
from state.n8n_queries import N8nQueries
from state.store import StateStore

N8N_EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "n8n"


def n8n_worker_activities(
    store: StateStore, queries: N8nQueries | None, api: N8nApi | None
) -> list[object]:
    """What the worker registers for n8n lifecycles: the store activities every lifecycle calls
    through `workflows.lifecycle.Lifecycle` (transitions, dependents) plus the n8n ones."""
    recorder, gates = TransitionRecorder(store), GateActivities(store)
    return [
        recorder.register_resource,
        recorder.record_transition,
        gates.record_requirement,
        gates.link_dependencies,
        gates.list_dependents,
        *n8n_activities(N8nValidator(), N8nWebhookRegistry(queries), N8nDeployer(api)),
    ]


def webhook_export(path: str | None = None, name: str = "Hello webhook") -> tuple[str, str]:
    """The hello-webhook example on a webhook path of its own (tests share one n8n)."""
    doc: dict[str, Any] = copy.deepcopy(
        json.loads((N8N_EXAMPLES / "hello-webhook.json").read_text())
    )
    path = path or f"t-{uuid.uuid4().hex[:10]}"
    doc["name"] = name
    doc["nodes"][0]["parameters"]["path"] = path
    return json.dumps(doc), path


async def ours_in_n8n(api: N8nApi, name: str, resource_id: str) -> list[dict[str, Any]]:
    """Every n8n workflow that carries our resource's name (there must never be two)."""
    return await api.find_by_name(n8n_name(name, resource_id))


# -- a worker process to kill in the middle of a deploy -------------------------------------------


class _HangAfterCreate(N8nApi):
    """Creates the workflow in n8n, says so through a marker file, then never returns: the moment
    a worker dies after n8n accepted the create and before Temporal heard about it."""

    def __init__(self, http: httpx.AsyncClient, marker: Path) -> None:
        super().__init__(http)
        self._marker = marker

    async def create_workflow(self, body: dict[str, Any]) -> dict[str, Any]:
        created = await super().create_workflow(body)
        self._marker.write_text(str(created["id"]))
        await asyncio.sleep(3600)
        return created


async def _crashing_worker() -> None:
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    from state.postgres import PostgresStore
    from tests.helpers import running_worker
    from workflows.n8n_lifecycle import N8nLifecycleWorkflow

    env = os.environ
    client = await Client.connect(
        env["RSM_TEMPORAL_ADDRESS"], data_converter=pydantic_data_converter
    )
    store = await PostgresStore.connect(env["RSM_DATABASE_URL"], max_size=2)
    queries = await N8nQueries.connect(env["RSM_DATABASE_URL"])
    http = httpx.AsyncClient(
        base_url=env["RSM_N8N_URL"], headers={"X-N8N-API-KEY": env["RSM_N8N_API_KEY"]}
    )
    api = _HangAfterCreate(http, Path(env["RSM_TEST_MARKER"]))
    activities = n8n_worker_activities(store, queries, api)
    async with running_worker(
        client, env["RSM_TASK_QUEUE"], activities, workflows=[N8nLifecycleWorkflow]
    ):
        Path(env["RSM_TEST_MARKER"] + ".ready").touch()
        await asyncio.sleep(3600)


def crashing_worker_main() -> None:
    """Entry point of the subprocess the durability test starts and SIGKILLs."""
    asyncio.run(_crashing_worker())


# -- credentials in the test n8n ------------------------------------------------------------------


async def create_credential(base_url: str, api_key: str, name: str, type_: str) -> str:
    """Create a credential through n8n's public API (what a person does in the UI); its id."""
    async with httpx.AsyncClient(
        base_url=base_url, headers={"X-N8N-API-KEY": api_key}, timeout=30
    ) as http:
        response = await http.post(
            "/api/v1/credentials",
            json={"name": name, "type": type_, "data": {"name": "X-Token", "value": "t0ken"}},
        )
        assert response.status_code == 200, response.text
        return str(response.json()["id"])


async def delete_credential(base_url: str, api_key: str, credential_id: str) -> None:
    async with httpx.AsyncClient(
        base_url=base_url, headers={"X-N8N-API-KEY": api_key}, timeout=30
    ) as http:
        await http.delete(f"/api/v1/credentials/{credential_id}")


def credential_export(name: str, path: str) -> str:
    """The notify-with-credential example on its own path, referencing a credential by `name`."""
    doc = json.loads((N8N_EXAMPLES / "notify-with-credential.json").read_text())
    doc["nodes"][0]["parameters"]["path"] = path
    doc["nodes"][1]["credentials"]["httpHeaderAuth"]["name"] = name
    return json.dumps(doc)
