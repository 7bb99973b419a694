"""Approval deadlines are durable timers: proven on the time-skipping test server, where an hour
passes in a moment once the workflow waits only on its timer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from control.client import LifecycleClient
from state.machines import ResourceState
from state.models import ApprovalPolicy, LifecyclePolicy
from state.postgres import PostgresStore
from state.settings import RsmSettings
from tests.conftest import EXAMPLES
from tests.helpers import assert_eventually, running_worker, unique_id
from workers.images import PYTHON_MCP_IMAGE
from workers.services.temporal import SEARCH_ATTRIBUTES, temporal_test_server
from workers.worker import real_activities

S = ResourceState


@pytest.fixture(scope="module")
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=temporal_test_server(),
    )
    # The test server takes no search attributes at start: without these every upsert would fail.
    kinds = {
        "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        "KeywordList": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
    }
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={name: kinds[kind] for name, kind in SEARCH_ATTRIBUTES.items()},
        )
    )
    yield env
    await env.shutdown()


async def at_gate(lc: LifecycleClient, handle: Any) -> None:
    status = await lc.status(handle)
    assert status.state is S.AVAILABLE and status.blocked_on == ["approval"], status


async def settled_as(lc: LifecycleClient, handle: Any, state: ResourceState) -> None:
    assert (await lc.status(handle)).state is state


@pytest.mark.parametrize(
    ("on_deadline", "final_state", "actor", "reason"),
    [
        ("fail", S.FAILED, "rsm", "no approval within 6:00:00"),
        ("approve", S.ACTIVE, "rsm", "no decision within 6:00:00: approved by policy"),
    ],
)
async def test_the_approval_deadline_fires_as_the_policy_says(
    skipping_env: WorkflowEnvironment,
    store: PostgresStore,
    task_queue: str,
    docker_engine: object,
    on_deadline: str,
    final_state: ResourceState,
    actor: str,
    reason: str,
) -> None:
    settings = RsmSettings(task_queue=task_queue, mcp_base_image=PYTHON_MCP_IMAGE)
    policy = LifecyclePolicy(
        approval=ApprovalPolicy(
            required=True, deadline=timedelta(hours=6), on_deadline=on_deadline
        ),  # type: ignore[arg-type]
    )
    client = skipping_env.client
    async with running_worker(client, task_queue, real_activities(store, settings).all()):
        lc = LifecycleClient(client, settings)
        rid = unique_id("t-deadline")
        handle = await lc.register_mcp(
            EXAMPLES / "mcp/toolbox", resource_id=rid, actor="alice", policy=policy
        )
        # The real build and deploy take their real seconds (time is not skipped meanwhile, so
        # no activity times out); once the resource waits at the gate, seven hours pass at once.
        await assert_eventually(lambda: at_gate(lc, handle), timeout=120, interval=0.2)
        await skipping_env.sleep(timedelta(hours=7))
        await assert_eventually(lambda: settled_as(lc, handle, final_state), timeout=30)
        last = (await store.list_transitions(rid))[-1]
        assert (last.from_state, last.to_state, last.actor, last.reason) == (
            S.AVAILABLE,
            final_state,
            actor,
            reason,
        )
        started = (await store.list_transitions(rid))[0].recorded_at
        assert last.recorded_at - started < timedelta(minutes=5), "wall clock, not workflow time"
        await lc.command(handle, "archive", actor="test")
        await handle.result()
