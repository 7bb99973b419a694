"""Replay the saved histories against today's workflow code: a behaviour change that is not guarded
by workflow.patched fails here with a non-determinism error.

Histories are recorded by the end-to-end tests with RSM_RECORD_HISTORIES=1 and kept in the repo.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workers.worker import WORKFLOWS, sandbox_runner

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_there_are_histories_to_replay() -> None:
    assert {p.stem for p in HISTORIES} >= {
        "mcp_active_then_archived",
        "mcp_build_failed_retried_archived",
        *(p.stem for p in HISTORIES if p.stem.startswith("team_")),
    }
    assert any(p.stem.startswith("team_") for p in HISTORIES)


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_saved_history_replays_without_nondeterminism(path: Path) -> None:
    workflow_id = json.loads(path.read_text())["events"][0][
        "workflowExecutionStartedEventAttributes"
    ].get("workflowId", path.stem)
    replayer = Replayer(
        workflows=list(WORKFLOWS),
        data_converter=pydantic_data_converter,
        workflow_runner=sandbox_runner(),
    )
    result = await replayer.replay_workflow(
        WorkflowHistory.from_json(workflow_id, path.read_text())
    )
    assert result.replay_failure is None
