"""The seed's Python API (control.state_manager) against the real stack: a worker on this test's
queue, the session's Temporal dev server and Postgres.

Each seed usage example (docs/state-management of the seed: "Usage Examples" 1-3, "Deployment
Requirements", "Integration Points") runs as written, imports aside, with the placeholder
"uuid-here" / "workflow-uuid" replaced by a fresh UUID per test. The examples are synchronous, as in
the seed, so they run on a thread while the worker runs on the test's event loop.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from control.state_manager import (
    MCPStateManager,
    StateClient,
    StateManagerUnavailable,
    StateTracker,
    TeamStateManager,
    WorkflowStateManager,
)
from state.machines import ResourceState
from state.models import LifecycleResult, LifecycleStatus, workflow_id_for
from state.postgres import PostgresStore
from state.settings import RsmSettings
from tests.conftest import REPO
from tests.helpers import assert_eventually, running_worker
from tests.workflows.test_mcp_lifecycle import HAPPY_WALK as MCP_PIPELINE_WALK
from tests.workflows.test_mcp_lifecycle import HISTORIES
from workers.worker import real_activities
from workflows.search_attributes import BLOCKED_ON

S = ResourceState
N8N_PIPELINE_WALK = [
    (None, S.CREATED),
    (S.CREATED, S.REGISTERED),
    (S.REGISTERED, S.VALIDATING),
    (S.VALIDATING, S.VALIDATED),
    (S.VALIDATED, S.DEPLOYING),
    (S.DEPLOYING, S.DEPLOYED),
    (S.DEPLOYED, S.ACTIVE),
]


@pytest.fixture
async def supabase(
    client: Client,
    temporal_env: WorkflowEnvironment,
    store: PostgresStore,
    pg_dsn: str,
    task_queue: str,
    docker_engine: object,  # the worker's activities include the Docker adapters
) -> AsyncIterator[StateClient]:
    """What the seed's examples call `supabase`: our connection, made the way a factory makes it."""
    settings = RsmSettings(
        task_queue=task_queue,
        RSM_DATABASE_URL=pg_dsn,
        RSM_TEMPORAL_ADDRESS=client.service_client.config.target_host,
    )
    async with running_worker(client, task_queue, real_activities(store, settings).all()):
        connection = await asyncio.to_thread(StateClient, settings)
        yield connection
        await asyncio.to_thread(connection.close)


@pytest.fixture
def uid() -> Iterator[str]:
    yield str(uuid.uuid4())


async def walk(store: PostgresStore, rid: str) -> list[tuple[S | None, S]]:
    return [(t.from_state, t.to_state) for t in await store.list_transitions(rid)]


async def status_of(client: Client, kind: str, rid: str) -> LifecycleStatus:
    return await client.get_workflow_handle(workflow_id_for(kind, rid)).query(
        "get_status", result_type=LifecycleStatus
    )


# -- 1. Workflow lifecycle -------------------------------------------------------------------------


def example_workflow_lifecycle(supabase: StateClient, uid: str) -> list[tuple[bool, Any]]:
    results = []
    # Initialize
    workflow_mgr = WorkflowStateManager(supabase)

    # Register a new workflow
    success, error = workflow_mgr.register_workflow(
        workflow_id=uid,
        workflow_name="Email Parser",
        owner_team="marketing-team",
        transitioned_by="user@example.com",
    )
    results.append((success, error))

    # Start validation
    success, error = workflow_mgr.start_validation(
        workflow_id=uid, workflow_name="Email Parser", validator="validation-service"
    )
    results.append((success, error))

    # Complete validation
    success, error = workflow_mgr.complete_validation(
        workflow_id=uid,
        workflow_name="Email Parser",
        success=True,
        validation_report={"errors": [], "warnings": []},
        validator="validation-service",
    )
    results.append((success, error))

    # Deploy to N8N
    success, error = workflow_mgr.deploy_workflow(
        workflow_id=uid,
        workflow_name="Email Parser",
        n8n_id="n8n-workflow-id",
        deployer="deployment-service",
    )
    results.append((success, error))

    # Activate
    success, error = workflow_mgr.activate_workflow(
        workflow_id=uid, workflow_name="Email Parser", activator="admin@example.com"
    )
    results.append((success, error))
    return results


async def test_workflow_lifecycle_example_has_the_pipelines_history(
    supabase: StateClient, store: PostgresStore, client: Client, uid: str
) -> None:
    results = await asyncio.to_thread(example_workflow_lifecycle, supabase, uid)

    assert results == [(True, None)] * 5
    assert await walk(store, uid) == N8N_PIPELINE_WALK
    history = await store.list_transitions(uid)
    assert [t.actor for t in history[1:]] == [
        "user@example.com",
        "validation-service",
        "validation-service",
        "deployment-service",
        "deployment-service",
        "admin@example.com",
    ]
    assert history[3].metadata == {"validation_report": {"errors": [], "warnings": []}}
    assert history[5].metadata == {"n8n_id": "n8n-workflow-id"}
    row = await store.get_resource(uid)
    assert row is not None and row.name == "Email Parser" and row.owner_team == "marketing-team"
    # The workflow drove it: Temporal knows the state, and so does the search attribute.
    assert (await status_of(client, "n8n_workflow", uid)).state is S.ACTIVE
    wid = workflow_id_for("n8n_workflow", uid)

    async def listed_as_active() -> None:
        query = f'ResourceState="active" AND WorkflowId="{wid}"'
        assert [wf.id async for wf in client.list_workflows(query)] == [wid]

    await assert_eventually(listed_as_active)

    # Archiving ends the workflow, like the pipeline's.
    archived = await asyncio.to_thread(
        WorkflowStateManager(supabase).transition_state,
        uid,
        "Email Parser",
        "archived",
        "retired",
        "admin@example.com",
    )
    assert archived == (True, None)
    handle = client.get_workflow_handle(
        workflow_id_for("n8n_workflow", uid), result_type=LifecycleResult
    )
    result = await handle.result()
    assert result.final_state is S.ARCHIVED
    if os.environ.get("RSM_RECORD_HISTORIES") == "1":
        (HISTORIES / "reported_workflow_active_archived.json").write_text(
            (await handle.fetch_history()).to_json()
        )


# -- 2. MCP server lifecycle -----------------------------------------------------------------------


def example_mcp_lifecycle(supabase: StateClient, uid: str) -> list[tuple[bool, Any]]:
    results = []
    mcp_mgr = MCPStateManager(supabase)

    # Register MCP
    success, error = mcp_mgr.register_mcp(
        mcp_id=uid,
        mcp_name="team-registry",
        mcp_type="server",
        category="data-access",
        registrar="mcp-factory",
    )
    results.append((success, error))

    # Build Docker image
    success, error = mcp_mgr.build_image(mcp_id=uid, mcp_name="team-registry", builder="ci-system")
    results.append((success, error))

    # Complete build
    success, error = mcp_mgr.complete_build(
        mcp_id=uid,
        mcp_name="team-registry",
        success=True,
        image_tag="team-registry:v1.0",
        builder="ci-system",
    )
    results.append((success, error))

    # Health check
    success, error = mcp_mgr.health_check(
        mcp_id=uid, mcp_name="team-registry", checker="k8s-operator"
    )
    results.append((success, error))
    return results


async def test_mcp_example_refuses_a_health_check_before_deploy_then_walks_like_the_pipeline(
    supabase: StateClient, store: PostgresStore, client: Client, uid: str
) -> None:
    results = await asyncio.to_thread(example_mcp_lifecycle, supabase, uid)

    # As written, the example asks for a health check of a server it never deployed: the seed's own
    # machine has no built -> health_checking arrow either. The refusal says what is allowed.
    assert results[:3] == [(True, None)] * 3
    ok, error = results[3]
    assert not ok
    assert "'built' to 'health_checking' not allowed" in error
    assert "deploying" in error
    assert await walk(store, uid) == MCP_PIPELINE_WALK[:4]
    built = (await store.list_transitions(uid))[-1]
    assert built.metadata == {"image_tag": "team-registry:v1.0"} and built.actor == "ci-system"

    # Reporting the deploy first, the rest goes through and ends with the pipeline's history.
    def finish() -> list[tuple[bool, Any]]:
        mgr = MCPStateManager(supabase)
        return [
            mgr.transition_state(uid, "team-registry", "deploying", "kubectl apply", "ci-system"),
            mgr.transition_state(uid, "team-registry", "deployed", "rollout done", "ci-system"),
            mgr.health_check(uid, "team-registry", "k8s-operator"),
            mgr.complete_health_check(uid, "team-registry", True, {"tools": 3}, "k8s-operator"),
            mgr.transition_state(uid, "team-registry", "active", "serving", "k8s-operator"),
        ]

    assert await asyncio.to_thread(finish) == [(True, None)] * 5
    assert await walk(store, uid) == MCP_PIPELINE_WALK
    assert (await status_of(client, "mcp_server", uid)).state is S.ACTIVE


# -- 3. Querying resource states -------------------------------------------------------------------


def example_querying(supabase: StateClient, uid: str) -> dict[str, Any]:
    tracker = StateTracker(supabase)

    # Get overview
    overview = tracker.get_resource_overview()

    # Get resources awaiting action
    awaiting = tracker.get_resources_awaiting_action()

    # Get failed resources
    failed = tracker.get_failed_resources()

    # Get specific resource details
    details = tracker.get_resource_details("workflow", uid)

    # Search resources
    results = tracker.search_resources(
        query="email", resource_type="workflow", states=["active", "deployed"]
    )

    # Get deployment readiness
    readiness = tracker.get_deployment_readiness()
    return {
        "overview": overview,
        "awaiting": awaiting,
        "failed": failed,
        "details": details,
        "results": results,
        "readiness": readiness,
    }


async def test_querying_example_answers_in_the_seeds_shapes(
    supabase: StateClient, uid: str
) -> None:
    await asyncio.to_thread(example_workflow_lifecycle, supabase, uid)
    broken, ready_mcp = str(uuid.uuid4()), str(uuid.uuid4())

    def more_resources() -> None:
        wf = WorkflowStateManager(supabase)
        assert wf.register_workflow(broken, "Broken Importer", "ops", "import-api") == (True, None)
        assert wf.start_validation(broken, "Broken Importer", "validation-service")[0]
        assert wf.complete_validation(
            broken, "Broken Importer", False, {"errors": ["node 'Foo' unknown"]}, "validator"
        ) == (True, None)
        mcp = MCPStateManager(supabase)
        assert mcp.register_mcp(ready_mcp, "Ready Registry", "server", "data", "mcp-factory")[0]
        assert mcp.build_image(ready_mcp, "Ready Registry", "ci")[0]
        assert mcp.complete_build(ready_mcp, "Ready Registry", True, "rr:1", "ci")[0]

    await asyncio.to_thread(more_resources)
    answers = await asyncio.to_thread(example_querying, supabase, uid)

    overview = answers["overview"]
    assert overview["workflow"]["active"]["count"] >= 1
    assert overview["workflow"]["failed_validation"]["count"] >= 1
    assert overview["mcp_server"]["built"]["count"] >= 1
    assert overview["workflow"]["active"]["last_transition"]

    awaiting = {r["resource_id"]: r for r in answers["awaiting"]}
    assert broken in awaiting and uid not in awaiting
    assert awaiting[broken]["resource_name"] == "Broken Importer"
    assert awaiting[broken]["resource_type"] == "workflow"
    assert awaiting[broken]["current_state"] == "failed_validation"

    failed = {r["resource_id"] for r in answers["failed"]}
    assert broken in failed and uid not in failed

    details = answers["details"]
    assert details["current_state"]["current_state"] == "active"
    assert [h["to_state"] for h in details["history"]][:2] == ["active", "deployed"]  # newest first
    assert details["history"][0]["transitioned_by"] == "admin@example.com"
    assert details["requirements"] == []
    assert details["workflow"]["owner_team"] == "marketing-team"
    assert details["blocked_on"] == []

    assert [r["resource_id"] for r in answers["results"] if r["resource_id"] == uid] == [uid]
    assert all(r["current_state"] in {"active", "deployed"} for r in answers["results"])
    assert all("email" in r["resource_name"].lower() for r in answers["results"])

    readiness = answers["readiness"]
    assert set(readiness) == {"workflows", "mcp_servers", "teams"}
    ready_ids = [d["id"] for d in readiness["mcp_servers"]["details"]]
    assert ready_mcp in ready_ids and readiness["mcp_servers"]["ready"] >= 1


# -- Deployment requirements -----------------------------------------------------------------------


async def test_requirements_example_gates_activation_and_shows_what_it_waits_on(
    supabase: StateClient, store: PostgresStore, client: Client, uid: str
) -> None:
    def to_deployed() -> None:
        mgr = WorkflowStateManager(supabase)
        assert mgr.register_workflow(uid, "LLM Summariser", "research", "import-api")[0]
        assert mgr.start_validation(uid, "LLM Summariser", "validator")[0]
        assert mgr.complete_validation(uid, "LLM Summariser", True, {}, "validator")[0]
        assert mgr.deploy_workflow(uid, "LLM Summariser", "n8n-1", "deployer") == (True, None)

    await asyncio.to_thread(to_deployed)

    def example_requirements() -> tuple[dict[str, Any], tuple[bool, Any]]:
        workflow_mgr = WorkflowStateManager(supabase)
        # Add a requirement
        workflow_mgr.add_deployment_requirement(
            resource_id=uid,
            requirement_type="credential",
            requirement_name="OPENAI_API_KEY",
            details={"description": "OpenAI API key for LLM calls"},
        )
        # Check all requirements
        req_status = workflow_mgr.check_deployment_requirements(uid)
        refused = workflow_mgr.activate_workflow(uid, "LLM Summariser", "admin@example.com")
        return req_status, refused

    req_status, refused = await asyncio.to_thread(example_requirements)
    assert req_status["all_satisfied"] is False
    assert (req_status["pending_count"], req_status["failed_count"]) == (1, 0)
    [requirement] = req_status["requirements"]
    assert requirement["requirement_name"] == "OPENAI_API_KEY"
    assert requirement["requirement_type"] == "credential"
    assert requirement["requirement_details"]["description"] == "OpenAI API key for LLM calls"
    assert refused == (False, "not active while waiting on credential:OPENAI_API_KEY")

    async def blocked_on_credential() -> None:
        status = await status_of(client, "n8n_workflow", uid)
        assert status.blocked_on == ["credential:OPENAI_API_KEY"]

    await assert_eventually(blocked_on_credential)

    def satisfy_and_activate() -> tuple[dict[str, Any], tuple[bool, Any]]:
        workflow_mgr = WorkflowStateManager(supabase)
        # Update requirement status
        workflow_mgr.update_requirement_status(
            resource_id=uid,
            requirement_name="OPENAI_API_KEY",
            status="satisfied",
            details={"verified_at": "2024-01-20T10:00:00Z"},
        )
        req_status = workflow_mgr.check_deployment_requirements(uid)
        return req_status, workflow_mgr.activate_workflow(uid, "LLM Summariser", "admin@x")

    req_status, activated = await asyncio.to_thread(satisfy_and_activate)
    assert req_status["all_satisfied"] is True and req_status["pending_count"] == 0
    details = req_status["requirements"][0]["requirement_details"]
    assert details["verified_at"] == "2024-01-20T10:00:00Z"
    assert details["description"] == "OpenAI API key for LLM calls"  # kept, not replaced
    assert activated == (True, None)
    assert (await walk(store, uid))[-1] == (S.DEPLOYED, S.ACTIVE)
    assert (await status_of(client, "n8n_workflow", uid)).blocked_on == []


async def test_a_failed_requirement_fails_the_resource_naming_it(
    supabase: StateClient, store: PostgresStore, uid: str
) -> None:
    def fail_credential() -> bool:
        mgr = WorkflowStateManager(supabase)
        assert mgr.register_workflow(uid, "Mailer", "ops", "import-api")[0]
        assert mgr.start_validation(uid, "Mailer", "v")[0]
        assert mgr.complete_validation(uid, "Mailer", True, {}, "v")[0]
        assert mgr.deploy_workflow(uid, "Mailer", "n8n-2", "d")[0]
        assert mgr.add_deployment_requirement(uid, "credential", "SMTP", {})
        return mgr.update_requirement_status(uid, "SMTP", "failed", {"error": "auth refused"})

    assert await asyncio.to_thread(fail_credential)

    async def failed() -> None:
        last = (await store.list_transitions(uid))[-1]
        assert (last.from_state, last.to_state) == (S.DEPLOYED, S.FAILED)
        assert last.reason == "requirement failed: SMTP"

    await assert_eventually(failed)


# -- Integration points and teams ------------------------------------------------------------------


async def test_integration_points_run_as_written(
    supabase: StateClient, store: PostgresStore
) -> None:
    team_id, mcp_id, wf_id = (str(uuid.uuid4()) for _ in range(3))

    def integration_points() -> list[tuple[bool, Any]]:
        team_mgr = TeamStateManager(supabase)
        mcp_mgr = MCPStateManager(supabase)
        workflow_mgr = WorkflowStateManager(supabase)
        resource_mgr = MCPStateManager(supabase)
        team_name, department, framework = "content-team", "marketing", "crewai"
        mcp_name, category = "web-search", "search"
        owner_team = "ops"
        results = []
        # In team_factory.py
        results.append(
            team_mgr.register_team(team_id, team_name, department, framework, "team-factory")
        )
        # In mcp_factory.py
        results.append(mcp_mgr.register_mcp(mcp_id, mcp_name, "server", category, "mcp-factory"))
        # In workflow import API
        results.append(
            workflow_mgr.register_workflow(wf_id, "Imported Flow", owner_team, "import-api")
        )
        # GitOps: the resource is being deployed when the script reports success.
        for state in ("building", "built", "deploying"):
            assert resource_mgr.transition_state(mcp_id, mcp_name, state, "ci", "gitops")[0]
        deployment_successful = True
        id, name = mcp_id, mcp_name
        if deployment_successful:
            results.append(
                resource_mgr.transition_state(id, name, "deployed", "Deployment complete", "gitops")
            )
        # K8s operator: a reported MCP server goes through its health check before `active`.
        resource_mgr.transition_state(id, name, "health_checking", "probing", "k8s-operator")
        resource_mgr.transition_state(id, name, "available", "probe ok", "k8s-operator")
        results.append(
            resource_mgr.transition_state(id, name, "active", "Pod running", "k8s-operator")
        )
        return results

    assert await asyncio.to_thread(integration_points) == [(True, None)] * 5
    team = await store.get_resource(team_id)
    assert team is not None and team.owner_team == "marketing"
    assert team.spec["framework"] == "crewai"
    registered = (await store.list_transitions(team_id))[-1]
    assert registered.actor == "team-factory" and registered.to_state is S.REGISTERED
    assert (await store.list_transitions(mcp_id))[-1].reason == "Pod running"
    assert (await store.get_resource(wf_id)).current_state is S.REGISTERED  # type: ignore[union-attr]


async def test_a_team_awaiting_its_mcp_server_follows_it_to_active_by_itself(
    supabase: StateClient, store: PostgresStore, client: Client
) -> None:
    team_id, mcp_id = str(uuid.uuid4()), str(uuid.uuid4())

    def team_waits() -> tuple[bool, Any]:
        mcp = MCPStateManager(supabase)
        assert mcp.register_mcp(mcp_id, "kb", "server", "data", "mcp-factory")[0]
        team = TeamStateManager(supabase)
        assert team.register_team(team_id, "support-team", "support", "crewai", "team-factory")[0]
        for state in ("building", "built", "deploying", "deployed"):
            assert team.transition_state(team_id, "support-team", state, "factory", "ci")[0]
        return team.check_team_dependencies(team_id, "support-team", [mcp_id], "team-factory")

    assert await asyncio.to_thread(team_waits) == (True, None)
    assert (await walk(store, team_id))[-1] == (S.DEPLOYED, S.AWAITING_DEPENDENCIES)
    assert (await store.list_transitions(team_id))[-1].reason == "1 dependencies pending"

    def mcp_goes_active() -> None:
        mcp = MCPStateManager(supabase)
        for state in ("building", "built", "deploying", "deployed", "health_checking"):
            assert mcp.transition_state(mcp_id, "kb", state, "factory", "ci")[0]
        assert mcp.complete_health_check(mcp_id, "kb", True, {}, "probe")[0]
        assert mcp.transition_state(mcp_id, "kb", "active", "serving", "ci") == (True, None)

    await asyncio.to_thread(mcp_goes_active)

    async def team_active() -> None:
        last = (await store.list_transitions(team_id))[-1]
        assert (last.from_state, last.to_state) == (S.AWAITING_DEPENDENCIES, S.ACTIVE)
        assert last.reason == "all dependencies satisfied" and last.actor == "rsm"

    await assert_eventually(team_active, timeout=15)
    requirements = await store.list_requirements(team_id)
    assert [(r.name, r.status) for r in requirements] == [(mcp_id, "satisfied")]

    retire = TeamStateManager(supabase).transition_state
    assert await asyncio.to_thread(retire, team_id, "support-team", "archived", "done", "ops") == (
        True,
        None,
    )
    handle = client.get_workflow_handle(workflow_id_for("team", team_id))
    await handle.result()
    if os.environ.get("RSM_RECORD_HISTORIES") == "1":
        (HISTORIES / "reported_team_followed_dependency_archived.json").write_text(
            (await handle.fetch_history()).to_json()
        )


# -- bad input -------------------------------------------------------------------------------------


async def test_bad_input_comes_back_as_named_errors_not_exceptions(
    supabase: StateClient, store: PostgresStore, uid: str
) -> None:
    def misuse() -> dict[str, Any]:
        wf = WorkflowStateManager(supabase)
        mcp = MCPStateManager(supabase)
        out: dict[str, Any] = {
            "bad_id": wf.register_workflow("Not An Id!", "x", "ops", "me"),
            "unregistered": wf.start_validation(str(uuid.uuid4()), "x", "me"),
            "register": wf.register_workflow(uid, "Flow", "ops", "me"),
            "register_again": wf.register_workflow(uid, "Flow", "ops", "me"),
            "unknown_state": wf.transition_state(uid, "Flow", "launched", "why", "me"),
            "skip_ahead": wf.activate_workflow(uid, "Flow", "me"),
            "as_mcp": mcp.build_image(uid, "Flow", "ci"),
            "bad_mcp_type": mcp.register_mcp(str(uuid.uuid4()), "x", "plugin", "c", "me"),
            "empty_reason": wf.transition_state(uid, "Flow", "validating", "", "me"),
        }
        out["bad_req_type"] = wf.add_deployment_requirement(uid, "licence", "X")
        out["bad_req_type_error"] = wf.last_error
        out["unknown_req"] = wf.update_requirement_status(uid, "NOPE", "satisfied")
        out["unknown_req_error"] = wf.last_error
        assert wf.start_validation(uid, "Flow", "me")[0]
        out["register_after_progress"] = wf.register_workflow(uid, "Flow", "ops", "me")
        return out

    out = await asyncio.to_thread(misuse)
    assert out["bad_id"][0] is False and "invalid resource id 'Not An Id!'" in out["bad_id"][1]
    assert out["unregistered"][0] is False and "is not registered" in out["unregistered"][1]
    assert out["register"] == out["register_again"] == (True, None)  # a retried factory is harmless
    assert (
        out["unknown_state"][0] is False and "unknown state 'launched'" in out["unknown_state"][1]
    )
    assert out["skip_ahead"] == (
        False,
        "Transition from 'registered' to 'active' not allowed for n8n_workflow"
        " (from registered: archived, validating)",
    )
    assert out["as_mcp"] == (False, f"{uid} is a n8n_workflow, not a mcp_server")
    assert out["bad_mcp_type"] == (False, "unknown mcp_type 'plugin'; one of client, server")
    assert out["empty_reason"][0] is False and "reason" in out["empty_reason"][1]
    assert (
        out["bad_req_type"] is False
        and "unknown requirement type 'licence'" in (out["bad_req_type_error"])
    )
    assert out["unknown_req"] is False and "has no requirement 'NOPE'" in out["unknown_req_error"]
    assert out["register_after_progress"] == (
        False,
        f"n8n_workflow {uid} is already registered and now validating",
    )
    # Nothing refused left a row behind.
    assert await walk(store, uid) == N8N_PIPELINE_WALK[:3]
    assert await store.list_requirements(uid) == []


# -- input that used to wedge a lifecycle or slip past a gate --------------------------------------


async def test_nul_characters_and_oversized_input_are_refused_at_once(
    supabase: StateClient, store: PostgresStore, uid: str
) -> None:
    def misuse() -> dict[str, Any]:
        wf = WorkflowStateManager(supabase)
        out: dict[str, Any] = {
            "nul_name": wf.register_workflow(str(uuid.uuid4()), "N\x00", "ops", "me"),
            "register": wf.register_workflow(uid, "Flow", "ops", "me"),
            "nul_reason": wf.transition_state(uid, "Flow", "validating", "a\x00b", "me"),
            "nul_metadata": wf.transition_state(
                uid, "Flow", "validating", "ok", "me", {"k": ["x\x00"]}
            ),
            "huge_reason": wf.transition_state(uid, "Flow", "validating", "r" * 2_500_000, "me"),
            "object_metadata": wf.transition_state(
                uid, "Flow", "validating", "ok", "me", {"k": object()}
            ),
            "huge_metadata": wf.transition_state(
                uid, "Flow", "validating", "ok", "me", {"k": "m" * 300_000}
            ),
            "empty_actor": wf.register_workflow(str(uuid.uuid4()), "X", "ops", ""),
        }
        out["nul_requirement"] = wf.add_deployment_requirement(uid, "credential", "K\x00")
        out["nul_requirement_error"] = wf.last_error
        # The lifecycle still answers: nothing is stuck behind a refused report.
        out["after"] = wf.transition_state(uid, "Flow", "validating", "clean", "me")
        return out

    started = asyncio.get_running_loop().time()
    out = await asyncio.to_thread(misuse)
    assert asyncio.get_running_loop().time() - started < 20  # no call waited for a timeout
    assert out["nul_name"][0] is False and "NUL" in out["nul_name"][1]
    assert out["register"] == (True, None)
    assert out["nul_reason"][0] is False and "reason" in out["nul_reason"][1]
    assert "NUL" in out["nul_reason"][1]
    assert out["nul_metadata"][0] is False and "NUL" in out["nul_metadata"][1]
    assert out["huge_reason"][0] is False and "at most 10000 characters" in out["huge_reason"][1]
    assert out["object_metadata"][0] is False
    assert out["object_metadata"][1].startswith("metadata is not JSON")
    assert out["huge_metadata"][0] is False and "at most 262144" in out["huge_metadata"][1]
    assert out["empty_actor"][0] is False and out["empty_actor"][1].startswith("actor:")
    assert out["nul_requirement"] is False and "NUL" in out["nul_requirement_error"]
    assert out["after"] == (True, None)
    assert [(t.to_state, t.reason) for t in await store.list_transitions(uid)][-1] == (
        S.VALIDATING,
        "clean",
    )
    assert await store.list_requirements(uid) == []


async def test_forty_long_requirement_names_keep_the_lifecycle_and_its_gate(
    supabase: StateClient, client: Client, uid: str
) -> None:
    names = [f"credential-for-the-payments-service-{i:02d}" for i in range(40)]

    def gated() -> tuple[bool, str | None]:
        wf = WorkflowStateManager(supabase)
        assert wf.register_workflow(uid, "Payments", "ops", "me")[0]
        for state in ("validating", "validated", "deploying", "deployed"):
            assert wf.transition_state(uid, "Payments", state, "step", "ci") == (True, None)
        for name in names:
            assert wf.add_deployment_requirement(uid, "credential", name), wf.last_error
        return wf.activate_workflow(uid, "Payments", "admin")

    ok, error = await asyncio.to_thread(gated)
    assert not ok and error is not None and error.startswith("not active while waiting on")
    status = await status_of(client, "n8n_workflow", uid)
    assert status.state is S.DEPLOYED and len(status.blocked_on) == 40
    # The search attribute holds what fits, and says how many more there are.
    wid = workflow_id_for("n8n_workflow", uid)
    # The gate answers at once; the mirror follows once the forty records are written.
    blocked: list[str] = []
    for _ in range(100):
        description = await client.get_workflow_handle(wid).describe()
        blocked = description.typed_search_attributes.get(BLOCKED_ON) or []
        if len(blocked) > 1:
            break
        await asyncio.sleep(0.1)
    assert 1 < len(blocked) < 40 and blocked[-1] == f"+{41 - len(blocked)} more"
    assert blocked[:-1] == [f"credential:{n}" for n in names[: len(blocked) - 1]]


async def test_a_restarted_reported_lifecycle_reloads_its_gates(
    supabase: StateClient, client: Client, uid: str
) -> None:
    def to_deployed_with_a_requirement() -> None:
        wf = WorkflowStateManager(supabase)
        assert wf.register_workflow(uid, "Mailer", "ops", "me")[0]
        for state in ("validating", "validated", "deploying", "deployed"):
            assert wf.transition_state(uid, "Mailer", state, "step", "ci") == (True, None)
        assert wf.add_deployment_requirement(uid, "credential", "SMTP")

    await asyncio.to_thread(to_deployed_with_a_requirement)
    await client.get_workflow_handle(workflow_id_for("n8n_workflow", uid)).terminate("lost")

    def register_again_and_activate() -> list[tuple[bool, str | None]]:
        wf = WorkflowStateManager(supabase)
        return [
            wf.register_workflow(uid, "Mailer", "ops", "me"),
            wf.activate_workflow(uid, "Mailer", "admin"),
        ]

    again, activate = await asyncio.to_thread(register_again_and_activate)
    assert again == (False, f"n8n_workflow {uid} is already registered and now deployed")
    assert activate == (False, "not active while waiting on credential:SMTP")

    def satisfy_activate_archive() -> list[object]:
        wf = WorkflowStateManager(supabase)
        return [
            wf.update_requirement_status(uid, "SMTP", "satisfied"),
            wf.activate_workflow(uid, "Mailer", "admin"),
            wf.transition_state(uid, "Mailer", "archived", "done", "ops"),
        ]

    assert await asyncio.to_thread(satisfy_activate_archive) == [True, (True, None), (True, None)]
    handle = client.get_workflow_handle(workflow_id_for("n8n_workflow", uid))
    await asyncio.wait_for(handle.result(), 30)
    if os.environ.get("RSM_RECORD_HISTORIES") == "1":
        (HISTORIES / "reported_workflow_restarted_reloaded_gates_archived.json").write_text(
            (await handle.fetch_history()).to_json()
        )


async def test_a_dependency_registered_later_is_followed_both_ways(
    supabase: StateClient, store: PostgresStore, pg_dsn: str, client: Client
) -> None:
    team_id, mcp_id = str(uuid.uuid4()), str(uuid.uuid4())

    def team_waits_for_an_unknown_server() -> tuple[bool, str | None]:
        team = TeamStateManager(supabase)
        assert team.register_team(team_id, "ops-team", "ops", "crewai", "team-factory")[0]
        for state in ("building", "built", "deploying", "deployed"):
            assert team.transition_state(team_id, "ops-team", state, "factory", "ci")[0]
        return team.check_team_dependencies(team_id, "ops-team", [mcp_id], "team-factory")

    assert await asyncio.to_thread(team_waits_for_an_unknown_server) == (True, None)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cur = await conn.execute(
            "select waiting_on from resources_awaiting_action where resource_id = %s", (team_id,)
        )
        assert await cur.fetchone() == ([f"dependency:{mcp_id}"],)  # one line, not one per type

    def server_registered_and_active() -> None:
        mcp = MCPStateManager(supabase)
        assert mcp.register_mcp(mcp_id, "late", "server", "data", "mcp-factory")[0]
        for state in ("building", "built", "deploying", "deployed", "health_checking"):
            assert mcp.transition_state(mcp_id, "late", state, "factory", "ci")[0]
        assert mcp.complete_health_check(mcp_id, "late", True, {}, "probe")[0]
        assert mcp.transition_state(mcp_id, "late", "active", "serving", "ci") == (True, None)

    await asyncio.to_thread(server_registered_and_active)

    async def team_is(state: S) -> None:
        assert (await store.get_resource(team_id)).current_state is state  # type: ignore[union-attr]

    await assert_eventually(lambda: team_is(S.ACTIVE), timeout=15)

    deactivate = MCPStateManager(supabase).transition_state
    assert await asyncio.to_thread(
        deactivate, mcp_id, "late", "inactive", "maintenance", "ops"
    ) == (
        True,
        None,
    )
    await assert_eventually(lambda: team_is(S.AWAITING_DEPENDENCIES), timeout=15)
    last = (await store.list_transitions(team_id))[-1]
    assert last.reason == f"dependency not active: {mcp_id}" and last.actor == "rsm"

    retire = TeamStateManager(supabase).transition_state
    assert await asyncio.to_thread(retire, team_id, "ops-team", "archived", "done", "ops") == (
        True,
        None,
    )
    handle = client.get_workflow_handle(workflow_id_for("team", team_id))
    await handle.result()
    if os.environ.get("RSM_RECORD_HISTORIES") == "1":
        (HISTORIES / "reported_team_dependency_left_archived.json").write_text(
            (await handle.fetch_history()).to_json()
        )


async def test_small_misuses_get_named_refusals(supabase: StateClient, uid: str) -> None:
    def misuse() -> dict[str, Any]:
        team = TeamStateManager(supabase)
        wf = WorkflowStateManager(supabase)
        assert team.register_team(uid, "T", "ops", "crewai", "factory")[0]
        out: dict[str, Any] = {
            "deps_as_text": team.check_team_dependencies(uid, "T", "abc", "me"),  # type: ignore[arg-type]
            "deps_too_early": team.check_team_dependencies(uid, "T", ["x"], "me"),
            "self_dependency": team.add_deployment_requirement(uid, "dependency", uid),
        }
        out["self_dependency_error"] = team.last_error
        assert team.add_deployment_requirement(uid, "credential", "KEY")
        out["other_type"] = team.add_deployment_requirement(uid, "other", "KEY")
        out["other_type_error"] = team.last_error
        out["history_as_workflow"] = wf.get_state_history(uid)
        other = str(uuid.uuid4())
        assert wf.register_workflow(other, "W", "ops", "me")[0]
        assert wf.start_validation(other, "W", "v")[0]
        out["report_none"] = wf.complete_validation(other, "W", False, None, "v")  # type: ignore[arg-type]
        assert team.transition_state(uid, "T", "archived", "gone", "ops") == (True, None)
        out["archived_requirement"] = team.add_deployment_requirement(uid, "other", "late")
        out["archived_requirement_error"] = team.last_error
        return out

    out = await asyncio.to_thread(misuse)
    assert out["deps_as_text"] == (False, "dependencies must be a list of resource ids or names")
    assert out["deps_too_early"] == (
        False,
        f"team {uid} is registered: dependencies are checked once it is deployed",
    )
    assert out["self_dependency"] is False
    assert out["self_dependency_error"] == f"{uid} cannot depend on itself"
    assert out["other_type"] is False
    assert out["other_type_error"] == f"{uid} has a credential requirement named 'KEY' already"
    assert out["history_as_workflow"] == []
    assert out["report_none"] == (True, None)
    assert out["archived_requirement"] is False
    assert out["archived_requirement_error"] == f"team {uid} is archived"


def test_a_closed_or_misconfigured_client_fails_at_once_with_the_reason(
    supabase: StateClient, pg_dsn: str, client: Client
) -> None:
    bad = RsmSettings(
        RSM_DATABASE_URL=pg_dsn.rsplit("/", 1)[0] + "/nodb",
        RSM_TEMPORAL_ADDRESS=client.service_client.config.target_host,
    )
    with pytest.raises(StateManagerUnavailable, match='database "nodb" does not exist'):
        StateClient(bad, timeout=10)
    closed = StateClient(supabase.settings)
    closed.close()
    with pytest.raises(StateManagerUnavailable, match="closed"):
        StateTracker(closed).get_resource_overview()
    assert WorkflowStateManager(closed).start_validation("x", "x", "me") == (
        False,
        "this StateClient is closed",
    )


_CONNECT = """
import sys
from control.state_manager import StateClient, StateManagerUnavailable
from state.settings import RsmSettings
settings = RsmSettings(RSM_DATABASE_URL=sys.argv[1], RSM_TEMPORAL_ADDRESS=sys.argv[2])
try:
    StateClient(settings, timeout=1.5)
except StateManagerUnavailable as err:
    print(err)
"""


@pytest.mark.parametrize("silent", ["database", "temporal"])
def test_a_connection_that_never_answers_is_named_and_left_behind_cleanly(
    silent: str, pg_dsn: str, client: Client
) -> None:
    # A listening socket that never answers: the handshake completes, then nothing (a firewall
    # that drops, a wedged server). The timeout must say which one was silent, and the connection
    # still in flight must be cancelled, not destroyed pending when the process exits.
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)
        port = hole.getsockname()[1]
        database = f"postgresql://postgres:hunter2@127.0.0.1:{port}/rsm"
        temporal = f"127.0.0.1:{port}"
        args = (
            [database, client.service_client.config.target_host]
            if silent == "database"
            else [pg_dsn, temporal]
        )
        done = subprocess.run(
            [sys.executable, "-c", _CONNECT, *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
    assert done.returncode == 0, done.stderr
    expected = (
        f"no answer within 1.5s from the database at postgresql://postgres:***@127.0.0.1:{port}/rsm"
        if silent == "database"
        else f"no answer within 1.5s from Temporal at {temporal}"
    )
    assert done.stdout.strip() == expected
    assert "hunter2" not in done.stdout + done.stderr
    assert "Task was destroyed" not in done.stderr, done.stderr


async def test_the_usage_examples_script_runs_against_the_stack(
    supabase: StateClient, pg_dsn: str, client: Client, task_queue: str
) -> None:
    env = {
        **os.environ,
        "RSM_DATABASE_URL": pg_dsn,
        "RSM_TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "RSM_TASK_QUEUE": task_queue,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(REPO / "examples/seed/usage_examples.py"),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    text = out.decode()
    assert proc.returncode == 0, text + err.decode()
    assert "activate_workflow      success=True  error=None" in text
    assert "health_check           success=False" in text and "(refused, as expected)" in text
    assert "deployed -> active       admin@example.com    workflow activated" in text
    assert "building -> built        ci-system            image team-registry:v1.0 built" in text
