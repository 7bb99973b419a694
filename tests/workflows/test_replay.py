"""Replay the saved histories against today's workflow code: a behaviour change that is not guarded
by workflow.patched fails here with a non-determinism error.

Histories are recorded by the end-to-end tests with RSM_RECORD_HISTORIES=1 and kept in the repo.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from workers.worker import WORKFLOWS, sandbox_runner
from workflows.n8n_lifecycle import PATCH_FLUSH_AT_GATE, N8nLifecycleWorkflow
from workflows.operations import (
    PATCH_ACTIVATE_RECORDS_OPERATOR,
    PATCH_COMMAND_STEP_FAILURE_ANSWERED,
)
from workflows.reported_lifecycle import (
    PATCH_DEPENDENCY_LEFT,
    PATCH_REFUSED_REPORT,
    PATCH_RELOAD_GATES,
)
from workflows.team_lifecycle import (
    PATCH_ROLLBACK_KEEPS_RUNNING,
    PATCH_SERVICE_HEALTH,
    TeamLifecycleWorkflow,
)

FOLDER = Path(__file__).parent / "histories"
HISTORIES = sorted(FOLDER.glob("*.json"))
# A Kubernetes team recorded before the check through its Service existed, and two after.
TEAM_K8S_BEFORE = FOLDER / "team_kubernetes_before_service_check.json"
TEAM_K8S_AFTER = [
    FOLDER / "team_kubernetes_service_checked_scaled_archived.json",
    FOLDER / "team_kubernetes_service_unhealthy_archived.json",
]

# An approval-gated n8n workflow recorded before its requirements were mirrored at the gate, and after.
N8N_APPROVED_BEFORE = FOLDER / "n8n" / "n8n_approved_before_gate_flush_archived.json"
N8N_APPROVED_AFTER = FOLDER / "n8n" / "n8n_approved_archived.json"
# Lifecycles reported by the seed's managers, recorded before three behaviour changes (gates
# reloaded on a restart, a team following a dependency out of active, refused reports answered
# instead of failing the workflow task) and after.
REPORTED_BEFORE = [
    FOLDER / "reported_team_followed_dependency_archived.json",
    FOLDER / "reported_workflow_active_archived.json",
]
REPORTED_AFTER = [
    FOLDER / "reported_team_dependency_left_archived.json",
    FOLDER / "reported_workflow_restarted_reloaded_gates_archived.json",
]
REPORTED_PATCHES = {PATCH_RELOAD_GATES, PATCH_DEPENDENCY_LEFT, PATCH_REFUSED_REPORT}
# Rollbacks recorded before they kept the good version's running containers, and after.
TEAM_ROLLBACK_BEFORE = FOLDER / "team_approved_rolled_back_archived.json"
TEAM_ROLLBACK_AFTER = FOLDER / "team_rolled_back_kept_replicas_archived.json"
MCP_ROLLBACK_AFTER = FOLDER / "mcp_build_failed_rolled_back_kept_archived.json"


def test_there_are_histories_to_replay() -> None:
    assert {p.stem for p in HISTORIES} >= {
        "mcp_active_then_archived",
        "mcp_build_failed_retried_archived",
        TEAM_K8S_BEFORE.stem,
        *(p.stem for p in TEAM_K8S_AFTER),
        *(p.stem for p in HISTORIES if p.stem.startswith("team_")),
    }
    assert any(p.stem.startswith("team_") for p in HISTORIES)


def _scheduled(path: Path) -> list[str]:
    return [
        e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
        for e in json.loads(path.read_text())["events"]
        if "activityTaskScheduledEventAttributes" in e
    ]


def _patches(path: Path) -> set[str]:
    found = set()
    for event in json.loads(path.read_text())["events"]:
        marker = event.get("markerRecordedEventAttributes")
        if marker and marker.get("markerName") == "core_patch":
            for payload in marker["details"]["patch-data"]["payloads"]:
                found.add(json.loads(base64.b64decode(payload["data"]))["id"])
    return found


def _history(path: Path) -> WorkflowHistory:
    workflow_id = json.loads(path.read_text())["events"][0][
        "workflowExecutionStartedEventAttributes"
    ].get("workflowId", path.stem)
    return WorkflowHistory.from_json(workflow_id, path.read_text())


async def _replay_taking_patches(
    workflow_class: type, path: Path, taken: Callable[[str], bool]
) -> str:
    """Replay `path` with `workflow.patched` answering `taken(patch_id)`; the failure, or ""."""
    original = workflow.patched
    workflow.patched = lambda patch_id: taken(patch_id) or original(patch_id)  # type: ignore[assignment]
    try:
        replayer = Replayer(
            workflows=[workflow_class],
            data_converter=pydantic_data_converter,
            workflow_runner=UnsandboxedWorkflowRunner(),
        )
        result = await replayer.replay_workflow(_history(path), raise_on_replay_failure=False)
    finally:
        workflow.patched = original  # type: ignore[assignment]
    return str(result.replay_failure) if result.replay_failure is not None else ""


def test_the_team_service_check_is_recorded_behind_its_patch() -> None:
    assert "kubernetes_service_health" not in _scheduled(TEAM_K8S_BEFORE)
    assert PATCH_SERVICE_HEALTH not in _patches(TEAM_K8S_BEFORE)
    assert "kubernetes_wait_rollout" in _scheduled(TEAM_K8S_BEFORE)
    for path in TEAM_K8S_AFTER:
        assert "kubernetes_service_health" in _scheduled(path), path.stem
        assert PATCH_SERVICE_HEALTH in _patches(path), path.stem


async def test_without_its_patch_the_service_check_would_break_the_older_history() -> None:
    """The guard is what keeps the older history replaying: with every patch taken (as code
    without workflow.patched behaves), the new activity meets that history's next step and the
    replay fails with a non-determinism error."""
    failure = await _replay_taking_patches(TeamLifecycleWorkflow, TEAM_K8S_BEFORE, lambda _: True)
    assert "Nondeterminism" in failure and "'kubernetes_service_health'" in failure, failure


def test_the_n8n_gate_flush_is_recorded_behind_its_patch() -> None:
    assert PATCH_FLUSH_AT_GATE not in _patches(N8N_APPROVED_BEFORE)
    assert PATCH_FLUSH_AT_GATE in _patches(N8N_APPROVED_AFTER)
    for path in (N8N_APPROVED_BEFORE, N8N_APPROVED_AFTER):
        assert "record_requirement" in _scheduled(path), path.stem


async def test_without_its_patch_the_gate_flush_would_break_the_older_history() -> None:
    failure = await _replay_taking_patches(
        N8nLifecycleWorkflow, N8N_APPROVED_BEFORE, lambda _: True
    )
    assert "Nondeterminism" in failure, failure


def test_the_reported_lifecycle_changes_are_recorded_behind_their_patches() -> None:
    for path in REPORTED_BEFORE:
        assert not REPORTED_PATCHES & _patches(path), path.stem
        assert "list_requirements" not in _scheduled(path), path.stem
    for path in REPORTED_AFTER:
        assert REPORTED_PATCHES <= _patches(path), path.stem
    # The restarted lifecycle read its gates back from the store before anything else.
    assert _scheduled(REPORTED_AFTER[1])[:2] == ["register_resource", "list_requirements"]


def test_rollbacks_that_keep_running_containers_are_recorded_behind_their_patch() -> None:
    assert PATCH_ROLLBACK_KEEPS_RUNNING not in _patches(TEAM_ROLLBACK_BEFORE)
    assert "scale_team" not in _scheduled(TEAM_ROLLBACK_BEFORE)
    assert PATCH_ROLLBACK_KEEPS_RUNNING in _patches(TEAM_ROLLBACK_AFTER)
    assert _scheduled(TEAM_ROLLBACK_AFTER).count("scale_team") == 1
    assert PATCH_ROLLBACK_KEEPS_RUNNING in _patches(MCP_ROLLBACK_AFTER)


def test_activate_records_its_operator_behind_its_patch() -> None:
    path = FOLDER / "mcp_deactivated_activated_archived.json"
    assert PATCH_ACTIVATE_RECORDS_OPERATOR in _patches(path)
    assert PATCH_ACTIVATE_RECORDS_OPERATOR not in _patches(FOLDER / "mcp_active_then_archived.json")


def test_a_failed_command_step_is_answered_behind_its_patch() -> None:
    # The archive's kubernetes_delete had no worker; nothing was deployed, so it archived anyway.
    path = FOLDER / "mcp_kubernetes_without_worker_archived.json"
    assert PATCH_COMMAND_STEP_FAILURE_ANSWERED in _patches(path)
    assert _scheduled(path).count("kubernetes_delete") == 1
    assert PATCH_COMMAND_STEP_FAILURE_ANSWERED not in set().union(
        *(_patches(p) for p in HISTORIES if p != path)
    )


async def test_without_its_patch_the_team_rollback_would_break_the_older_history() -> None:
    # Only this patch taken: the history holds markers of older ones the code must still match.
    failure = await _replay_taking_patches(
        TeamLifecycleWorkflow,
        TEAM_ROLLBACK_BEFORE,
        lambda patch_id: patch_id == PATCH_ROLLBACK_KEEPS_RUNNING,
    )
    assert "Nondeterminism" in failure and "'scale_team'" in failure, failure


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_saved_history_replays_without_nondeterminism(path: Path) -> None:
    replayer = Replayer(
        workflows=list(WORKFLOWS),
        data_converter=pydantic_data_converter,
        workflow_runner=sandbox_runner(),
    )
    result = await replayer.replay_workflow(_history(path))
    assert result.replay_failure is None
