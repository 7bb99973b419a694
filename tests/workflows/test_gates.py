"""Gates on the real stack: approvals (signals and updates), requirements, blocked-on, manual
transitions, archive refused while dependents are active."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from control.client import CommandRefused, LifecycleClient
from state.commands import ApprovalDecision
from state.machines import ResourceState, ResourceType
from state.models import (
    ApprovalPolicy,
    LifecyclePolicy,
    RegisterResourceRequest,
    RequirementSpec,
    ResourceRef,
    TransitionRequest,
)
from state.postgres import PostgresStore
from state.settings import RsmSettings
from tests.conftest import EXAMPLES
from tests.helpers import assert_eventually, running_worker, unique_id
from tests.workflows.test_mcp_lifecycle import settled, walk
from workers.images import PYTHON_MCP_IMAGE
from workers.services.temporal import temporal_cli
from workers.worker import real_activities

S = ResourceState
TOOLBOX = EXAMPLES / "mcp/toolbox"
GATED = LifecyclePolicy(approval=ApprovalPolicy(required=True, approvers=["dana", "erin"]))


@pytest.fixture
async def lifecycle(
    client: Client, store: PostgresStore, task_queue: str, docker_engine: object
) -> AsyncIterator[LifecycleClient]:
    settings = RsmSettings(task_queue=task_queue, mcp_base_image=PYTHON_MCP_IMAGE)
    async with running_worker(client, task_queue, real_activities(store, settings).all()):
        yield LifecycleClient(client, settings)


async def at_gate(lc: LifecycleClient, handle: Any, blocked: list[str]) -> None:
    async def check() -> None:
        status = await lc.status(handle)
        assert status.state is S.AVAILABLE, status
        assert status.blocked_on == blocked

    await assert_eventually(check, timeout=120, interval=0.2)


async def archive(lc: LifecycleClient, handle: Any) -> None:
    await lc.command(handle, "archive", actor="test")
    await asyncio.wait_for(handle.result(), 60)


async def awaiting(pg_dsn: str, rid: str) -> list[str] | None:
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cur = await conn.execute(
            "select waiting_on from resources_awaiting_action where resource_id = %s", (rid,)
        )
        row = await cur.fetchone()
    return None if row is None else sorted(row[0])


async def test_an_approval_gate_refuses_the_wrong_people_and_opens_for_an_approver(
    lifecycle: LifecycleClient, store: PostgresStore, client: Client, pg_dsn: str
) -> None:
    rid = unique_id("t-gated")
    handle = await lifecycle.register_mcp(TOOLBOX, resource_id=rid, actor="alice", policy=GATED)
    await at_gate(lifecycle, handle, ["approval"])

    async def inbox() -> None:
        ids = [
            w.id
            async for w in client.list_workflows(
                f'BlockedOn="approval" AND WorkflowId="{handle.id}"'
            )
        ]
        assert ids == [handle.id]
        assert await awaiting(pg_dsn, rid) == ["approval:approval"]

    await assert_eventually(inbox)

    with pytest.raises(
        CommandRefused, match="alice registered this resource and may not approve it"
    ):
        await lifecycle.approve("mcp_server", rid, "alice", "mine")
    with pytest.raises(
        CommandRefused, match=r"bob may not approve this resource \(approvers: dana, erin\)"
    ):
        await lifecycle.approve("mcp_server", rid, "bob", "lgtm")
    # Nor can the gate be stepped over by recording active by hand.
    with pytest.raises(CommandRefused, match="waiting on approval: a manual transition does not"):
        await lifecycle.transition("mcp_server", rid, "active", actor="bob", reason="ship it")
    result = await lifecycle.approve("mcp_server", rid, "dana", "reviewed the tools")
    assert result.accepted and result.message == "approved by dana"
    with pytest.raises(CommandRefused, match="nothing awaits approval: already approved by dana"):
        await lifecycle.approve("mcp_server", rid, "erin", "me too")
    # A duplicate approval by signal is refused quietly and recorded nowhere.
    await handle.signal("approve", ApprovalDecision(approver="dana", reason="again"))

    status = await settled(lifecycle, handle)
    assert status.state is S.ACTIVE and status.approved_by == "dana"
    history = await store.list_transitions(rid)
    actives = [t for t in history if t.to_state is S.ACTIVE]
    assert [(t.actor, t.reason) for t in actives] == [("dana", "reviewed the tools")]

    async def cleared() -> None:
        assert (await lifecycle.status(handle)).refusals[-1].startswith("nothing awaits approval")
        assert await awaiting(pg_dsn, rid) is None
        ids = [
            w.id
            async for w in client.list_workflows(
                f'BlockedOn="approval" AND WorkflowId="{handle.id}"'
            )
        ]
        assert ids == []

    await assert_eventually(cleared)
    with pytest.raises(CommandRefused, match="nothing awaits approval"):
        await lifecycle.approve("mcp_server", rid, "erin", "late")
    await archive(lifecycle, handle)


async def test_an_approval_sent_before_the_gate_is_not_lost(
    lifecycle: LifecycleClient, store: PostgresStore
) -> None:
    rid = unique_id("t-early")
    handle = await lifecycle.register_mcp(TOOLBOX, resource_id=rid, actor="alice", policy=GATED)
    await handle.signal("approve", ApprovalDecision(approver="erin", reason="pre-approved"))
    status = await settled(lifecycle, handle)
    assert status.state is S.ACTIVE
    assert (await store.list_transitions(rid))[-1].actor == "erin"
    await archive(lifecycle, handle)


async def test_an_approval_from_the_temporal_cli_opens_the_gate(
    lifecycle: LifecycleClient, temporal_env: WorkflowEnvironment
) -> None:
    rid = unique_id("t-clisig")
    handle = await lifecycle.register_mcp(TOOLBOX, resource_id=rid, actor="alice", policy=GATED)
    await at_gate(lifecycle, handle, ["approval"])
    proc = await asyncio.create_subprocess_exec(
        temporal_cli(),
        "workflow",
        "signal",
        "--address",
        temporal_env.client.service_client.config.target_host,
        "--workflow-id",
        handle.id,
        "--name",
        "approve",
        "--input",
        '{"approver": "dana", "reason": "from the temporal CLI"}',
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err
    status = await settled(lifecycle, handle)
    assert status.state is S.ACTIVE and status.approved_by == "dana"
    await archive(lifecycle, handle)


async def test_a_rejection_fails_the_resource_naming_the_approver(
    lifecycle: LifecycleClient, store: PostgresStore
) -> None:
    rid = unique_id("t-reject")
    handle = await lifecycle.register_mcp(TOOLBOX, resource_id=rid, actor="alice", policy=GATED)
    await at_gate(lifecycle, handle, ["approval"])
    await lifecycle.reject("mcp_server", rid, "erin", "exposes a shell tool")
    status = await settled(lifecycle, handle)
    assert status.state is S.FAILED
    assert status.failure_reason == "rejected by erin: exposes a shell tool"
    last = (await store.list_transitions(rid))[-1]
    assert (last.from_state, last.to_state, last.actor) == (S.AVAILABLE, S.FAILED, "erin")
    await archive(lifecycle, handle)


async def test_pending_requirements_block_active_until_satisfied(
    lifecycle: LifecycleClient, pg_dsn: str, store: PostgresStore
) -> None:
    rid = unique_id("t-req")
    policy = LifecyclePolicy(
        requirements=[
            RequirementSpec(name="slack-token", requirement_type="credential"),
            RequirementSpec(name="security-review"),
        ]
    )
    handle = await lifecycle.register_mcp(TOOLBOX, resource_id=rid, actor="alice", policy=policy)
    await at_gate(lifecycle, handle, ["credential:slack-token", "other:security-review"])
    assert await awaiting(pg_dsn, rid) == ["credential:slack-token", "other:security-review"]

    await lifecycle.update_requirement("mcp_server", rid, "slack-token", "satisfied", actor="vault")
    await at_gate(lifecycle, handle, ["other:security-review"])
    assert (await lifecycle.status(handle)).state is S.AVAILABLE
    await lifecycle.update_requirement("mcp_server", rid, "security-review", "waived", actor="ciso")
    assert (await settled(lifecycle, handle)).state is S.ACTIVE
    rows = sorted(
        (r.name, r.requirement_type, r.status, r.details.get("actor"))
        for r in await store.list_requirements(rid)
    )
    # One row per requirement, of its own type, whatever type the update carried.
    assert rows == [
        ("security-review", "other", "waived", "ciso"),
        ("slack-token", "credential", "satisfied", "vault"),
    ]
    await archive(lifecycle, handle)


async def test_a_failed_requirement_fails_the_resource_naming_it(
    lifecycle: LifecycleClient, store: PostgresStore
) -> None:
    rid = unique_id("t-reqfail")
    policy = LifecyclePolicy(
        requirements=[RequirementSpec(name="db-password", requirement_type="credential")]
    )
    handle = await lifecycle.register_mcp(TOOLBOX, resource_id=rid, actor="alice", policy=policy)
    # Sent before the gate is reached: kept, then acted on.
    await lifecycle.update_requirement(
        "mcp_server", rid, "db-password", "failed", actor="vault", reason="revoked"
    )
    status = await settled(lifecycle, handle)
    assert status.state is S.FAILED
    assert status.failure_reason == "requirement credential:db-password failed: revoked"
    assert (await store.list_transitions(rid))[-1].actor == "vault"
    await archive(lifecycle, handle)


async def test_manual_transitions_are_checked_against_the_machine(
    lifecycle: LifecycleClient, store: PostgresStore
) -> None:
    rid = unique_id("t-manual")
    handle = await lifecycle.register_mcp(TOOLBOX, resource_id=rid, actor="alice")
    assert (await settled(lifecycle, handle)).state is S.ACTIVE
    with pytest.raises(CommandRefused, match="illegal transition active -> built for mcp_server"):
        await lifecycle.transition("mcp_server", rid, "built", actor="ops", reason="why not")
    with pytest.raises(CommandRefused, match="retry needs a failed resource; this one is active"):
        await lifecycle.run_command("mcp_server", rid, "retry", actor="ops")
    # active -> building is an arrow (a redeploy takes it), but by hand nothing would build.
    with pytest.raises(CommandRefused, match="building is a step the lifecycle runs itself"):
        await lifecycle.transition("mcp_server", rid, "building", actor="ops", reason="poke")
    # inactive is an arrow too, but by hand the container would keep serving: deactivate stops it.
    with pytest.raises(CommandRefused, match="the deactivate command stops it"):
        await lifecycle.transition("mcp_server", rid, "inactive", actor="ops", reason="pause")
    # A resting state that needs no step is the operator's to record.
    result = await lifecycle.transition(
        "mcp_server", rid, "failed", actor="ops", reason="answers wrong results"
    )
    assert result.accepted
    assert (await walk(store, rid))[-1] == (S.ACTIVE, S.FAILED)
    assert (await store.list_transitions(rid))[-1].metadata == {"manual": True}
    await archive(lifecycle, handle)


async def test_archive_is_refused_while_an_active_resource_depends_on_it(
    lifecycle: LifecycleClient, store: PostgresStore
) -> None:
    rid = unique_id("t-needed")
    handle = await lifecycle.register_mcp(TOOLBOX, resource_id=rid, actor="alice")
    assert (await settled(lifecycle, handle)).state is S.ACTIVE
    dependent = ResourceRef(resource_type=ResourceType.TEAM, resource_id=unique_id("t-team"))
    await store.register_resource(
        RegisterResourceRequest(
            ref=dependent, name="team", workflow_id=dependent.workflow_id, machine_version=1
        )
    )
    for state in (S.REGISTERED, S.BUILDING, S.BUILT, S.DEPLOYING, S.DEPLOYED, S.ACTIVE):
        await store.record_transition(
            TransitionRequest(
                ref=dependent, to_state=state, actor="test", idempotency_key=unique_id("k")
            )
        )
    await store.set_dependencies(
        dependent, [ResourceRef(resource_type=ResourceType.MCP_SERVER, resource_id=rid)]
    )

    with pytest.raises(
        CommandRefused, match=f"cannot archive: active dependents {dependent.workflow_id}"
    ):
        await lifecycle.run_command("mcp_server", rid, "archive", actor="ops")
    await store.record_transition(
        TransitionRequest(
            ref=dependent, to_state=S.ARCHIVED, actor="test", idempotency_key=unique_id("k")
        )
    )
    result = await lifecycle.run_command(
        "mcp_server", rid, "archive", actor="ops", reason="retired"
    )
    assert result.accepted
    assert (await asyncio.wait_for(handle.result(), 60)).final_state is S.ARCHIVED
