"""The `rsm` command as a user runs it: a real process against the session's Temporal and Postgres,
with a worker in the test."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from control.cli_output import _print_transition
from control.client import LifecycleClient
from state.machines import ResourceState, ResourceType, machine_for
from state.models import RegisterResourceRequest, ResourceRef, TransitionView
from state.postgres import PostgresStore
from state.settings import RsmSettings
from tests.conftest import EXAMPLES, REPO
from tests.helpers import running_worker, unique_id
from workers.images import BUSYBOX_IMAGE, PYTHON_MCP_IMAGE
from workers.worker import real_activities


class Cli:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    async def __call__(self, *args: str, timeout: float = 120) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "workers.main",
            *args,
            cwd=REPO,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def rsm(
    temporal_env: WorkflowEnvironment,
    client: Client,
    store: PostgresStore,
    pg_dsn: str,
    task_queue: str,
    docker_engine: object,
) -> AsyncIterator[Cli]:
    settings = RsmSettings(task_queue=task_queue, mcp_base_image=PYTHON_MCP_IMAGE)
    env = {
        **os.environ,
        "RSM_TASK_QUEUE": task_queue,
        "RSM_TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "RSM_DATABASE_URL": pg_dsn,
        "RSM_TEMPORAL_UI_URL": "http://127.0.0.1:8233",
    }
    async with running_worker(client, task_queue, real_activities(store, settings).all()):
        yield Cli(env)


async def archive(client: Client, task_queue: str, rid: str) -> None:
    lc = LifecycleClient(client, RsmSettings(task_queue=task_queue))
    handle = lc.handle("mcp_server", rid)
    await lc.command(handle, "archive", actor="test")
    await asyncio.wait_for(handle.result(), 60)


async def test_register_wait_reaches_active_and_status_history_read_the_database(
    rsm: Cli, client: Client, task_queue: str, tmp_path: Path
) -> None:
    rid = unique_id("t-cli")
    code, out, err = await rsm(
        "register", "mcp", str(EXAMPLES / "mcp/toolbox"), "--id", rid, "--actor", "carol", "--wait"
    )
    assert code == 0, err
    link = f"http://127.0.0.1:8233/namespaces/default/workflows/resource%2Fmcp_server%2F{rid}"
    assert link in out
    for state in (
        "registered",
        "building",
        "built",
        "deploying",
        "deployed",
        "health_checking",
        "available",
        "active",
    ):
        assert f"→ {state}" in out, state
    assert f"resource/mcp_server/{rid} is active at http://127.0.0.1:" in out

    # Registering again is harmless: same workflow, no new history.
    code, out, _ = await rsm(
        "register", "mcp", str(EXAMPLES / "mcp/toolbox"), "--id", rid, "--wait"
    )
    assert code == 0 and "is active at" in out

    code, out, _ = await rsm("history", rid, "--json")
    rows = json.loads(out)
    assert [r["to_state"] for r in rows] == [
        "created",
        "registered",
        "building",
        "built",
        "deploying",
        "deployed",
        "health_checking",
        "available",
        "active",
    ]
    assert rows[1]["actor"] == "carol" and rows[2]["actor"] == "rsm"

    code, out, _ = await rsm("history", rid)
    assert code == 0 and "→ active" in out and "carol" in out
    assert link in out

    code, out, _ = await rsm("status", rid, "--json")
    details = json.loads(out)
    assert details["current_state"] == "active"
    assert details["mcp"]["tools"] == ["add", "utc_now", "word_count"]
    assert details["temporal_ui"] == link

    code, out, _ = await rsm("status", "--state", "active")
    assert code == 0 and rid in out
    code, out, err = await rsm("command", rid, "deactivate", "--wait", "--timeout", "60")
    assert code == 0, out + err
    assert [line.split()[1:4] for line in out.splitlines() if "→" in line] == [
        ["active", "→", "inactive"]
    ]
    assert f"resource/mcp_server/{rid} is inactive" in out
    # A long command: answered as it starts, followed through every step to active.
    code, out, err = await rsm("command", rid, "activate", "--wait", "--timeout", "60")
    assert code == 0, out + err
    arrows = [line.split()[1:4] for line in out.splitlines() if "→" in line]
    assert arrows[0] == ["inactive", "→", "deploying"] and arrows[-1] == [
        "available",
        "→",
        "active",
    ]
    assert f"resource/mcp_server/{rid} is active" in out

    # A redeploy whose build fails rolls back by itself: followed, that is a failure (exit 1).
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "Dockerfile").write_text(f"FROM {BUSYBOX_IMAGE}\nRUN echo no compiler >&2; exit 3\n")
    code, out, err = await rsm(
        "command", rid, "redeploy", "--path", str(broken), "--wait", "--timeout", "120"
    )
    assert code == 1, out + err
    arrows = [line.split()[1:4] for line in out.splitlines() if "→" in line]
    assert arrows[:2] == [["active", "→", "building"], ["building", "→", "failed"]], out
    assert arrows[-1] == ["available", "→", "active"], out
    assert "failed (The command '/bin/sh -c echo no compiler >&2; exit 3' returned" in err
    assert "back on version" in err and "(active)" in err
    await archive(client, task_queue, rid)


async def test_register_wait_exits_non_zero_with_the_reason_when_the_build_fails(
    rsm: Cli, client: Client, task_queue: str, tmp_path: Path
) -> None:
    tmp_path.joinpath("Dockerfile").write_text(f"FROM {BUSYBOX_IMAGE}\nRUN sleep 0.3; exit 7\n")
    rid = unique_id("t-clifail")
    code, out, err = await rsm("register", "mcp", str(tmp_path), "--id", rid, "--wait")
    assert code == 1
    assert "→ failed" in out
    assert (
        f"resource/mcp_server/{rid} failed: The command '/bin/sh -c sleep 0.3; exit 7' returned a non-zero code: 7"
        in err
    )
    assert f"`rsm command {rid} retry` tries again" in out
    code, out, err = await rsm("status", rid)
    assert code == 0, err
    assert (
        "  why:      The command '/bin/sh -c sleep 0.3; exit 7' returned a non-zero code: 7" in out
    )
    assert f"  next:     rsm command {rid} retry | redeploy | archive" in out
    assert "None" not in out

    # A retry that fails again says so when followed (without --wait it only says it started).
    code, out, err = await rsm("command", rid, "retry", "--wait", "--timeout", "120")
    assert code == 1, out + err
    arrows = [line.split()[1:4] for line in out.splitlines() if "→" in line]
    assert arrows == [
        ["failed", "→", "registered"],
        ["registered", "→", "building"],
        ["building", "→", "failed"],
    ], out
    assert f"resource/mcp_server/{rid} failed: The command" in err
    await archive(client, task_queue, rid)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["register", "mcp", "/nonexistent/dir"], "/nonexistent/dir is not a directory"),
        (["register", "mcp", str(REPO / "state")], "has no Dockerfile"),
        (["history", "no-such-resource"], "no resource 'no-such-resource'"),
        (["status", "no-such-resource"], "no resource 'no-such-resource'"),
        (["command", "x", "explode"], "unknown command 'explode'"),
        (
            ["register", "mcp", str(EXAMPLES / "mcp/toolbox"), "--id", "Bad Id/1"],
            "error: invalid input: resource_id: 'Bad Id/1' is not a valid id: lowercase letters,"
            " digits, '.', '_' and '-', starting with a letter or digit, at most 63 characters",
        ),
        (
            ["register", "mcp", str(EXAMPLES / "mcp/toolbox"), "--id", ""],
            "error: --id must not be empty; an id is lowercase letters",
        ),
        (["command", "x", "scale"], "error: scale needs --replicas N"),
    ],
)
async def test_bad_input_gets_a_clear_error_and_no_traceback(
    rsm: Cli, args: list[str], message: str
) -> None:
    code, out, err = await rsm(*args)
    assert code == 1
    assert message in err
    assert "Traceback" not in out + err


async def test_an_unreachable_database_is_named(rsm: Cli) -> None:
    rsm.env["RSM_DATABASE_URL"] = "postgresql://postgres@127.0.0.1:1/rsm"
    code, _, err = await rsm("status")
    assert code == 1
    assert "cannot connect to Postgres at postgresql://postgres@127.0.0.1:1/rsm" in err
    assert err.rstrip().endswith("(is `rsm dev up` running?)")
    assert "Traceback" not in err


def test_transition_arrows_line_up_for_every_state_name(capsys: pytest.CaptureFixture[str]) -> None:
    # awaiting_dependencies is wider than the 16 columns the history once had: its arrow drifted.
    at = datetime(2026, 12, 4, 16, 35, tzinfo=UTC)
    for to_state in ResourceState:
        _print_transition(
            TransitionView(
                from_state=ResourceState.AWAITING_DEPENDENCIES,
                to_state=to_state,
                actor="rsm",
                reason="why",
                at=at,
            )
        )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(ResourceState)
    assert len({line.index("→") for line in lines}) == 1
    assert len({line.index("why") for line in lines}) == 1


async def test_factory_registered_servers_print_no_none_and_their_tables_line_up(
    rsm: Cli, store: PostgresStore
) -> None:
    # What a factory's register_mcp leaves before its build: no version, no endpoint, no handshake.
    ref = ResourceRef(resource_type=ResourceType.MCP_SERVER, resource_id=unique_id("t-bare"))
    await store.register_resource(
        RegisterResourceRequest(
            ref=ref,
            name=ref.resource_id,
            workflow_id=ref.workflow_id,
            actor="mcp-factory",
            machine_version=machine_for(ResourceType.MCP_SERVER).version,
        )
    )
    code, out, err = await rsm("status", ref.resource_id)
    assert code == 0, err
    assert "None" not in out
    assert "  version:  -\n" in out
    assert "  endpoint: -  image -\n" in out
    assert "registered by mcp-factory" in out

    # The seed's factories name resources by UUID (36 characters): the tables still line up.
    tag = unique_id("t-tbl")
    for rid in (f"{tag}-{uuid.uuid4()}", f"{tag}-x"):
        await store.register_resource(
            RegisterResourceRequest(
                ref=ResourceRef(resource_type=ResourceType.MCP_SERVER, resource_id=rid),
                name=rid,
                owner_team="marketing-team-of-many",
                workflow_id=rid,
                actor="mcp-factory",
                machine_version=machine_for(ResourceType.MCP_SERVER).version,
            )
        )
    for command in (("ls", "--search", tag), ("status", "--type", "mcp_server")):
        code, out, err = await rsm(*command)
        assert code == 0, err
        lines = [line for line in out.splitlines() if line.startswith(("ID ", tag))]
        assert len(lines) == 3, out
        for column in ("TYPE", "STATE", "OWNER", "UPDATED"):
            at = lines[0].index(column)
            assert all(line[at - 1] == " " and line[at] != " " for line in lines[1:]), (column, out)
