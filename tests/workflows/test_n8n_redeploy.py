"""Redeploys of an n8n workflow on real components (Temporal dev server, Postgres, n8n 2.8.4).

A new export version updates the same n8n workflow in place; a broken export fails validation while
the old version keeps answering; a version n8n refuses is rolled back to the last good one by
itself and refused afterwards; a redeploy without a readable export is refused at once, from the
update and from `rsm command ... redeploy --path`. The saved histories replay (patch `n8n-redeploy`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Replayer

from activities.n8n_activities import EXPORT_SIZE_LIMIT, N8nApi, N8nValidator, deploy_body
from control.cli_n8n import n8n_status, start_n8n_lifecycle
from control.client import CommandRefused, LifecycleClient
from state.machines import ResourceState, ResourceType
from state.models import ApprovalPolicy, LifecycleStatus
from state.n8n_models import N8nFailureType, ReadN8nExportRequest
from state.n8n_queries import N8nQueries
from state.postgres import PostgresStore
from state.settings import RsmSettings
from tests.conftest import REPO
from tests.helpers import assert_eventually, running_worker, unique_id
from tests.n8n_helpers import (
    N8N_EXAMPLES,
    create_credential,
    credential_export,
    delete_credential,
    n8n_worker_activities,
    ours_in_n8n,
    webhook_export,
)
from tests.workflows.test_n8n_lifecycle import (
    FAST,
    HAPPY_WALK,
    HISTORIES,
    blocked_at_gate,
    call_webhook,
    history,
    row,
    save_history,
    settled,
    start,
)
from workers.services.n8n import N8nAccess
from workers.worker import sandbox_runner
from workflows.n8n_lifecycle import N8nLifecycleWorkflow
from workflows.n8n_redeploy import PATCH_REDEPLOY

# One n8n per session, whichever module asks first (a plugin, not a per-module import).
pytest_plugins = ["tests.n8n_fixtures"]

S = ResourceState
N8N = ResourceType.N8N_WORKFLOW
REDEPLOY_WALK = [
    (S.ACTIVE, S.VALIDATING),
    (S.VALIDATING, S.VALIDATED),
    (S.VALIDATED, S.DEPLOYING),
    (S.DEPLOYING, S.DEPLOYED),
    (S.DEPLOYED, S.ACTIVE),
]
REDEPLOY_HISTORIES = ("n8n_redeployed_archived", "n8n_redeploy_rolled_back_archived")


@pytest.fixture
async def lc(
    client: Client,
    store: PostgresStore,
    n8n_queries: N8nQueries,
    n8n_api: N8nApi,
    task_queue: str,
) -> AsyncIterator[LifecycleClient]:
    activities = n8n_worker_activities(store, n8n_queries, n8n_api)
    async with running_worker(client, task_queue, activities, workflows=[N8nLifecycleWorkflow]):
        yield LifecycleClient(client, RsmSettings(task_queue=task_queue))


def version_of(text: str) -> str:
    """The version `rsm register workflow` and the read_n8n_export activity give a file."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def greeting_export(path: str, greeting: str) -> str:
    """The hello-webhook example on `path`, answering with `greeting`."""
    doc = json.loads(webhook_export(path)[0])
    respond = doc["nodes"][1]["parameters"]
    respond["responseBody"] = respond["responseBody"].replace("hello from rsm", greeting)
    return json.dumps(doc, indent=2)


def write(tmp_path: Path, name: str, text: str) -> tuple[Path, str]:
    file = tmp_path / name
    file.write_text(text)
    return file, version_of(text)


async def active_at(
    lc: LifecycleClient, handle: WorkflowHandle[Any, Any], version: str, **expected: Any
) -> LifecycleStatus:
    """Waits until the lifecycle is active with `version` (and the other status fields given)."""
    return await reached(lc, handle, S.ACTIVE, version, **expected)


async def reached(
    lc: LifecycleClient,
    handle: WorkflowHandle[Any, Any],
    state: S,
    version: str,
    **expected: Any,
) -> LifecycleStatus:
    """Waits until the lifecycle rests in `state` with `version` (and the status fields given):
    a redeploy is answered as it starts, so the state right after it is still the old one."""

    async def check() -> LifecycleStatus:
        status = await lc.status(handle)
        assert status.state is state and status.version == version, status
        for field, value in expected.items():
            assert getattr(status, field) == value, (field, status)
        return status

    return await assert_eventually(check, timeout=90, interval=0.2)


async def greeting(access: N8nAccess, path: str) -> str:
    answer = await call_webhook(access, path)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["greeting"])


async def deploy_v1(
    lc: LifecycleClient, store: PostgresStore, rid: str, path: str
) -> tuple[WorkflowHandle[Any, Any], str, str]:
    """The first version, active: its handle, version and n8n id."""
    text = greeting_export(path, "v1")
    handle = await start(lc, text, rid)
    status = await settled(lc, handle)
    assert status.state is S.ACTIVE, status.failure_reason
    n8n_id = row(await history(store, rid), S.DEPLOYED).metadata["n8n_workflow_id"]
    return handle, version_of(text), n8n_id


async def archive(lc: LifecycleClient, handle: WorkflowHandle[Any, Any]) -> None:
    await lc.command(handle, "archive", actor="test")
    assert (await asyncio.wait_for(handle.result(), 60)).final_state is S.ARCHIVED


async def test_a_new_version_updates_the_same_n8n_workflow_in_place(
    lc: LifecycleClient,
    store: PostgresStore,
    n8n_api: N8nApi,
    n8n_access: N8nAccess,
    tmp_path: Path,
) -> None:
    rid, path = unique_id("t-n8n-redeploy"), f"t-{unique_id('hook')}"
    handle, v1, n8n_id = await deploy_v1(lc, store, rid, path)
    assert await greeting(n8n_access, path) == "v1"

    export, v2 = write(tmp_path, "v2.json", greeting_export(path, "v2 says hello"))
    result = await lc.run_command(
        N8N, rid, "redeploy", actor="dora", reason="new greeting", context_path=str(export)
    )
    assert result.accepted and result.message == f"redeploy of version {v2} started"
    await active_at(lc, handle, v2, last_good_version=v2, bad_versions=[])

    # The same n8n workflow answers with the new version; there is still exactly one of it.
    assert await greeting(n8n_access, path) == "v2 says hello"
    [ours] = await ours_in_n8n(n8n_api, "Hello webhook", rid)
    assert ours["id"] == n8n_id and ours["active"] is True
    assert (await n8n_status(handle)).n8n_workflow_id == n8n_id

    records = await history(store, rid)
    assert [(r.from_state, r.to_state) for r in records] == HAPPY_WALK + REDEPLOY_WALK
    redeploy = records[len(HAPPY_WALK) :]
    assert all(r.metadata["version"] == v2 for r in redeploy), [r.metadata for r in redeploy]
    assert all(r.metadata["previous_version"] == v1 for r in redeploy)
    validating, _, deploying, deployed, active = redeploy
    assert (validating.actor, validating.reason) == (
        "dora",
        f"new greeting; version {v1} stays live until this one passes",
    )
    assert deploying.reason.endswith(f"version {v2} updates n8n workflow {n8n_id} in place")
    assert deployed.metadata["n8n_workflow_id"] == n8n_id
    assert deployed.metadata["created"] is False
    assert active.reason.startswith(f"version {v2} is live: n8n reports it active")
    await archive(lc, handle)
    await save_history(handle, "n8n_redeployed_archived")


async def test_a_broken_export_fails_validation_and_the_old_version_keeps_answering(
    lc: LifecycleClient,
    store: PostgresStore,
    n8n_api: N8nApi,
    n8n_access: N8nAccess,
    tmp_path: Path,
) -> None:
    rid, path = unique_id("t-n8n-redeploy-bad"), f"t-{unique_id('hook')}"
    handle, v1, n8n_id = await deploy_v1(lc, store, rid, path)
    before = await n8n_api.get_workflow(n8n_id)
    assert before is not None

    broken = N8N_EXAMPLES / "broken.json"
    bad = version_of(broken.read_text())
    await lc.run_command(N8N, rid, "redeploy", actor="dora", context_path=str(broken))
    status = await reached(lc, handle, S.FAILED_VALIDATION, bad)
    assert status.failure_reason is not None
    assert status.failure_reason.startswith(f"version {bad}: 8 problem(s)")
    assert status.failure_reason.endswith(f"version {v1} is still live in n8n workflow {n8n_id}")
    records = await history(store, rid)
    assert [(r.from_state, r.to_state) for r in records[len(HAPPY_WALK) :]] == [
        (S.ACTIVE, S.VALIDATING),
        (S.VALIDATING, S.FAILED_VALIDATION),
    ]
    failed = records[-1]
    assert len(failed.metadata["problems"]) == 8
    assert (failed.metadata["version"], failed.metadata["previous_version"]) == (bad, v1)
    assert len((await n8n_status(handle)).problems) == 8

    # n8n was not touched: the same saved version, still active, still answering as v1.
    after = await n8n_api.get_workflow(n8n_id)
    assert after is not None and after["active"] is True
    assert (after["versionId"], after["updatedAt"]) == (before["versionId"], before["updatedAt"])
    assert await greeting(n8n_access, path) == "v1"

    # A file that is not JSON at all: named as such, from failed_validation through registered.
    half, half_version = write(tmp_path, "half.json", '{"name": "cut off", "nodes": [')
    await lc.run_command(N8N, rid, "redeploy", actor="dora", context_path=str(half))

    async def named_json_problem() -> None:
        status = await lc.status(handle)
        assert status.state is S.FAILED_VALIDATION and status.version == half_version, status
        assert status.failure_reason and "json" in status.failure_reason
        assert status.failure_reason.endswith(
            f"version {v1} is still live in n8n workflow {n8n_id}"
        )

    await assert_eventually(named_json_problem, timeout=60, interval=0.2)
    assert [p.rule.value for p in (await n8n_status(handle)).problems] == ["json"]
    assert await greeting(n8n_access, path) == "v1"

    # A fixed export goes all the way from failed_validation, into the same n8n workflow.
    fixed, v2 = write(tmp_path, "v2.json", greeting_export(path, "fixed"))
    await lc.run_command(N8N, rid, "redeploy", actor="dora", context_path=str(fixed))
    await active_at(lc, handle, v2, last_good_version=v2)
    assert await greeting(n8n_access, path) == "fixed"
    walk = [(r.from_state, r.to_state) for r in (await history(store, rid))[-6:]]
    assert walk == [(S.FAILED_VALIDATION, S.REGISTERED), *HAPPY_WALK[2:]]
    assert [w["id"] for w in await ours_in_n8n(n8n_api, "Hello webhook", rid)] == [n8n_id]
    await archive(lc, handle)


async def test_a_version_n8n_refuses_rolls_back_to_the_last_good_one_and_is_refused_after(
    lc: LifecycleClient,
    store: PostgresStore,
    n8n_api: N8nApi,
    n8n_access: N8nAccess,
    tmp_path: Path,
) -> None:
    rid, path = unique_id("t-n8n-rollback"), f"t-{unique_id('hook')}"
    handle, v1, n8n_id = await deploy_v1(lc, store, rid, path)
    # A workflow someone made by hand in n8n holds another path: validation cannot know (it is
    # not one of ours), so the new version passes it, and n8n refuses the update that publishes it.
    taken = f"t-{unique_id('taken')}"
    foreign = await n8n_api.create_workflow(
        deploy_body(greeting_export(taken, "foreign"), f"hand-made {taken}")
    )
    await n8n_api.activate(foreign["id"])
    try:
        export, bad = write(tmp_path, "bad.json", greeting_export(taken, "never served"))
        result = await lc.run_command(N8N, rid, "redeploy", actor="dora", context_path=str(export))
        assert result.accepted
        await active_at(lc, handle, v1, last_good_version=v1, bad_versions=[bad])

        records = await history(store, rid)
        assert [(r.from_state, r.to_state) for r in records[len(HAPPY_WALK) :]] == [
            (S.ACTIVE, S.VALIDATING),
            (S.VALIDATING, S.VALIDATED),
            (S.VALIDATED, S.DEPLOYING),
            (S.DEPLOYING, S.FAILED),
            (S.FAILED, S.REGISTERED),
            *HAPPY_WALK[2:],
        ]
        failed, rolling_back = row(records, S.FAILED), row(records, S.REGISTERED)
        assert failed.reason == (
            f"version {bad}: n8n refused to update the workflow: "
            "There is a conflict with one of the webhooks."
        )
        assert failed.metadata["n8n_workflow_id"] == n8n_id
        assert (
            rolling_back.reason
            == f"rolling back to version {v1} after version {bad} failed: " + (failed.reason)
        )
        assert (rolling_back.metadata["rollback_to"], rolling_back.metadata["bad_version"]) == (
            v1,
            bad,
        )
        active = records[-1]
        assert active.reason.startswith(f"rolled back to version {v1}: n8n reports it active")
        assert row(records, S.DEPLOYED).metadata["n8n_workflow_id"] == n8n_id

        # The refused update had left n8n half-published; the rollback restored the old version.
        assert await greeting(n8n_access, path) == "v1"
        assert await greeting(n8n_access, taken) == "foreign"
        [ours] = await ours_in_n8n(n8n_api, "Hello webhook", rid)
        assert ours["id"] == n8n_id and ours["active"] is True

        # The bad version is refused from now on, named or found by reading the file again.
        count = len(records)
        with pytest.raises(CommandRefused, match=f"version {bad} failed before; give a newer one"):
            await lc.run_command(
                N8N, rid, "redeploy", actor="dora", context_path=str(export), version=bad
            )
        with pytest.raises(CommandRefused, match=f"version {bad} failed before; give a newer one"):
            await lc.run_command(N8N, rid, "redeploy", actor="dora", context_path=str(export))
        assert len(await history(store, rid)) == count
        assert (await lc.status(handle)).state is S.ACTIVE
        await archive(lc, handle)
        await save_history(handle, "n8n_redeploy_rolled_back_archived")
    finally:
        await n8n_api.delete(foreign["id"])


async def test_a_new_version_passes_the_gates_again_while_the_old_one_serves(
    lc: LifecycleClient,
    store: PostgresStore,
    n8n_api: N8nApi,
    n8n_access: N8nAccess,
    tmp_path: Path,
) -> None:
    rid, path = unique_id("t-n8n-redeploy-gated"), f"t-{unique_id('hook')}"
    policy = FAST.model_copy(update={"approval": ApprovalPolicy(required=True)})
    text = greeting_export(path, "v1")
    handle = await start_n8n_lifecycle(
        lc, text, source="test", name="Hello webhook", resource_id=rid, actor="alice", policy=policy
    )
    await blocked_at_gate(lc, handle, ["approval"])
    await lc.approve(N8N, rid, approver="bob")
    await active_at(lc, handle, version_of(text))
    n8n_id = row(await history(store, rid), S.DEPLOYED).metadata["n8n_workflow_id"]

    # The new export needs a credential n8n does not have yet, and the policy a new approval.
    cred_name = f"Notifier token {rid}"
    export, v2 = write(tmp_path, "v2.json", credential_export(cred_name, f"notify-{rid}"))
    await lc.run_command(N8N, rid, "redeploy", actor="alice", context_path=str(export))
    await blocked_at_gate(lc, handle, [f"credential:{cred_name}", "approval"])
    assert await greeting(n8n_access, path) == "v1"  # the old version serves meanwhile
    with pytest.raises(CommandRefused, match="alice registered this resource"):
        await lc.approve(N8N, rid, approver="alice")
    cred_id = await create_credential(
        n8n_access.base_url, n8n_access.api_key, cred_name, "httpHeaderAuth"
    )
    try:
        await lc.update_requirement(N8N, rid, cred_name, "satisfied", actor="dora")
        await blocked_at_gate(lc, handle, ["approval"])
        await lc.approve(N8N, rid, approver="bob", reason="new notifier")
        await active_at(lc, handle, v2, last_good_version=v2)
        deploying = row(await history(store, rid), S.DEPLOYING)
        assert deploying.actor == "bob" and deploying.metadata["version"] == v2
        assert [w["id"] for w in await ours_in_n8n(n8n_api, "Hello webhook", rid)] == [n8n_id]
        live = await n8n_api.get_workflow(n8n_id)
        assert live is not None and live["nodes"][0]["parameters"]["path"] == f"notify-{rid}"

        # A rejected version never reaches n8n; the reason says what still serves there.
        export, v3 = write(tmp_path, "v3.json", greeting_export(path, "v3"))
        await lc.run_command(N8N, rid, "redeploy", actor="alice", context_path=str(export))
        await blocked_at_gate(lc, handle, ["approval"])
        await lc.reject(N8N, rid, approver="bob", reason="not this one")
        status = await reached(lc, handle, S.FAILED, v3)
        assert status.failure_reason == (
            f"version {v3}: rejected by bob: not this one; "
            f"version {v2} is still live in n8n workflow {n8n_id}"
        )
        after = await n8n_api.get_workflow(n8n_id)
        assert after is not None and after["versionId"] == live["versionId"] and after["active"]

        # A retry asks for a new decision on the same version, then deploys it in place.
        await lc.run_command(N8N, rid, "retry", actor="alice")
        await blocked_at_gate(lc, handle, ["approval"])
        await lc.approve(N8N, rid, approver="bob", reason="fine after all")
        await active_at(lc, handle, v3, last_good_version=v3)
        assert await greeting(n8n_access, path) == "v3"
        assert row(await history(store, rid), S.ACTIVE).metadata["previous_version"] == v2
        await archive(lc, handle)
    finally:
        await delete_credential(n8n_access.base_url, n8n_access.api_key, cred_id)


async def test_a_redeploy_without_a_readable_export_is_refused_at_once(
    lc: LifecycleClient,
    store: PostgresStore,
    n8n_access: N8nAccess,
    tmp_path: Path,
) -> None:
    rid, path = unique_id("t-n8n-redeploy-refused"), f"t-{unique_id('hook')}"
    handle, _, _ = await deploy_v1(lc, store, rid, path)
    count = len(await history(store, rid))
    refusals = [
        ({}, "redeploy needs the new export: context_path"),
        ({"context_path": "exports/v2.json"}, "'exports/v2.json' is relative"),
        (
            {"context_path": str(tmp_path / "missing.json")},
            f"cannot read the export {tmp_path / 'missing.json'} on the worker: "
            "No such file or directory",
        ),
        (
            {"context_path": str(tmp_path)},
            f"cannot read the export {tmp_path} on the worker: it is not a file",
        ),
    ]
    for args, message in refusals:
        with pytest.raises(CommandRefused) as refused:
            await lc.run_command(N8N, rid, "redeploy", actor="dora", **args)
        assert message in str(refused.value)
    # The signal form cannot answer: the refusal is kept in the status.
    await lc.command(handle, "redeploy", actor="erin")

    async def kept() -> None:
        status = await lc.status(handle)
        assert status.refusals and "redeploy from erin: redeploy needs" in status.refusals[-1]

    await assert_eventually(kept, timeout=30)

    # An inactive workflow is activated first: the new version is validated before it goes live.
    await lc.run_command(N8N, rid, "deactivate", actor="dora")
    export, _ = write(tmp_path, "v2.json", greeting_export(path, "v2"))
    with pytest.raises(CommandRefused, match="inactive: activate it first"):
        await lc.run_command(N8N, rid, "redeploy", actor="dora", context_path=str(export))
    records = await history(store, rid)
    assert len(records) == count + 1 and records[-1].to_state is S.INACTIVE
    await lc.run_command(N8N, rid, "activate", actor="dora")
    await active_at(lc, handle, version_of(greeting_export(path, "v1")))
    assert await greeting(n8n_access, path) == "v1"
    await archive(lc, handle)


# -- `rsm command ID redeploy --path FILE.json` -------------------------------------------------


async def run_rsm(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        # The console entry point itself: it leaves through os._exit (sdk-python#300 aborts).
        "import sys; sys.argv[0] = 'rsm'; from workers.main import main; main()",
        *args,
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_rsm_command_redeploy_sends_the_export_file_as_an_absolute_path(
    lc: LifecycleClient,
    store: PostgresStore,
    n8n_access: N8nAccess,
    temporal_env: WorkflowEnvironment,
    pg_dsn: str,
    task_queue: str,
    tmp_path: Path,
) -> None:
    rid, path = unique_id("t-n8n-redeploy-cli"), f"t-{unique_id('hook')}"
    handle, _, _ = await deploy_v1(lc, store, rid, path)
    env = {
        **os.environ,
        "RSM_TASK_QUEUE": task_queue,
        "RSM_TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "RSM_DATABASE_URL": pg_dsn,
        "RSM_TEMPORAL_UI_URL": "http://127.0.0.1:8233",
    }
    _, v2 = write(tmp_path, "v2.json", greeting_export(path, "from the cli"))
    # A path relative to where the operator stands: the CLI resolves it for the worker.
    code, out, err = await run_rsm(
        env, tmp_path, "command", rid, "redeploy", "--path", "v2.json", "--actor", "cli-user"
    )
    assert code == 0, out + err
    assert f"{rid}: redeploy of version {v2} started" in out
    await active_at(lc, handle, v2)
    assert await greeting(n8n_access, path) == "from the cli"
    validating = row(await history(store, rid), S.VALIDATING)
    assert validating.actor == "cli-user"
    resolved = (tmp_path / "v2.json").resolve()
    assert validating.reason.startswith(f"redeploy of version {v2} from {resolved}")

    code, _, err = await run_rsm(env, tmp_path, "command", rid, "redeploy", "--path", "gone.json")
    assert code == 1 and "gone.json is not a file" in err and "Traceback" not in err
    code, _, err = await run_rsm(env, tmp_path, "command", rid, "redeploy")
    assert code == 1 and "refused: redeploy needs the new export" in err
    await archive(lc, handle)


# -- the export reader, and the saved histories --------------------------------------------------


def test_read_export_names_what_is_wrong_with_the_file(tmp_path: Path) -> None:
    reader = N8nValidator()
    env = ActivityEnvironment()
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"name": "caf\xe9"}')
    # A plain (threaded) activity: ActivityEnvironment runs it and returns its result.
    export = env.run(reader.read_n8n_export, ReadN8nExportRequest(path=str(latin)))
    # Read like `rsm register workflow` reads it: the same text, so the same version.
    assert export.workflow_json == '{"name": "caf\ufffd"}'
    assert export.version == version_of(export.workflow_json)
    assert export.size == len(latin.read_bytes())

    huge = tmp_path / "huge.json"
    huge.write_text(" " * (EXPORT_SIZE_LIMIT + 1))
    for path, message in [
        ("relative.json", "is relative"),
        (str(huge), f"is {EXPORT_SIZE_LIMIT + 1} bytes"),
        (str(tmp_path / "nope.json"), "No such file or directory"),
    ]:
        with pytest.raises(ApplicationError) as failed:
            env.run(reader.read_n8n_export, ReadN8nExportRequest(path=path))
        assert failed.value.type == N8nFailureType.EXPORT_UNREADABLE
        assert failed.value.non_retryable and message in failed.value.message


def patches(events: list[dict[str, Any]]) -> set[str]:
    """The patch ids recorded in a history's markers."""
    found = set()
    for event in events:
        marker = event.get("markerRecordedEventAttributes")
        if marker and marker.get("markerName") == "core_patch":
            [payload] = marker["details"]["patch-data"]["payloads"]
            found.add(json.loads(base64.b64decode(payload["data"]))["id"])
    return found


@pytest.mark.parametrize("name", REDEPLOY_HISTORIES)
async def test_saved_redeploy_history_replays_through_the_patched_path(name: str) -> None:
    text = (HISTORIES / f"{name}.json").read_text()
    events = json.loads(text)["events"]
    # The history took the new path: the patch marker and the export read are in it.
    assert PATCH_REDEPLOY in patches(events)
    scheduled = [
        e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
        for e in events
        if "activityTaskScheduledEventAttributes" in e
    ]
    assert "read_n8n_export" in scheduled
    workflow_id = events[0]["workflowExecutionStartedEventAttributes"].get("workflowId", name)
    replayer = Replayer(
        workflows=[N8nLifecycleWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=sandbox_runner(),
    )
    result = await replayer.replay_workflow(WorkflowHistory.from_json(workflow_id, text))
    assert result.replay_failure is None


def test_histories_before_the_patch_never_redeployed() -> None:
    """The older n8n histories replay the refusal path: none of them carries the new patch."""
    older = [p for p in HISTORIES.glob("*.json") if p.stem not in REDEPLOY_HISTORIES]
    assert older
    for path in older:
        assert PATCH_REDEPLOY not in patches(json.loads(path.read_text())["events"]), path
