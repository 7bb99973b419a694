"""Webhook delivery against a real receiver on 127.0.0.1 that checks every signature, with the
subscriptions and the delivery record in the session's Postgres, and Temporal doing the retries."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from temporalio import workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.webhooks import WebhookDeliverer
from control.client import LifecycleClient
from state.machines import ResourceState, ResourceType
from state.models import ResourceRef
from state.postgres import PostgresStore
from state.queries import pool_of
from state.settings import RsmSettings
from state.webhook_models import (
    ATTEMPT_HEADER,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    DeliveryReport,
    SignatureError,
    TransitionEvent,
    WebhookFailureType,
    WebhookFilter,
    signature_header,
    verify_signature,
)
from state.webhook_store import WebhookStore
from tests.conftest import EXAMPLES
from tests.control.api_harness import served
from tests.helpers import assert_eventually, running_worker, unique_id
from workers.images import PYTHON_MCP_IMAGE
from workers.worker import real_activities


@dataclass
class Receiver:
    """Answers with the scripted statuses (then 200) and keeps what it got, signature checked."""

    secret: str
    url: str = ""
    statuses: list[int] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        try:
            verify_signature(self.secret, body, request.headers.get(SIGNATURE_HEADER))
            valid = True
        except SignatureError:
            valid = False
        status = self.statuses.pop(0) if self.statuses else 200
        self.received.append(
            {"valid": valid, "body": body, "headers": dict(request.headers), "status": status}
        )
        return Response(status_code=status if valid else 401)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(secret=secrets.token_urlsafe(24))
    app = Starlette(routes=[Route("/hook", rec.handle, methods=["POST"])])
    async with served(app) as base:  # type: ignore[arg-type]
        rec.url = f"{base}/hook"
        yield rec


@pytest.fixture
def hooks(store: PostgresStore) -> WebhookStore:
    return WebhookStore(pool_of(store))


@pytest.fixture
async def deliverer(hooks: WebhookStore) -> AsyncIterator[WebhookDeliverer]:
    async with httpx.AsyncClient() as http:
        yield WebhookDeliverer(hooks, http, timeout_seconds=5)


@pytest.fixture
async def subscriptions(hooks: WebhookStore) -> AsyncIterator[list[int]]:
    """Ids to deactivate after the test, so no later test's transitions reach a dead receiver."""
    created: list[int] = []
    yield created
    for sub_id in created:
        await hooks.deactivate(sub_id)


def event(
    resource_id: str, to_state: ResourceState = ResourceState.ACTIVE, **kw: Any
) -> TransitionEvent:
    return TransitionEvent(
        transition_id=kw.pop("transition_id", int(uuid.uuid4().int % 2**62)),
        ref=ResourceRef(resource_type=ResourceType.MCP_SERVER, resource_id=resource_id),
        owner_team=kw.pop("owner_team", "core"),
        from_state=ResourceState.AVAILABLE,
        to_state=to_state,
        actor="rsm",
        reason="healthy",
        metadata={"tools": ["add"]},
        recorded_at=kw.pop("recorded_at", datetime.now(UTC)),
        workflow_id=f"resource/mcp_server/{resource_id}",
        **kw,
    )


async def subscribe(
    hooks: WebhookStore, created: list[int], url: str, secret: str, flt: WebhookFilter
) -> int:
    sub = await hooks.create(url=url, secret=secret, event_filter=flt, description="", actor="t")
    created.append(sub.id)
    return sub.id


def test_signature_round_trip_and_refusals() -> None:
    body = b'{"a":1}'
    header = signature_header("s" * 20, body, timestamp=1_700_000_000)
    assert verify_signature("s" * 20, body, header, now=1_700_000_100) == 1_700_000_000
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature("s" * 20, b'{"a":2}', header, now=1_700_000_100)
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature("t" * 20, body, header, now=1_700_000_100)
    with pytest.raises(SignatureError, match="outside the 300s tolerance"):
        verify_signature("s" * 20, body, header, now=1_700_001_000)
    with pytest.raises(SignatureError, match="no X-RSM-Signature"):
        verify_signature("s" * 20, body, None)


async def test_without_a_postgres_store_the_activity_answers_at_once() -> None:
    e = event("r1")
    report = await ActivityEnvironment().run(WebhookDeliverer(None).deliver_transition_webhooks, e)
    assert report == DeliveryReport(transition_id=e.transition_id)


def test_filters_match_on_every_field_they_name() -> None:
    e = event("r1")
    assert WebhookFilter().matches(e)
    assert WebhookFilter(to_states=[ResourceState.ACTIVE], owner_teams=["core"]).matches(e)
    assert not WebhookFilter(to_states=[ResourceState.FAILED]).matches(e)
    assert not WebhookFilter(resource_types=[ResourceType.TEAM]).matches(e)
    assert not WebhookFilter(resource_ids=["other"]).matches(e)
    assert WebhookFilter(from_states=[ResourceState.AVAILABLE]).matches(e)


async def test_a_matching_subscription_gets_the_signed_event_once(
    receiver: Receiver,
    hooks: WebhookStore,
    deliverer: WebhookDeliverer,
    subscriptions: list[int],
) -> None:
    rid = unique_id("t-hook")
    hit = await subscribe(
        hooks, subscriptions, receiver.url, receiver.secret, WebhookFilter(resource_ids=[rid])
    )
    await subscribe(  # another resource's subscription: must not fire
        hooks, subscriptions, receiver.url, receiver.secret, WebhookFilter(resource_ids=["nope"])
    )
    e = event(rid, recorded_at=datetime.now(UTC) + timedelta(seconds=1))
    report = await ActivityEnvironment().run(deliverer.deliver_transition_webhooks, e)
    assert report == DeliveryReport(transition_id=e.transition_id, delivered=[hit])
    [got] = receiver.received
    assert got["valid"] and got["status"] == 200
    assert got["headers"][EVENT_ID_HEADER.lower()] == f"transition-{e.transition_id}"
    payload = httpx.Response(200, content=got["body"]).json()
    assert payload["type"] == "resource.transition"
    assert payload["resource"] == {
        "type": "mcp_server",
        "id": rid,
        "owner_team": "core",
        "workflow_id": f"resource/mcp_server/{rid}",
    }
    assert payload["transition"]["to_state"] == "active"
    assert payload["transition"]["metadata"] == {"tools": ["add"]}

    # A retried activity does not deliver twice.
    again = await ActivityEnvironment().run(deliverer.deliver_transition_webhooks, e)
    assert again.already_delivered == [hit] and again.delivered == []
    assert len(receiver.received) == 1
    [record] = await hooks.deliveries(subscription_id=hit)
    assert (record.status, record.response_status, record.transition_id) == (
        "delivered",
        200,
        e.transition_id,
    )


async def test_subscriptions_newer_than_the_transition_do_not_receive_it(
    receiver: Receiver,
    hooks: WebhookStore,
    deliverer: WebhookDeliverer,
    subscriptions: list[int],
) -> None:
    rid = unique_id("t-hook")
    e = event(rid, recorded_at=datetime.now(UTC) - timedelta(minutes=1))
    await subscribe(
        hooks, subscriptions, receiver.url, receiver.secret, WebhookFilter(resource_ids=[rid])
    )
    report = await ActivityEnvironment().run(deliverer.deliver_transition_webhooks, e)
    assert report.delivered == [] and receiver.received == []


async def test_a_failing_receiver_raises_for_temporal_to_retry_and_a_4xx_is_not_retried(
    receiver: Receiver,
    hooks: WebhookStore,
    deliverer: WebhookDeliverer,
    subscriptions: list[int],
) -> None:
    rid = unique_id("t-hook")
    sub = await subscribe(
        hooks, subscriptions, receiver.url, receiver.secret, WebhookFilter(resource_ids=[rid])
    )
    e = event(rid, recorded_at=datetime.now(UTC) + timedelta(seconds=1))
    receiver.statuses = [503]
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(deliverer.deliver_transition_webhooks, e)
    assert caught.value.type == WebhookFailureType.DELIVERY_FAILED
    assert not caught.value.non_retryable
    assert f"subscription {sub} ({receiver.url}): HTTP 503" in caught.value.message

    rejected = event(rid, recorded_at=datetime.now(UTC) + timedelta(seconds=1))
    receiver.statuses = [410]
    report = await ActivityEnvironment().run(deliverer.deliver_transition_webhooks, rejected)
    assert report.rejected == [sub]
    statuses = [(d.transition_id, d.status) for d in await hooks.deliveries(subscription_id=sub)]
    assert statuses == [(rejected.transition_id, "rejected"), (e.transition_id, "failed")]


@workflow.defn(sandboxed=False)
class DeliverOnce:
    """Calls the activity the way Lifecycle.move does: by name, with Temporal's retry policy."""

    @workflow.run
    async def run(self, e: TransitionEvent) -> DeliveryReport:
        return await workflow.execute_activity(
            "deliver_transition_webhooks",
            e,
            result_type=DeliveryReport,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(milliseconds=100), backoff_coefficient=1.0
            ),
        )


async def test_temporal_retries_until_the_receiver_takes_it(
    client: Client,
    task_queue: str,
    receiver: Receiver,
    hooks: WebhookStore,
    deliverer: WebhookDeliverer,
    subscriptions: list[int],
) -> None:
    rid = unique_id("t-hook")
    sub = await subscribe(
        hooks, subscriptions, receiver.url, receiver.secret, WebhookFilter(resource_ids=[rid])
    )
    receiver.statuses = [500, 502]
    e = event(rid, recorded_at=datetime.now(UTC) + timedelta(seconds=1))
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[DeliverOnce],
        activities=[deliverer.deliver_transition_webhooks],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        report = await asyncio.wait_for(
            client.execute_workflow(DeliverOnce.run, e, id=unique_id("wf"), task_queue=task_queue),
            30,
        )
    assert report.delivered == [sub]
    assert [r["status"] for r in receiver.received] == [500, 502, 200]
    assert all(r["valid"] for r in receiver.received)
    assert [r["headers"][ATTEMPT_HEADER.lower()] for r in receiver.received] == ["1", "2", "3"]
    # The same bytes every time, so the receiver can dedupe on the event id.
    assert len({r["body"] for r in receiver.received}) == 1
    records = await hooks.deliveries(subscription_id=sub)
    assert [(d.attempt, d.status, d.response_status) for d in reversed(records)] == [
        (1, "failed", 500),
        (2, "failed", 502),
        (3, "delivered", 200),
    ]


# -- through a real lifecycle ----------------------------------------------------------------


def _with_deliverer(activities: list[Any], deliverer: WebhookDeliverer) -> list[Any]:
    names = {activity_definition(a).name for a in activities}
    if "deliver_transition_webhooks" not in names:  # until the worker registers it itself
        activities = [*activities, deliverer.deliver_transition_webhooks]
    return activities


def activity_definition(fn: Any) -> Any:
    from temporalio.activity import _Definition

    return _Definition.must_from_callable(fn)


async def test_every_transition_of_a_lifecycle_reaches_the_receiver_signed(
    client: Client,
    store: PostgresStore,
    task_queue: str,
    docker_engine: object,
    receiver: Receiver,
    hooks: WebhookStore,
    deliverer: WebhookDeliverer,
    subscriptions: list[int],
) -> None:
    rid = unique_id("t-hook")
    sub = await subscribe(
        hooks, subscriptions, receiver.url, receiver.secret, WebhookFilter(resource_ids=[rid])
    )
    receiver.statuses = [503]  # the first delivery fails: Temporal retries it
    settings = RsmSettings(task_queue=task_queue, mcp_base_image=PYTHON_MCP_IMAGE)
    activities = _with_deliverer(real_activities(store, settings).all(), deliverer)
    async with running_worker(client, task_queue, activities):
        lc = LifecycleClient(client, settings)
        handle = await lc.register_mcp(EXAMPLES / "mcp/toolbox", resource_id=rid, actor="carol")

        async def active() -> None:
            row = await store.get_resource(rid)
            assert row is not None and row.current_state is ResourceState.ACTIVE

        await assert_eventually(active, timeout=120)
        await lc.command(handle, "archive", actor="carol", reason="done")
        await asyncio.wait_for(handle.result(), 60)

    moves = [t for t in await store.list_transitions(rid) if t.from_state is not None]
    assert moves[-1].to_state is ResourceState.ARCHIVED
    delivered = [r for r in receiver.received if r["status"] == 200]
    assert all(r["valid"] for r in receiver.received)
    events = [httpx.Response(200, content=r["body"]).json() for r in delivered]
    assert sorted(e["transition"]["id"] for e in events) == sorted(t.transition_id for t in moves)
    by_id = {e["transition"]["id"]: e for e in events}
    for t in moves:
        e = by_id[t.transition_id]
        assert (e["transition"]["from_state"], e["transition"]["to_state"]) == (
            t.from_state.value if t.from_state else None,
            t.to_state.value,
        )
        assert e["transition"]["actor"] == t.actor
    records = await hooks.deliveries(subscription_id=sub, limit=1000)
    assert sum(1 for d in records if d.status == "delivered") == len(moves)
    assert sum(1 for d in records if d.status == "failed") == 1
