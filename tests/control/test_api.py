"""The HTTP API over the real stack: the session's Postgres, the Temporal dev server and, where a
lifecycle must move, a worker with the real activities (Docker builds included).

Reads are compared with what the database says; writes are checked for who may do them (401/403),
what the lifecycle refuses (409) and what Idempotency-Key replays.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from control.api.app import create_app
from control.api.settings import ApiSettings
from control.client import LifecycleClient
from state.machines import ResourceState, ResourceType
from state.postgres import PostgresStore
from state.settings import RsmSettings
from tests.conftest import EXAMPLES
from tests.control.api_harness import Tokens, add_requirement, bearer, seed
from tests.helpers import unique_id

S = ResourceState
T = ResourceType
UI = "http://127.0.0.1:8233"


@pytest.fixture(scope="module")
def tokens() -> Tokens:
    return Tokens.new()


@pytest.fixture
def settings(task_queue: str) -> RsmSettings:
    return RsmSettings(task_queue=task_queue, temporal_ui_url_override=UI)


@pytest.fixture
async def api(
    client: Client, store: PostgresStore, settings: RsmSettings, tokens: Tokens
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        settings,
        store,
        LifecycleClient(client, settings),
        api_settings=ApiSettings(command_timeout_seconds=10, webhook_allowed_hosts=["127.0.0.1"]),
        access=tokens.access(),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        yield http


def detail(response: httpx.Response) -> str:
    body: dict[str, Any] = response.json()
    return str(body["detail"])


# -- reads -----------------------------------------------------------------------------------


async def test_list_filters_search_and_paginates(
    api: httpx.AsyncClient, store: PostgresStore
) -> None:
    team = unique_id("team")
    ids = [unique_id("t-api") for _ in range(5)]
    await seed(store, T.MCP_SERVER, ids[0], [S.REGISTERED], owner_team=team, name="Alpha tools")
    await seed(store, T.MCP_SERVER, ids[1], [S.REGISTERED, S.BUILDING, S.FAILED], owner_team=team)
    await seed(store, T.N8N_WORKFLOW, ids[2], [S.REGISTERED], owner_team=team, name="beta flow")
    await seed(store, T.N8N_WORKFLOW, ids[3], [S.REGISTERED, S.ARCHIVED], owner_team=team)
    await seed(store, T.TEAM, ids[4], [S.REGISTERED], owner_team=team)

    r = await api.get("/api/resources", params={"owner": team})
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 5
    assert {i["resource_id"] for i in body["items"]} == set(ids)

    r = await api.get("/api/resources", params={"owner": team, "type": "n8n_workflow"})
    assert {i["resource_id"] for i in r.json()["items"]} == {ids[2], ids[3]}

    r = await api.get("/api/resources", params={"owner": team, "state": "failed"})
    [failed] = r.json()["items"]
    assert failed["resource_id"] == ids[1] and failed["current_state"] == "failed"
    assert failed["temporal_ui"] == (
        f"{UI}/namespaces/default/workflows/resource%2Fmcp_server%2F{ids[1]}"
    )

    # Search matches id or name, case-insensitively; % and _ are literal characters.
    r = await api.get("/api/resources", params={"owner": team, "search": "ALPHA"})
    assert [i["resource_id"] for i in r.json()["items"]] == [ids[0]]
    r = await api.get("/api/resources", params={"owner": team, "search": "%"})
    assert r.json()["total"] == 0

    pages = []
    for offset in (0, 2, 4):
        r = await api.get("/api/resources", params={"owner": team, "limit": 2, "offset": offset})
        page = r.json()
        assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == offset
        pages += [i["resource_id"] for i in page["items"]]
    assert sorted(pages) == sorted(ids) and len(pages) == 5
    r = await api.get("/api/resources", params={"owner": team, "offset": 10})
    assert r.json() == {"items": [], "total": 5, "limit": 50, "offset": 10}


async def test_overview_counts_equal_the_database(
    api: httpx.AsyncClient, store: PostgresStore
) -> None:
    await seed(store, T.TEAM, unique_id("t-api"), [S.REGISTERED])
    r = await api.get("/api/resources/overview")
    assert r.status_code == 200
    body = r.json()
    async with store._pool.connection() as conn:
        cur = await conn.execute(
            "select resource_type, current_state, count(*) from public.resource_states"
            " group by 1, 2"
        )
        truth = {(t, s): n for t, s, n in await cur.fetchall()}
    got = {(t, s): n for t, states in body["by_type"].items() for s, n in states.items()}
    assert got == truth
    assert body["total"] == sum(truth.values())
    assert set(body["by_type"]) == {"n8n_workflow", "mcp_server", "team"}


async def test_awaiting_action_says_what_each_resource_waits_on(
    api: httpx.AsyncClient, store: PostgresStore, tokens: Tokens
) -> None:
    team = unique_id("team")
    waiting, failed, fine = (unique_id("t-api") for _ in range(3))
    await seed(store, T.N8N_WORKFLOW, waiting, [S.REGISTERED], owner_team=team)
    await add_requirement(store, waiting, "credential", "slack", "pending")
    await add_requirement(store, waiting, "approval", "approval", "pending")
    await add_requirement(store, waiting, "other", "done", "satisfied")
    await seed(store, T.MCP_SERVER, failed, [S.REGISTERED, S.BUILDING, S.FAILED], owner_team=team)
    await seed(store, T.MCP_SERVER, fine, [S.REGISTERED], owner_team=team)

    r = await api.get("/api/resources/awaiting-action", params={"owner": team})
    assert r.status_code == 200
    items = {i["resource_id"]: i for i in r.json()["items"]}
    assert set(items) == {waiting, failed}
    assert sorted(items[waiting]["waiting_on"]) == ["approval:approval", "credential:slack"]
    assert items[failed]["current_state"] == "failed"
    # Anonymous readers see no buttons; an approver sees approve/reject where an approval is pending.
    assert items[waiting]["actions"] == []
    r = await api.get(
        "/api/resources/awaiting-action", params={"owner": team}, headers=bearer(tokens.approver)
    )
    items = {i["resource_id"]: i for i in r.json()["items"]}
    assert items[waiting]["actions"] == ["approve", "reject"]
    assert items[failed]["actions"] == []
    r = await api.get(
        "/api/resources/awaiting-action", params={"owner": team}, headers=bearer(tokens.operator)
    )
    items = {i["resource_id"]: i for i in r.json()["items"]}
    assert "approve" not in items[waiting]["actions"]
    assert items[failed]["actions"] == ["retry", "archive"]

    r = await api.get("/api/resources/readiness", params={"owner": team})
    body = r.json()
    assert body["summary"] == {
        "total": 3,
        "ready": 0,
        "not_ready": 3,
        "by_type": {
            "mcp_server": {"total": 2, "ready": 0},
            "n8n_workflow": {"total": 1, "ready": 0},
        },
    }
    readiness = {i["resource_id"]: i for i in body["items"]}
    assert readiness[waiting]["pending_requirements"] == 2


async def test_detail_and_history_come_from_the_database(
    api: httpx.AsyncClient, store: PostgresStore
) -> None:
    rid = unique_id("t-api")
    await seed(store, T.MCP_SERVER, rid, [S.REGISTERED, S.BUILDING, S.FAILED])
    r = await api.get(f"/api/resources/{rid}")
    assert r.status_code == 200
    body = r.json()
    assert body["resource"]["current_state"] == "failed"
    assert body["waiting_on"] == []
    assert set(body["allowed_transitions"]) == {"registered", "archived", "building", "deploying"}
    assert body["mcp"]["resource_id"] == rid

    r = await api.get(f"/api/resources/{rid}/transitions")
    assert [(t["from_state"], t["to_state"]) for t in r.json()["items"]] == [
        (None, "created"),
        ("created", "registered"),
        ("registered", "building"),
        ("building", "failed"),
    ]
    r = await api.get(f"/api/resources/{rid}/transitions", params={"limit": 2})
    assert [t["to_state"] for t in r.json()["items"]] == ["building", "failed"]

    for path in ("/api/resources/no-such-thing", "/api/resources/no-such-thing/transitions"):
        r = await api.get(path)
        assert r.status_code == 404
        assert r.json() == {"error": "not_found", "detail": "no resource 'no-such-thing'"}
    r = await api.get("/api/resources/Not_A_Valid_Id")
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"


# -- who may write ---------------------------------------------------------------------------


async def test_a_body_past_the_limit_is_refused_before_it_is_read(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    big = b"x" * (2 * 1024 * 1024 + 1)
    for headers in ({}, bearer(tokens.admin)):
        r = await api.post(
            "/api/resources", content=big, headers={**headers, "Content-Type": "application/json"}
        )
        assert r.status_code == 413, r.text
        assert r.json() == {
            "error": "too_large",
            "detail": f"a request body of {len(big)} bytes is over the limit of 2097152"
            " (RSM_API_MAX_BODY_BYTES)",
        }


async def test_anonymous_and_unknown_tokens_are_refused_with_401(api: httpx.AsyncClient) -> None:
    body = {"to_state": "archived", "reason": "x"}
    r = await api.post("/api/resources/anything/transition", json=body)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"] == "unauthorized"
    assert "writes need a bearer token" in detail(r)
    r = await api.post(
        "/api/resources/anything/approve", json={}, headers=bearer("not-a-configured-token")
    )
    assert r.status_code == 401 and detail(r) == "unknown bearer token"
    # A wrong token is refused on reads too, rather than silently treated as anonymous.
    r = await api.get("/api/resources", headers=bearer("not-a-configured-token"))
    assert r.status_code == 401


async def test_me_says_who_the_token_is(api: httpx.AsyncClient, tokens: Tokens) -> None:
    r = await api.get("/api/me")
    assert r.json()["authenticated"] is False
    r = await api.get("/api/me", headers=bearer(tokens.approver))
    me = r.json()
    assert (me["actor"], me["role"]) == ("alice", "approver")
    assert "approve/*" in me["permissions"]
    assert me["temporal_ui_url"] == UI


async def test_roles_decide_which_arrow_may_be_moved(
    api: httpx.AsyncClient, store: PostgresStore, tokens: Tokens
) -> None:
    rid = unique_id("t-api")
    await seed(store, T.MCP_SERVER, rid, [S.REGISTERED, S.BUILDING, S.FAILED])
    # The viewer may move nothing; the approver may not move this arrow; an operator may not approve.
    for token, path, body, actor, permission in [
        (
            tokens.viewer,
            "transition",
            {"to_state": "registered", "reason": "r"},
            "vic",
            "transition/mcp_server/failed/registered",
        ),
        (
            tokens.approver,
            "transition",
            {"to_state": "registered", "reason": "r"},
            "alice",
            "transition/mcp_server/failed/registered",
        ),
        (tokens.operator, "approve", {"reason": "lgtm"}, "olga", "approve/mcp_server"),
        (tokens.viewer, "commands/retry", {}, "vic", "command/mcp_server/retry/failed"),
    ]:
        r = await api.post(f"/api/resources/{rid}/{path}", json=body, headers=bearer(token))
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"] == "forbidden"
        role = {"vic": "viewer", "alice": "approver", "olga": "operator"}[actor]
        assert detail(r) == f"{actor} ({role}) may not {permission}"

    # An operator may move a recovery arrow, but not one the machine does not have: 409 with why.
    r = await api.post(
        f"/api/resources/{rid}/transition",
        json={"to_state": "active", "reason": "force"},
        headers=bearer(tokens.admin),
    )
    assert r.status_code == 409
    assert detail(r) == "mcp_server machine v1 has no arrow failed -> active"
    r = await api.post(
        f"/api/resources/{rid}/transition",
        json={"to_state": "active", "reason": ""},
        headers=bearer(tokens.admin),
    )
    assert r.status_code == 422
    r = await api.post(
        "/api/resources/no-such-thing/approve", json={}, headers=bearer(tokens.approver)
    )
    assert r.status_code == 404


async def test_text_with_nul_bytes_is_refused_at_the_door(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    r = await api.post(
        "/api/resources/x/transition",
        json={"to_state": "archived", "reason": "a\x00b"},
        headers=bearer(tokens.admin),
    )
    assert r.status_code == 422
    r = await api.get("/api/resources", params={"search": "a\x00b"})
    assert r.status_code == 422


# -- idempotency -----------------------------------------------------------------------------


async def test_idempotency_key_replays_the_first_answer(
    api: httpx.AsyncClient, store: PostgresStore, tokens: Tokens
) -> None:
    key = unique_id("key")
    body = {"url": "http://127.0.0.1:9/hook", "description": "replay test"}
    headers = {**bearer(tokens.admin), "Idempotency-Key": key}
    first = await api.post("/api/webhooks", json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = await api.post("/api/webhooks", json=body, headers=headers)
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    sub_id = first.json()["subscription"]["id"]
    listed = (await api.get("/api/webhooks", headers=bearer(tokens.admin))).json()["items"]
    assert [s["id"] for s in listed if s["description"] == "replay test"] == [sub_id]

    # The same key with another body is a client error, not a silent replay.
    other = await api.post("/api/webhooks", json={**body, "description": "other"}, headers=headers)
    assert other.status_code == 409 and other.json()["error"] == "idempotency_key_reused"
    # Keys belong to their caller: the same key from another actor is a new request.
    rid = unique_id("t-api")
    await seed(store, T.MCP_SERVER, rid, [S.REGISTERED, S.BUILDING, S.FAILED])
    refused = await api.post(
        f"/api/resources/{rid}/transition",
        json={"to_state": "active", "reason": "x"},
        headers={**bearer(tokens.operator), "Idempotency-Key": key},
    )
    assert refused.status_code == 403
    # A refusal is an answer too: replayed as it was.
    refused = await api.post(
        f"/api/resources/{rid}/transition",
        json={"to_state": "active", "reason": "x"},
        headers={**bearer(tokens.admin), "Idempotency-Key": key + "-2"},
    )
    assert refused.status_code == 409
    replay = await api.post(
        f"/api/resources/{rid}/transition",
        json={"to_state": "active", "reason": "x"},
        headers={**bearer(tokens.admin), "Idempotency-Key": key + "-2"},
    )
    assert replay.status_code == 409 and replay.json() == refused.json()
    assert replay.headers["idempotent-replayed"] == "true"
    await api.delete(f"/api/webhooks/{sub_id}", headers=bearer(tokens.admin))


# -- webhooks management ---------------------------------------------------------------------


async def test_webhook_subscriptions_are_admins_and_never_show_the_secret_again(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    body = {"url": "http://127.0.0.1:9/hook", "event_filter": {"to_states": ["active"]}}
    r = await api.post("/api/webhooks", json=body, headers=bearer(tokens.operator))
    assert r.status_code == 403
    r = await api.post(
        "/api/webhooks", json={"url": "http://10.1.2.3/hook"}, headers=bearer(tokens.admin)
    )
    assert r.status_code == 403 and r.json()["error"] == "host_not_allowed"
    r = await api.post("/api/webhooks", json=body, headers=bearer(tokens.admin))
    assert r.status_code == 201
    created = r.json()
    assert len(created["secret"]) >= 32
    sub = created["subscription"]
    assert sub["event_filter"]["to_states"] == ["active"] and sub["created_by"] == "root"
    r = await api.get(f"/api/webhooks/{sub['id']}", headers=bearer(tokens.admin))
    assert r.status_code == 200 and "secret" not in r.json()
    assert created["secret"] not in r.text
    r = await api.delete(f"/api/webhooks/{sub['id']}", headers=bearer(tokens.admin))
    assert r.status_code == 200 and r.json()["active"] is False
    listed = (await api.get("/api/webhooks", headers=bearer(tokens.admin))).json()["items"]
    assert sub["id"] not in [s["id"] for s in listed]
    r = await api.get("/api/webhooks/999999999", headers=bearer(tokens.admin))
    assert r.status_code == 404


# -- bulk ------------------------------------------------------------------------------------


async def test_bulk_dry_run_lists_matches_and_refuses_an_empty_filter(
    api: httpx.AsyncClient, store: PostgresStore, tokens: Tokens
) -> None:
    team = unique_id("team")
    inactive = [unique_id("t-api") for _ in range(3)]
    for rid in inactive:
        await seed(
            store,
            T.N8N_WORKFLOW,
            rid,
            [S.REGISTERED, S.VALIDATING, S.VALIDATED, S.DEPLOYING, S.DEPLOYED, S.INACTIVE],
            owner_team=team,
        )
    await seed(store, T.N8N_WORKFLOW, unique_id("t-api"), [S.REGISTERED], owner_team=team)
    archive = "/api/bulk/commands/archive"
    request = {
        "filter": {"type": "n8n_workflow", "state": "inactive", "owner_team": team},
        "dry_run": True,
    }
    r = await api.post(archive, json=request, headers=bearer(tokens.operator))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["matched"] == 3 and body["action"] == "archive"
    assert {i["resource_id"] for i in body["items"]} == set(inactive)
    assert {i["outcome"] for i in body["items"]} == {"matched"}

    r = await api.post(archive, json={**request, "max_matches": 2}, headers=bearer(tokens.operator))
    assert r.status_code == 409 and r.json()["error"] == "too_many_matches"
    r = await api.post(archive, json={**request, "filter": {}}, headers=bearer(tokens.operator))
    assert r.status_code == 422 and "the filter is empty" in detail(r)
    for bad in (
        {"owner_team": "", "resource_ids": []},  # empty values filter nothing
        {"owner": team},  # a misspelt field is refused, not ignored (it would widen the match)
        {"type": "n8n_workflow", "search": None},
    ):
        r = await api.post(
            archive, json={**request, "filter": bad}, headers=bearer(tokens.operator)
        )
        assert r.status_code == 422, bad
    r = await api.post("/api/bulk/transition", json=request, headers=bearer(tokens.operator))
    assert r.status_code == 422  # a transition names its target and a reason
    # A misspelt query parameter is refused, not ignored (it would widen a list).
    r = await api.get("/api/resources", params={"stat": "failed"})
    assert r.status_code == 422 and detail(r) == "unknown query parameter(s): stat"
    r = await api.post(archive, json=request, headers=bearer(tokens.viewer))
    assert r.status_code == 403
    # An approver may use bulk, but each item is still checked: archiving is not theirs.
    r = await api.post(archive, json={**request, "dry_run": False}, headers=bearer(tokens.approver))
    body = r.json()
    assert body["forbidden"] == 3 and body["accepted"] == 0
    assert {i["detail"] for i in body["items"]} == {
        "alice (approver) may not command/n8n_workflow/archive/inactive"
    }


async def test_team_registration_checks_the_manifest_before_starting_anything(
    client: Client,
    store: PostgresStore,
    settings: RsmSettings,
    tokens: Tokens,
    tmp_path: Path,
) -> None:
    bad = tmp_path / "team.yaml"
    bad.write_text("name: Not A Valid Name\nreplicas: -1\n")
    app = create_app(
        settings,
        store,
        LifecycleClient(client, settings),
        api_settings=ApiSettings(source_roots=[EXAMPLES, tmp_path]),
        access=tokens.access(),
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as api:
        r = await api.post(
            "/api/resources",
            json={"type": "team", "path": str(bad)},
            headers=bearer(tokens.operator),
        )
        # The manifest is the server's file, not the request: a conflict, naming every problem.
        assert r.status_code == 409 and r.json()["error"] == "invalid_source"
        assert detail(r).startswith(
            f"team manifest {bad}: name: 'Not A Valid Name' is not a valid id"
        )
        assert "replicas: must be between 1 and 20, got -1" in detail(r)
        r = await api.post(
            "/api/resources",
            json={"type": "team", "path": "/etc/passwd"},
            headers=bearer(tokens.operator),
        )
        assert r.status_code == 403 and r.json()["error"] == "path_not_allowed"
        rid = unique_id("t-team")
        r = await api.post(
            "/api/resources",
            json={
                "type": "team",
                "path": str(EXAMPLES / "teams/research-team/team.yaml"),
                "id": rid,
            },
            headers=bearer(tokens.operator),
        )
        assert r.status_code == 202, r.text
        assert r.json()["workflow_id"] == f"resource/team/{rid}"
    # No worker polls this test's queue: end the lifecycle that was started.
    await client.get_workflow_handle(f"resource/team/{rid}").terminate("test over")
