"""The n8n lifecycle end to end on real components: Temporal dev server, Postgres and n8n 2.8.4.

Deploy path and webhook, deactivate/activate/archive, a deploy retried after a worker is killed
(still one workflow in n8n), the broken example ending in failed_validation with every problem,
webhook paths held by our other workflows, n8n's own refusal as the failure reason, deploy
inactive; and the gates: a credential requirement waits at `validated` until n8n has the credential,
approvals, failed requirements and rejections, and operator commands refused at once."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Replayer

from activities.n8n_activities import N8nApi, N8nDeployer, deploy_body
from control.cli_n8n import n8n_status, start_n8n_lifecycle
from control.client import CommandRefused, LifecycleClient
from state.machines import ResourceState, ResourceType
from state.models import (
    ApprovalPolicy,
    LifecyclePolicy,
    LifecycleStatus,
    RequirementSpec,
    TransitionRecord,
)
from state.n8n_models import N8nCredentialQuery, Rule
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
from workers.services.n8n import N8nAccess
from workers.services.process import free_port
from workers.worker import sandbox_runner
from workflows.n8n_lifecycle import N8nLifecycleWorkflow
from workflows.search_attributes import BLOCKED_ON

# One n8n per session, whichever module asks first (a plugin, not a per-module import).
pytest_plugins = ["tests.n8n_fixtures"]

S = ResourceState
N8N = ResourceType.N8N_WORKFLOW
HAPPY_WALK = [
    (None, S.CREATED),
    (S.CREATED, S.REGISTERED),
    (S.REGISTERED, S.VALIDATING),
    (S.VALIDATING, S.VALIDATED),
    (S.VALIDATED, S.DEPLOYING),
    (S.DEPLOYING, S.DEPLOYED),
    (S.DEPLOYED, S.ACTIVE),
]
FAST = LifecyclePolicy(health_deadline=timedelta(seconds=10))
# Kept apart from histories/*.json so they replay here against this workflow explicitly.
HISTORIES = Path(__file__).parent / "histories" / "n8n"


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


async def start(
    lc: LifecycleClient, text: str, rid: str, name: str = "Hello webhook", **kwargs: Any
) -> WorkflowHandle[Any, Any]:
    return await start_n8n_lifecycle(
        lc, text, source="test", name=name, resource_id=rid, policy=FAST, **kwargs
    )


async def settled(
    lc: LifecycleClient,
    handle: WorkflowHandle[Any, Any],
    states: frozenset[S] = frozenset({S.ACTIVE, S.FAILED, S.FAILED_VALIDATION, S.INACTIVE}),
    timeout: float = 90,
) -> LifecycleStatus:
    async def check() -> LifecycleStatus:
        status = await lc.status(handle)
        assert status.state in states, status
        return status

    return await assert_eventually(check, timeout=timeout, interval=0.2)


async def save_history(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """With RSM_RECORD_HISTORIES=1, keep this run's history for the replay test below."""
    if os.environ.get("RSM_RECORD_HISTORIES") == "1":
        HISTORIES.mkdir(parents=True, exist_ok=True)
        (HISTORIES / f"{name}.json").write_text((await handle.fetch_history()).to_json())


async def scheduled_steps(handle: WorkflowHandle[Any, Any]) -> list[tuple[str, str]]:
    """The activities the workflow scheduled, in order, each with what it wrote."""
    steps = []
    for event in (await handle.fetch_history()).events:
        if not event.HasField("activity_task_scheduled_event_attributes"):
            continue
        attrs = event.activity_task_scheduled_event_attributes
        arg = json.loads(attrs.input.payloads[0].data) if attrs.input.payloads else {}
        what = ""
        if attrs.activity_type.name == "record_requirement":
            what = f"{arg.get('name')}:{arg.get('status')}"
        elif attrs.activity_type.name == "record_transition":
            what = str(arg.get("to_state"))
        steps.append((attrs.activity_type.name, what))
    return steps


async def history(store: PostgresStore, rid: str) -> list[TransitionRecord]:
    return await store.list_transitions(rid)


def row(records: list[TransitionRecord], to_state: S) -> TransitionRecord:
    return [r for r in records if r.to_state is to_state][-1]


async def call_webhook(access: N8nAccess, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=access.base_url, timeout=10) as http:
        return await http.get(f"/webhook/{path}", params={"name": "rsm"})


async def test_webhook_workflow_deploys_answers_and_follows_commands(
    lc: LifecycleClient, store: PostgresStore, n8n_api: N8nApi, n8n_access: N8nAccess
) -> None:
    rid = unique_id("t-n8n")
    text, path = webhook_export()
    handle = await start(lc, text, rid)
    status = await settled(lc, handle)
    assert status.state is S.ACTIVE, status.failure_reason

    records = await history(store, rid)
    assert [(r.from_state, r.to_state) for r in records] == HAPPY_WALK
    validated, deployed = row(records, S.VALIDATED), row(records, S.DEPLOYED)
    assert validated.metadata["webhook_paths"] == [path]
    assert validated.metadata["trigger_nodes"] == ["Webhook"]
    n8n_id = deployed.metadata["n8n_workflow_id"]
    assert deployed.metadata["created"] is True
    assert deployed.metadata["webhook_urls"] == [f"{n8n_access.base_url}/webhook/{path}"]
    [ours] = await ours_in_n8n(n8n_api, "Hello webhook", rid)
    assert ours["id"] == n8n_id and ours["active"] is True
    assert (await n8n_status(handle)).n8n_workflow_id == n8n_id

    answer = await call_webhook(n8n_access, path)
    assert answer.status_code == 200
    assert answer.json() == {"greeting": "hello from rsm", "name": "rsm"}

    # Registering again is harmless: the running lifecycle is returned, nothing new is recorded.
    again = await start(lc, text, rid)
    assert again.result_run_id == handle.result_run_id
    assert len(await history(store, rid)) == len(records)

    await lc.command(handle, "deactivate", actor="dora", reason="maintenance")
    await settled(lc, handle, frozenset({S.INACTIVE}))
    assert (await n8n_api.get_workflow(n8n_id) or {}).get("active") is False
    assert (await call_webhook(n8n_access, path)).status_code == 404

    await lc.command(handle, "activate", actor="dora")
    await assert_eventually(lambda: _in_state(lc, handle, S.ACTIVE), timeout=60)
    assert (await call_webhook(n8n_access, path)).status_code == 200
    redeployed = row(await history(store, rid), S.DEPLOYED)
    assert redeployed.metadata["n8n_workflow_id"] == n8n_id
    assert redeployed.metadata["created"] is False
    assert len(await ours_in_n8n(n8n_api, "Hello webhook", rid)) == 1

    await lc.command(handle, "archive", actor="dora", reason="retired")
    result = await asyncio.wait_for(handle.result(), 60)
    assert result.final_state is S.ARCHIVED
    archived = row(await history(store, rid), S.ARCHIVED)
    assert archived.actor == "dora" and archived.metadata["deleted_n8n_workflow_id"] == n8n_id
    assert await n8n_api.get_workflow(n8n_id) is None
    assert await ours_in_n8n(n8n_api, "Hello webhook", rid) == []
    await save_history(handle, "n8n_active_deactivated_activated_archived")


async def _in_state(lc: LifecycleClient, handle: WorkflowHandle[Any, Any], state: S) -> None:
    status = await lc.status(handle)
    assert status.state is state, status


async def test_broken_example_fails_validation_listing_every_problem(
    lc: LifecycleClient, store: PostgresStore, n8n_api: N8nApi
) -> None:
    rid = unique_id("t-n8n-broken")
    text = (N8N_EXAMPLES / "broken.json").read_text()
    handle = await start(lc, text, rid, name="Broken in many ways")
    status = await settled(lc, handle)
    assert status.state is S.FAILED_VALIDATION
    assert status.failure_reason and status.failure_reason.startswith("8 problem(s)")

    failed = row(await history(store, rid), S.FAILED_VALIDATION)
    assert failed.metadata["error_type"] == "N8nValidationFailed"
    recorded = {(p["rule"], p["node"]) for p in failed.metadata["problems"]}
    assert recorded == {
        ("shape", "Half-written"),
        ("duplicate_node_name", "Shape"),
        ("unknown_connection_target", "Fetch items"),
        ("unknown_connection_source", "Deleted trigger"),
        ("plaintext_secret", "Fetch items"),
        ("unsupported_type_version", "Shape"),
        ("unknown_node_type", "Legacy step"),
        ("no_trigger", None),
    }
    assert failed.metadata["requirements"][0]["name"] == "Items API"
    queried = await n8n_status(handle)
    assert {p.rule for p in queried.problems} == {Rule(r) for r, _ in recorded}
    # Nothing reached n8n, and the plaintext secret reached neither the database nor Temporal.
    assert await ours_in_n8n(n8n_api, "Broken in many ways", rid) == []
    assert "3f9a7c1e" not in json.dumps(failed.metadata)
    assert (await store.get_resource(rid)).spec.get("workflow_json") is None  # type: ignore[union-attr]
    await lc.command(handle, "archive", actor="test")
    await asyncio.wait_for(handle.result(), 60)
    await save_history(handle, "n8n_failed_validation_archived")


async def blocked_at_gate(
    lc: LifecycleClient, handle: WorkflowHandle[Any, Any], blocked: list[str]
) -> LifecycleStatus:
    """Waits at `validated` on exactly `blocked`, in the query and the BlockedOn attribute."""

    async def check() -> LifecycleStatus:
        status = await lc.status(handle)
        assert status.state is S.VALIDATED and status.blocked_on == blocked, status
        assert await handle.query("get_blocked_on", result_type=list[str]) == blocked
        attrs = (await handle.describe()).typed_search_attributes
        assert list(attrs.get(BLOCKED_ON) or []) == blocked
        return status

    return await assert_eventually(check, timeout=60, interval=0.2)


async def test_credential_example_waits_at_validated_until_n8n_has_the_credential(
    lc: LifecycleClient, store: PostgresStore, n8n_access: N8nAccess
) -> None:
    rid = unique_id("t-n8n-cred")
    cred_name = f"Notifier token {rid}"
    handle = await start(lc, credential_export(cred_name, f"notify-{rid}"), rid, name="Notify")
    await blocked_at_gate(lc, handle, [f"credential:{cred_name}"])
    validated = row(await history(store, rid), S.VALIDATED)
    assert [
        (r["type"], r["credential_type"], r["name"]) for r in validated.metadata["requirements"]
    ] == [("credential", "httpHeaderAuth", cred_name)]
    assert "needs 1 credential(s)" in validated.reason
    [req] = await store.list_requirements(rid)
    assert (req.name, req.requirement_type, req.status) == (cred_name, "credential", "pending")
    assert req.details["credential_type"] == "httpHeaderAuth"

    # n8n has no such credential: the word of the operator is refused, the gate stays shut.
    await lc.update_requirement(N8N, rid, cred_name, "satisfied", actor="dora")

    async def refused() -> None:
        status = await lc.status(handle)
        assert status.refusals and "has no httpHeaderAuth credential" in status.refusals[-1]

    await assert_eventually(refused, timeout=30)
    await blocked_at_gate(lc, handle, [f"credential:{cred_name}"])
    assert [r.status for r in await store.list_requirements(rid)] == ["pending"]

    cred_id = await create_credential(
        n8n_access.base_url, n8n_access.api_key, cred_name, "httpHeaderAuth"
    )
    try:
        await lc.update_requirement(N8N, rid, cred_name, "satisfied", actor="dora")
        status = await settled(lc, handle)
        assert status.state is S.ACTIVE, status.failure_reason
        assert status.blocked_on == []
        [req] = await store.list_requirements(rid)
        assert req.status == "satisfied" and req.details["actor"] == "dora"
        assert f"is credential {cred_id}" in req.details["reason"]
        walk = [(r.from_state, r.to_state) for r in await history(store, rid)]
        assert walk == HAPPY_WALK
        assert list((await handle.describe()).typed_search_attributes.get(BLOCKED_ON) or []) == []
        await lc.run_command(N8N, rid, "archive", actor="test")
        assert (await asyncio.wait_for(handle.result(), 60)).final_state is S.ARCHIVED
    finally:
        await delete_credential(n8n_access.base_url, n8n_access.api_key, cred_id)


async def test_approval_gate_keeps_an_early_message_and_refuses_the_registrant(
    lc: LifecycleClient, store: PostgresStore
) -> None:
    rid = unique_id("t-n8n-appr")
    cred_name = f"Notifier token {rid}"
    policy = FAST.model_copy(update={"approval": ApprovalPolicy(required=True)})
    handle = await start_n8n_lifecycle(
        lc,
        credential_export(cred_name, f"notify-{rid}"),
        source="test",
        name="Notify",
        resource_id=rid,
        actor="alice",
        policy=policy,
    )
    # Sent before validation has even named the credential: kept, applied at the gate.
    await lc.update_requirement(N8N, rid, cred_name, "waived", actor="dora", reason="not needed")
    await blocked_at_gate(lc, handle, ["approval"])
    with pytest.raises(CommandRefused, match="alice registered this resource"):
        await lc.approve(N8N, rid, approver="alice")
    result = await lc.approve(N8N, rid, approver="bob", reason="looks right")
    assert result.accepted
    with pytest.raises(CommandRefused, match="already approved by bob"):
        await lc.approve(N8N, rid, approver="carol")
    status = await settled(lc, handle)
    assert status.state is S.ACTIVE, status.failure_reason
    assert status.approved_by == "bob"
    deploying = row(await history(store, rid), S.DEPLOYING)
    assert deploying.actor == "bob" and deploying.reason.startswith("looks right")
    reqs = {r.name: (r.requirement_type, r.status) for r in await store.list_requirements(rid)}
    assert reqs == {cred_name: ("credential", "waived"), "approval": ("approval", "satisfied")}
    await lc.run_command(N8N, rid, "archive", actor="test")
    await asyncio.wait_for(handle.result(), 60)
    await save_history(handle, "n8n_approved_archived")
    # The approval is mirrored before the gate is left, not after the deploy: the view never
    # shows it pending for an active resource (this read raced the flush before).
    steps = await scheduled_steps(handle)
    assert steps.index(("record_requirement", "approval:satisfied")) < steps.index(
        ("record_transition", "deploying")
    ), steps


async def test_a_failed_requirement_or_a_rejection_fails_the_workflow_naming_it(
    lc: LifecycleClient, store: PostgresStore
) -> None:
    policy = FAST.model_copy(
        update={
            "approval": ApprovalPolicy(required=True),
            "requirements": [RequirementSpec(name="review")],
        }
    )
    failed_rid, rejected_rid = unique_id("t-n8n-reqf"), unique_id("t-n8n-rej")
    handles = {}
    for rid in (failed_rid, rejected_rid):
        handles[rid] = await start_n8n_lifecycle(
            lc, webhook_export()[0], source="test", name="Gated", resource_id=rid, policy=policy
        )
        await blocked_at_gate(lc, handles[rid], ["other:review", "approval"])

    await lc.update_requirement(N8N, failed_rid, "review", "failed", actor="erin", reason="no")
    status = await settled(lc, handles[failed_rid])
    assert status.state is S.FAILED
    assert status.failure_reason == "requirement other:review failed: no"
    await lc.reject(N8N, rejected_rid, approver="bob", reason="not now")
    status = await settled(lc, handles[rejected_rid])
    assert status.failure_reason == "rejected by bob: not now"
    walk = [(r.from_state, r.to_state, r.actor) for r in await history(store, rejected_rid)]
    assert walk[-2:] == [(S.VALIDATED, S.DEPLOYING, "bob"), (S.DEPLOYING, S.FAILED, "bob")]
    for rid, h in handles.items():
        assert (await lc.status(h)).blocked_on == []
        await lc.run_command(N8N, rid, "archive", actor="test")
        await asyncio.wait_for(h.result(), 60)


async def test_commands_and_transitions_refuse_illegal_requests_at_once(
    lc: LifecycleClient, store: PostgresStore, n8n_api: N8nApi
) -> None:
    rid = unique_id("t-n8n-cmd")
    handle = await start(lc, webhook_export()[0], rid)
    assert (await settled(lc, handle)).state is S.ACTIVE
    refusals = {
        "retry": "retry needs a failed resource; this one is active",
        "activate": "only an inactive workflow can be activated",
        "scale": "scale is not supported",
        # Without the new export (tests/workflows/test_n8n_redeploy.py runs real redeploys).
        "redeploy": "redeploy needs the new export",
    }
    for name, message in refusals.items():
        with pytest.raises(CommandRefused, match=message):
            await lc.run_command(N8N, rid, name, actor="dora")
    with pytest.raises(CommandRefused, match="nothing awaits approval"):
        await lc.approve(N8N, rid, approver="bob")
    with pytest.raises(CommandRefused, match="illegal transition active -> deployed"):
        await lc.transition(N8N, rid, S.DEPLOYED, actor="dora", reason="why not")
    with pytest.raises(CommandRefused, match="validating is a step the lifecycle runs itself"):
        await lc.transition(N8N, rid, S.VALIDATING, actor="dora", reason="why not")
    with pytest.raises(CommandRefused, match="use the archive command"):
        await lc.transition(N8N, rid, S.ARCHIVED, actor="dora", reason="done")
    assert len(await history(store, rid)) == len(HAPPY_WALK)  # nothing recorded

    result = await lc.run_command(N8N, rid, "deactivate", actor="dora", reason="maintenance")
    assert (result.accepted, result.state) == (True, S.INACTIVE)
    n8n_id = row(await history(store, rid), S.DEPLOYED).metadata["n8n_workflow_id"]
    assert (await n8n_api.get_workflow(n8n_id) or {}).get("active") is False
    # By hand, active would be a record of something n8n does not do: activate does it.
    with pytest.raises(CommandRefused, match="the activate command activates it there"):
        await lc.transition(N8N, rid, S.ACTIVE, actor="dora", reason="manual")
    result = await lc.run_command(N8N, rid, "activate", actor="dora")
    assert result.accepted

    async def active_in_n8n() -> None:
        assert (await history(store, rid))[-1].to_state is S.ACTIVE
        assert (await n8n_api.get_workflow(n8n_id) or {}).get("active") is True

    await assert_eventually(active_in_n8n, timeout=60)
    result = await lc.run_command(N8N, rid, "archive", actor="dora")
    assert (result.accepted, result.state) == (True, S.ARCHIVED)
    assert (await asyncio.wait_for(handle.result(), 60)).final_state is S.ARCHIVED
    assert await n8n_api.get_workflow(n8n_id) is None


async def test_verify_credential_answers_from_n8n_or_says_it_could_not_ask(
    n8n_api: N8nApi, n8n_access: N8nAccess
) -> None:
    name = unique_id("Verify me")
    deployer = N8nDeployer(n8n_api)
    query = N8nCredentialQuery(credential_type="httpHeaderAuth", name=name, credential_id="nope")
    env = ActivityEnvironment()
    missing = await env.run(deployer.verify_n8n_credential, query)
    assert (missing.checked, missing.exists) == (True, False)
    cred_id = await create_credential(
        n8n_access.base_url, n8n_access.api_key, name, "httpHeaderAuth"
    )
    try:
        found = await env.run(deployer.verify_n8n_credential, query)
        assert (found.exists, found.credential_id, found.credential_name) == (True, cred_id, name)
        by_id = query.model_copy(update={"name": "other", "credential_id": cred_id})
        assert (await env.run(deployer.verify_n8n_credential, by_id)).exists
        other_type = query.model_copy(update={"credential_type": "httpBasicAuth"})
        assert not (await env.run(deployer.verify_n8n_credential, other_type)).exists
    finally:
        await delete_credential(n8n_access.base_url, n8n_access.api_key, cred_id)
    down = N8nApi.connect(f"http://127.0.0.1:{free_port()}", "no-key", timeout=5)
    try:
        unreachable = await env.run(N8nDeployer(down).verify_n8n_credential, query)
    finally:
        await down.close()
    assert unreachable.checked is False and "n8n did not answer" in unreachable.detail
    unset = await env.run(N8nDeployer(None).verify_n8n_credential, query)
    assert unset.checked is False


async def test_webhook_path_held_by_our_active_workflow_fails_validation_until_released(
    lc: LifecycleClient, store: PostgresStore
) -> None:
    first, second = unique_id("t-n8n-a"), unique_id("t-n8n-b")
    text, path = webhook_export()
    h1 = await start(lc, text, first)
    assert (await settled(lc, h1)).state is S.ACTIVE
    h2 = await start(lc, webhook_export(path, name="Copycat")[0], second, name="Copycat")
    status = await settled(lc, h2)
    assert status.state is S.FAILED_VALIDATION
    [problem] = row(await history(store, second), S.FAILED_VALIDATION).metadata["problems"]
    assert problem["rule"] == "webhook_path_taken" and first in problem["message"]

    # Archiving the holder releases the path; a retry of the second one then goes all the way.
    await lc.command(h1, "archive", actor="test")
    await asyncio.wait_for(h1.result(), 60)
    await lc.command(h2, "retry", actor="erin")
    await assert_eventually(lambda: _in_state(lc, h2, S.ACTIVE), timeout=60)
    retried = await history(store, second)
    assert (retried[-6].from_state, retried[-6].to_state, retried[-6].actor) == (
        S.FAILED_VALIDATION,
        S.REGISTERED,
        "erin",
    )
    await lc.command(h2, "archive", actor="test")
    await asyncio.wait_for(h2.result(), 60)


async def test_n8n_refusal_becomes_the_failure_reason(
    lc: LifecycleClient, store: PostgresStore, n8n_api: N8nApi
) -> None:
    # A workflow someone created in n8n by hand (not one of ours) already serves the path: our
    # validation cannot know, n8n refuses the activation, and its message is the reason.
    text, path = webhook_export()
    foreign = await n8n_api.create_workflow(deploy_body(text, f"hand-made {path}"))
    await n8n_api.activate(foreign["id"])
    try:
        rid = unique_id("t-n8n-clash")
        handle = await start(lc, text, rid)
        status = await settled(lc, handle)
        assert status.state is S.FAILED
        assert status.failure_reason == (
            "n8n refused to activate the workflow: There is a conflict with one of the webhooks."
        )
        failed = row(await history(store, rid), S.FAILED)
        assert failed.metadata["step"] == "deploy_n8n_workflow"
        assert failed.metadata["http_status"] == 400
        # The created (inactive) copy is remembered: a retry updates it instead of copying it.
        [ours] = await ours_in_n8n(n8n_api, "Hello webhook", rid)
        assert failed.metadata["n8n_workflow_id"] == ours["id"]
        assert (await n8n_status(handle)).n8n_workflow_id == ours["id"]
        await n8n_api.delete(foreign["id"])
        await lc.command(handle, "retry", actor="test")
        await assert_eventually(lambda: _in_state(lc, handle, S.ACTIVE), timeout=60)
        assert [w["id"] for w in await ours_in_n8n(n8n_api, "Hello webhook", rid)] == [ours["id"]]
        await lc.command(handle, "archive", actor="test")
        await asyncio.wait_for(handle.result(), 60)
        await save_history(handle, "n8n_refused_retried_archived")
    finally:
        await n8n_api.delete(foreign["id"])


async def test_deploy_inactive_without_a_trigger(
    lc: LifecycleClient, store: PostgresStore, n8n_api: N8nApi
) -> None:
    doc = json.loads(webhook_export()[0])
    doc["nodes"][0].update(type="n8n-nodes-base.manualTrigger", typeVersion=1, parameters={})
    doc["nodes"][0].pop("webhookId")
    doc["nodes"][1].update(type="n8n-nodes-base.noOp", typeVersion=1, parameters={})
    rid = unique_id("t-n8n-manual")
    handle = await start(lc, json.dumps(doc), rid, name="By hand", deploy_inactive=True)
    status = await settled(lc, handle)
    assert status.state is S.INACTIVE, status.failure_reason
    walk = [(r.from_state, r.to_state) for r in await history(store, rid)]
    assert walk[-2:] == [(S.DEPLOYING, S.DEPLOYED), (S.DEPLOYED, S.INACTIVE)]
    [ours] = await ours_in_n8n(n8n_api, "By hand", rid)
    assert ours["active"] is False
    # Without the flag the same export cannot pass validation.
    other = await start(lc, json.dumps(doc), unique_id("t-n8n-manual"), name="By hand")
    assert (await settled(lc, other)).state is S.FAILED_VALIDATION
    for h in (handle, other):
        await lc.command(h, "archive", actor="test")
        await asyncio.wait_for(h.result(), 60)
    assert await ours_in_n8n(n8n_api, "By hand", rid) == []


async def test_deploy_retried_after_a_worker_kill_leaves_exactly_one_workflow(
    client: Client,
    temporal_env: WorkflowEnvironment,
    store: PostgresStore,
    n8n_queries: N8nQueries,
    n8n_api: N8nApi,
    n8n_access: N8nAccess,
    pg_dsn: str,
    task_queue: str,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "created"
    env = {
        **os.environ,
        "RSM_TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "RSM_DATABASE_URL": pg_dsn,
        "RSM_TASK_QUEUE": task_queue,
        "RSM_N8N_URL": n8n_access.base_url,
        "RSM_N8N_API_KEY": n8n_access.api_key,
        "RSM_TEST_MARKER": str(marker),
    }
    doomed = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from tests.n8n_helpers import crashing_worker_main; crashing_worker_main()",
        cwd=REPO,
        env=env,
    )
    try:
        await assert_eventually(_exists(Path(f"{marker}.ready")), timeout=60)
        lc = LifecycleClient(client, RsmSettings(task_queue=task_queue))
        rid = unique_id("t-n8n-kill")
        text, path = webhook_export()
        handle = await start(lc, text, rid, step_heartbeat=timedelta(seconds=2))
        # The doomed worker created the workflow in n8n and hangs before reporting it.
        await assert_eventually(_exists(marker), timeout=60)
        created_id = marker.read_text()
        [orphan] = await ours_in_n8n(n8n_api, "Hello webhook", rid)
        assert orphan["id"] == created_id and orphan["active"] is False
    finally:
        doomed.kill()
        await doomed.wait()

    # A healthy worker takes over: the deploy times out on its heartbeat, is retried, finds the
    # workflow the dead worker created and updates it instead of creating another.
    activities = n8n_worker_activities(store, n8n_queries, n8n_api)
    async with running_worker(client, task_queue, activities, workflows=[N8nLifecycleWorkflow]):
        status = await settled(lc, handle)
        assert status.state is S.ACTIVE, status.failure_reason
        records = await history(store, rid)
        assert [(r.from_state, r.to_state) for r in records] == HAPPY_WALK
        deployed = row(records, S.DEPLOYED)
        assert deployed.metadata["n8n_workflow_id"] == created_id
        assert deployed.metadata["created"] is False
        [ours] = await ours_in_n8n(n8n_api, "Hello webhook", rid)
        assert ours["id"] == created_id and ours["active"] is True
        assert (await call_webhook(n8n_access, path)).status_code == 200
        await lc.command(handle, "archive", actor="test")
        await asyncio.wait_for(handle.result(), 60)


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_saved_history_replays_without_nondeterminism(path: Path) -> None:
    text = path.read_text()
    workflow_id = json.loads(text)["events"][0]["workflowExecutionStartedEventAttributes"].get(
        "workflowId", path.stem
    )
    replayer = Replayer(
        workflows=[N8nLifecycleWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=sandbox_runner(),
    )
    result = await replayer.replay_workflow(WorkflowHistory.from_json(workflow_id, text))
    assert result.replay_failure is None


def test_there_are_histories_to_replay() -> None:
    assert {p.stem for p in HISTORIES.glob("*.json")} >= {
        "n8n_active_deactivated_activated_archived",
        "n8n_failed_validation_archived",
        "n8n_refused_retried_archived",
    }


def _exists(path: Path) -> Any:
    async def check() -> None:
        assert path.exists(), f"{path} not written yet"

    return check
