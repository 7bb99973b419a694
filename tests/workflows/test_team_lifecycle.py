"""The team lifecycle end to end on real components: Temporal dev server, Postgres, Docker, and the
example MCP server the example team depends on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import psycopg
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from control.client import CommandRefused, LifecycleClient
from control.team_client import register_team, team_status
from state.commands import OperatorCommand
from state.machines import ResourceState
from state.models import ApprovalPolicy, LifecyclePolicy, LifecycleResult, workflow_id_for
from state.postgres import PostgresStore
from state.settings import RsmSettings
from state.team_models import ManifestError, TeamStatus
from tests.conftest import EXAMPLES, REPO
from tests.helpers import assert_eventually, running_worker, unique_id
from tests.workflows.test_mcp_lifecycle import HISTORIES, settled, walk
from workers.images import BUSYBOX_IMAGE, PYTHON_MCP_IMAGE
from workers.worker import real_activities

S = ResourceState
TOOLBOX = EXAMPLES / "mcp/toolbox"
RESEARCH_TEAM = EXAMPLES / "teams/research-team"
PREFIX = "t-tm"  # every resource here; the cleanup removes only these containers
BUILT_WALK = [
    (None, S.CREATED),
    (S.CREATED, S.REGISTERED),
    (S.REGISTERED, S.BUILDING),
    (S.BUILDING, S.BUILT),
    (S.BUILT, S.DEPLOYING),
    (S.DEPLOYING, S.DEPLOYED),
]
# An agent in busybox: serves /healthz with httpd; with CRASH_REPLICA set, that replica exits at once.
BUSYBOX_AGENT = (
    f"FROM {BUSYBOX_IMAGE}\n"
    'CMD ["sh", "-c", "if [ \\"$RSM_REPLICA\\" = \\"$CRASH_REPLICA\\" ]; then '
    "echo missing MODEL_KEY >&2; exit 3; fi; mkdir -p /www && echo ok > /www/healthz && "
    'exec httpd -f -p 127.0.0.1:$PORT -h /www"]\n'
)


@pytest.fixture
async def lifecycle(
    client: Client,
    store: PostgresStore,
    task_queue: str,
    docker_client: docker.DockerClient,
) -> AsyncIterator[LifecycleClient]:
    settings = RsmSettings(task_queue=task_queue, mcp_base_image=PYTHON_MCP_IMAGE)
    async with running_worker(client, task_queue, real_activities(store, settings).all()):
        yield LifecycleClient(client, settings)


@pytest.fixture(autouse=True)
def _remove_team_containers(docker_client: docker.DockerClient) -> Iterator[None]:
    yield
    for container in docker_client.containers.list(all=True, filters={"label": "rsm.resource_id"}):
        if container.labels["rsm.resource_id"].startswith(PREFIX):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                container.remove(force=True)


def example_team(tmp_path: Path, mcp_id: str) -> Path:
    """The example team, copied, depending on this test's MCP server."""
    folder = tmp_path / "research-team"
    shutil.copytree(RESEARCH_TEAM, folder)
    manifest = folder / "team.yaml"
    text = manifest.read_text()
    assert "mcp_server/toolbox" in text
    manifest.write_text(text.replace("mcp_server/toolbox", f"mcp_server/{mcp_id}"))
    return manifest


def busybox_team(tmp_path: Path, body: str) -> Path:
    (tmp_path / "agent").mkdir(exist_ok=True)
    (tmp_path / "agent/Dockerfile").write_text(BUSYBOX_AGENT)
    manifest = tmp_path / "team.yaml"
    manifest.write_text(body)
    return manifest


def running(docker_client: docker.DockerClient, resource_id: str) -> dict[str, str]:
    """replica -> container id of the team's running containers."""
    return {
        c.labels["rsm.replica"]: c.id
        for c in docker_client.containers.list(filters={"label": f"rsm.resource_id={resource_id}"})
    }


async def in_state(
    lc: LifecycleClient, handle: WorkflowHandle[Any, Any], state: S, timeout: float = 180
) -> TeamStatus:
    async def check() -> TeamStatus:
        status = await team_status(handle)
        assert status.state is state, (status.state, status.failure_reason)
        return status

    return await assert_eventually(check, timeout=timeout, interval=0.1)


async def blocked_on_attribute(client: Client, value: str) -> list[str]:
    return [w.id async for w in client.list_workflows(f'BlockedOn="{value}"')]


async def awaiting(pg_dsn: str, rid: str) -> list[str] | None:
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cur = await conn.execute(
            "select waiting_on from resources_awaiting_action where resource_id = %s", (rid,)
        )
        row = await cur.fetchone()
    return None if row is None else sorted(row[0])


async def archive(lc: LifecycleClient, kind: str, rid: str) -> None:
    await lc.run_command(kind, rid, "archive", actor="test")
    handle = lc.client.get_workflow_handle(workflow_id_for(kind, rid), result_type=LifecycleResult)
    assert (await asyncio.wait_for(handle.result(), 60)).final_state is S.ARCHIVED


async def record_history(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """Like test_mcp_lifecycle.save_history (RSM_RECORD_HISTORIES=1 writes into the repo's replay
    histories); RSM_RECORD_HISTORIES=<folder> writes there instead, to try a replay first."""
    target = os.environ.get("RSM_RECORD_HISTORIES")
    if not target:
        return
    folder = HISTORIES if target == "1" else Path(target)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text((await handle.fetch_history()).to_json())


async def test_the_example_team_waits_for_its_mcp_server_and_follows_it_within_a_second(
    lifecycle: LifecycleClient,
    store: PostgresStore,
    client: Client,
    pg_dsn: str,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    mcp_id, team_id = unique_id(f"{PREFIX}-tbx"), unique_id(f"{PREFIX}-team")
    dependency = f"dependency:mcp_server/{mcp_id}"
    handle = await register_team(
        lifecycle, example_team(tmp_path, mcp_id), actor="alice", resource_id=team_id
    )
    status = await in_state(lifecycle, handle, S.AWAITING_DEPENDENCIES)
    assert status.blocked_on == [dependency]
    assert status.dependencies == {f"mcp_server/{mcp_id}": None}
    waiting_row = (await store.list_transitions(team_id))[-1]
    assert waiting_row.reason == f"waiting for mcp_server/{mcp_id} (not registered)"

    async def in_the_inbox() -> None:
        assert await blocked_on_attribute(client, dependency) == [handle.id]
        assert await awaiting(pg_dsn, team_id) == [dependency]

    await assert_eventually(in_the_inbox)
    # Deployed and healthy while it waits: both replicas answer.
    assert status.team is not None and [i.replica for i in status.team.instances] == [0, 1]
    async with httpx.AsyncClient() as http:
        for instance in status.team.instances:
            answer = (await http.get(instance.endpoint + "/healthz")).json()
            assert answer == {"status": "ok", "replica": str(instance.replica)}

    mcp = await lifecycle.register_mcp(TOOLBOX, resource_id=mcp_id, actor="alice")
    assert (await settled(lifecycle, mcp)).state is S.ACTIVE
    active = await in_state(lifecycle, handle, S.ACTIVE, timeout=10)
    assert active.blocked_on == []

    mcp_active = [t for t in await store.list_transitions(mcp_id) if t.to_state is S.ACTIVE][-1]
    team_rows = await store.list_transitions(team_id)
    assert [(t.from_state, t.to_state) for t in team_rows] == [
        *BUILT_WALK,
        (S.DEPLOYED, S.AWAITING_DEPENDENCIES),
        (S.AWAITING_DEPENDENCIES, S.ACTIVE),
    ]
    team_active = team_rows[-1]
    latency = (team_active.recorded_at - mcp_active.recorded_at).total_seconds()
    print(f"\ndependency active -> team active: {latency * 1000:.0f} ms")
    assert 0 < latency < 1.0
    assert team_active.reason == f"healthy; every dependency is active: mcp_server/{mcp_id}"

    async def out_of_the_inbox() -> None:
        assert await blocked_on_attribute(client, dependency) == []
        assert await awaiting(pg_dsn, team_id) is None

    await assert_eventually(out_of_the_inbox)

    # scale 2 -> 3 (an update, answered at once) -> 1 (a signal): the instances that run are kept.
    before = running(docker_client, team_id)
    assert sorted(before) == ["0", "1"]
    result = await lifecycle.run_command("team", team_id, "scale", actor="ops", replicas=3)
    assert result.accepted

    async def scaled(to: int, times: int) -> TeamStatus:
        rows = await walk(store, team_id)
        assert rows.count((S.SCALING, S.ACTIVE)) == times
        status = await team_status(handle)
        assert status.state is S.ACTIVE and status.replicas == to
        return status

    await assert_eventually(lambda: scaled(3, 1), timeout=60)
    three = running(docker_client, team_id)
    assert sorted(three) == ["0", "1", "2"]
    assert {k: three[k] for k in before} == before
    with pytest.raises(CommandRefused, match="the team runs 3 replicas already"):
        await lifecycle.run_command("team", team_id, "scale", actor="ops", replicas=3)

    await handle.signal("scale", OperatorCommand(command="scale", actor="ops", replicas=1))
    one = await assert_eventually(lambda: scaled(1, 2), timeout=60)
    assert running(docker_client, team_id) == {"0": before["0"]}
    assert one.team is not None and len(one.team.instances) == 1
    scale_down = (await store.list_transitions(team_id))[-1]
    assert scale_down.metadata["removed"] == [1, 2] and scale_down.metadata["started"] == []
    assert (await walk(store, team_id))[-4:] == [
        (S.ACTIVE, S.SCALING),
        (S.SCALING, S.ACTIVE),
        (S.ACTIVE, S.SCALING),
        (S.SCALING, S.ACTIVE),
    ]

    await archive(lifecycle, "team", team_id)
    assert running(docker_client, team_id) == {}
    await record_history(handle, "team_awaited_dependency_scaled_archived")
    await archive(lifecycle, "mcp_server", mcp_id)


async def test_a_team_registered_after_its_dependency_is_active_never_waits_and_follows_it(
    lifecycle: LifecycleClient,
    store: PostgresStore,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    mcp_id, team_id = unique_id(f"{PREFIX}-tbx"), unique_id(f"{PREFIX}-team")
    mcp = await lifecycle.register_mcp(TOOLBOX, resource_id=mcp_id, actor="alice")
    assert (await settled(lifecycle, mcp)).state is S.ACTIVE
    handle = await register_team(
        lifecycle, example_team(tmp_path, mcp_id), actor="alice", resource_id=team_id
    )
    await in_state(lifecycle, handle, S.ACTIVE)
    assert await walk(store, team_id) == [*BUILT_WALK, (S.DEPLOYED, S.ACTIVE)]

    with pytest.raises(
        CommandRefused, match=f"cannot archive: active dependents resource/team/{team_id}"
    ):
        await lifecycle.run_command("mcp_server", mcp_id, "archive", actor="ops")

    # The dependency leaves `active`: the team waits again (its instances keep running) ...
    instances = running(docker_client, team_id)
    await lifecycle.run_command("mcp_server", mcp_id, "deactivate", actor="ops")
    waiting = await in_state(lifecycle, handle, S.AWAITING_DEPENDENCIES, timeout=30)
    assert waiting.blocked_on == [f"dependency:mcp_server/{mcp_id}"]
    left = (await store.list_transitions(team_id))[-1]
    assert (left.from_state, left.reason) == (
        S.ACTIVE,
        f"mcp_server/{mcp_id} (inactive) no longer active",
    )
    assert running(docker_client, team_id) == instances

    # ... and comes back with it.
    await lifecycle.run_command("mcp_server", mcp_id, "activate", actor="ops")
    await in_state(lifecycle, handle, S.ACTIVE, timeout=60)
    back = (await store.list_transitions(team_id))[-1]
    assert (back.from_state, back.reason) == (
        S.AWAITING_DEPENDENCIES,
        f"every dependency is active again: mcp_server/{mcp_id}",
    )

    await archive(lifecycle, "team", team_id)
    assert running(docker_client, team_id) == {}
    await record_history(handle, "team_followed_dependency_archived")
    await archive(lifecycle, "mcp_server", mcp_id)


async def test_a_team_whose_instance_crashes_fails_naming_that_instance(
    lifecycle: LifecycleClient, store: PostgresStore, tmp_path: Path
) -> None:
    team_id = unique_id(f"{PREFIX}-crash")
    manifest = busybox_team(
        tmp_path,
        "name: crashy\nowner: qa\nbuild: agent\nreplicas: 2\nhealth_path: /healthz\n"
        "env: {CRASH_REPLICA: '1'}\n",
    )
    handle = await register_team(lifecycle, manifest, resource_id=team_id)
    status = await settled(lifecycle, handle)
    assert status.state is S.FAILED
    team = (await team_status(handle)).team
    assert team is not None
    crashed = team.instances[1].container_id[:12]
    assert status.failure_reason == (
        f"1 of 2 instances unhealthy: replica 1 ({crashed}) exited with code 3: missing MODEL_KEY"
    )
    failed = (await store.list_transitions(team_id))[-1]
    assert (failed.from_state, failed.to_state) == (S.DEPLOYING, S.FAILED)
    assert failed.metadata["error_type"] == "TeamUnhealthy"
    replica_1 = failed.metadata["instances"][1]
    assert (replica_1["healthy"], replica_1["detail"]) == (
        False,
        "exited with code 3: missing MODEL_KEY",
    )

    await lifecycle.run_command("team", team_id, "retry", actor="bob")

    async def failed_twice() -> None:
        assert [t for _, t in await walk(store, team_id)].count(S.FAILED) == 2

    await assert_eventually(failed_twice, timeout=60)
    await archive(lifecycle, "team", team_id)


async def test_an_image_team_is_gated_by_approval_and_rolls_back_a_bad_redeploy(
    lifecycle: LifecycleClient,
    store: PostgresStore,
    docker_api: docker.APIClient,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    team_id = unique_id(f"{PREFIX}-img")
    busybox_team(tmp_path, "")
    good, bad = f"rsm/{team_id}:good", f"rsm/{team_id}:bad"
    for tag, crash in ((good, "none"), (bad, "0")):
        (tmp_path / "agent/Dockerfile").write_text(BUSYBOX_AGENT + f"ENV CRASH_REPLICA={crash}\n")
        for chunk in docker_api.build(path=str(tmp_path / "agent"), tag=tag, decode=True):
            assert "error" not in chunk, chunk
    manifest = busybox_team(
        tmp_path, f"name: imaged\nowner: qa\nimage: {good}\nhealth_path: /healthz\n"
    )
    policy = LifecyclePolicy(approval=ApprovalPolicy(required=True, approvers=["dana"]))
    try:
        handle = await register_team(
            lifecycle, manifest, actor="alice", policy=policy, resource_id=team_id
        )

        async def at_gate() -> None:
            status = await team_status(handle)
            assert (status.state, status.blocked_on) == (S.DEPLOYED, ["approval"])

        await assert_eventually(at_gate, timeout=60)
        rows = await store.list_transitions(team_id)
        assert rows[2].reason == f"image {good} given: nothing to build"
        assert rows[3].metadata == {"image": good}
        with pytest.raises(CommandRefused, match="alice registered this resource"):
            await lifecycle.approve("team", team_id, "alice")
        await lifecycle.approve("team", team_id, "dana", "looks fine")
        await in_state(lifecycle, handle, S.ACTIVE, timeout=30)
        assert (await store.list_transitions(team_id))[-1].actor == "dana"

        # A redeploy whose instance crashes fails, then returns to the last good image by itself.
        await lifecycle.run_command("team", team_id, "redeploy", actor="ops", version=bad)

        async def rolled_back() -> None:
            assert (await walk(store, team_id))[-1] == (S.DEPLOYED, S.ACTIVE)
            assert S.FAILED in [t for _, t in await walk(store, team_id)]

        await assert_eventually(rolled_back, timeout=60)
        status = await team_status(handle)
        assert (status.version, status.bad_versions) == (good, [bad])
        assert status.team is not None and status.team.image == good
        rows = await store.list_transitions(team_id)
        failure = next(t for t in rows if t.to_state is S.FAILED)
        assert "replica 0" in failure.reason and "exited with code 3" in failure.reason
        assert [(t.from_state, t.to_state) for t in rows[-9:]] == [
            (S.ACTIVE, S.BUILDING),
            (S.BUILDING, S.BUILT),
            (S.BUILT, S.DEPLOYING),
            (S.DEPLOYING, S.FAILED),
            (S.FAILED, S.BUILDING),
            (S.BUILDING, S.BUILT),
            (S.BUILT, S.DEPLOYING),
            (S.DEPLOYING, S.DEPLOYED),
            (S.DEPLOYED, S.ACTIVE),
        ]
        assert rows[-5].metadata == {"rollback_to": good, "bad_version": bad}
        with pytest.raises(CommandRefused, match=f"version {bad} failed before"):
            await lifecycle.run_command("team", team_id, "redeploy", actor="ops", version=bad)
        assert len(running(docker_client, team_id)) == 1
        await archive(lifecycle, "team", team_id)
        await record_history(handle, "team_approved_rolled_back_archived")
    finally:
        for tag in (good, bad):
            with contextlib.suppress(docker.errors.APIError):
                docker_client.images.remove(tag, force=True)


async def test_a_redeploy_that_fails_before_replacing_anything_leaves_the_replicas_serving(
    lifecycle: LifecycleClient,
    store: PostgresStore,
    docker_api: docker.APIClient,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    team_id = unique_id(f"{PREFIX}-keep")
    busybox_team(tmp_path, "")
    good = f"rsm/{team_id}:good"
    for chunk in docker_api.build(path=str(tmp_path / "agent"), tag=good, decode=True):
        assert "error" not in chunk, chunk
    manifest = busybox_team(
        tmp_path, f"name: kept\nowner: qa\nimage: {good}\nreplicas: 2\nhealth_path: /healthz\n"
    )
    try:
        handle = await register_team(lifecycle, manifest, actor="alice", resource_id=team_id)
        await in_state(lifecycle, handle, S.ACTIVE, timeout=60)
        serving = running(docker_client, team_id)
        assert len(serving) == 2

        # An image the engine does not have fails the deploy before any replica is touched.
        missing = f"rsm/{team_id}:missing"
        await lifecycle.run_command("team", team_id, "redeploy", actor="ops", version=missing)

        async def rolled_back() -> None:
            walked = [t for _, t in await walk(store, team_id)]
            assert walked[-1] is S.ACTIVE and S.FAILED in walked, walked

        await assert_eventually(rolled_back, timeout=60)
        assert running(docker_client, team_id) == serving
        status = await team_status(handle)
        assert (status.version, status.bad_versions) == (good, [missing])
        failure = next(t for t in await store.list_transitions(team_id) if t.to_state is S.FAILED)
        assert missing in failure.reason
        await archive(lifecycle, "team", team_id)
        await record_history(handle, "team_rolled_back_kept_replicas_archived")
    finally:
        with contextlib.suppress(docker.errors.APIError):
            docker_client.images.remove(good, force=True)


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ("owner: qa\nimage: x\n", "name", "name: is required"),
        ("name: t\nimage: x\n", "owner", "owner: is required"),
        ("name: t\nowner: qa\n", "build", "give exactly one of `build`"),
        ("name: t\nowner: qa\nimage: x\nbuild: agent\n", "build", "not both"),
        ("name: t\nowner: qa\nbuild: nowhere\n", "build", "nowhere is not a directory"),
        ("name: t\nowner: qa\nimage: x\nreplicas: 0\n", "replicas", "between 1 and 20, got 0"),
        ("name: t\nowner: qa\nimage: x\nreplicas: 50\n", "replicas", "between 1 and 20, got 50"),
        (
            "name: t\nowner: qa\nimage: x\ndepends_on: [toolbox]\n",
            "depends_on[0]",
            "'toolbox' is not a resource ref",
        ),
        (
            "name: t\nowner: qa\nimage: x\ndepends_on: [{type: database, id: pg}]\n",
            "depends_on[0]",
            "unknown resource type 'database'",
        ),
        ("name: t\nowner: qa\nimage: x\nreplica: 2\n", "replica", "is not a manifest field"),
        ("name: Research Team\nowner: qa\nimage: x\n", "name", "is not a valid id"),
        ("name: [unclosed\n", None, "not valid YAML"),
    ],
)
async def test_a_bad_manifest_is_refused_naming_the_field(
    client: Client, tmp_path: Path, body: str, field: str | None, message: str
) -> None:
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent/Dockerfile").write_text(BUSYBOX_AGENT)
    manifest = tmp_path / "team.yaml"
    manifest.write_text(body)
    lc = LifecycleClient(client, RsmSettings(task_queue=unique_id("tq")))
    rid = unique_id(f"{PREFIX}-bad")
    with pytest.raises(ManifestError) as refused:
        await register_team(lc, manifest, resource_id=rid)
    assert refused.value.field == field
    assert message in str(refused.value)
    assert str(refused.value).startswith(f"team manifest {manifest}: ")
    with pytest.raises(RPCError, match="not found"):
        await lc.handle("team", rid).describe()


async def test_a_team_that_depends_on_itself_is_refused_before_anything_starts(
    client: Client, tmp_path: Path
) -> None:
    lc = LifecycleClient(client, RsmSettings(task_queue=unique_id("tq")))
    named = unique_id(f"{PREFIX}-self")
    given = unique_id(f"{PREFIX}-self")
    # Under its manifest name, and under the id given at registration: both would wait forever.
    for rid, ref in ((None, named), (given, given)):
        manifest = busybox_team(
            tmp_path,
            f"name: {named}\nowner: qa\nimage: x\ndepends_on: [mcp_server/toolbox, team/{ref}]\n",
        )
        with pytest.raises(ManifestError) as refused:
            await register_team(lc, manifest, resource_id=rid)
        assert refused.value.field == "depends_on[1]"
        assert str(refused.value) == (
            f"team manifest {manifest}: depends_on[1]: team/{ref} is this team: a team cannot"
            " wait for itself"
        )
        with pytest.raises(RPCError, match="not found"):
            await lc.handle("team", ref).describe()


async def test_rsm_register_team_follows_to_active_and_names_a_bad_field(
    lifecycle: LifecycleClient,
    temporal_env: WorkflowEnvironment,
    pg_dsn: str,
    task_queue: str,
    tmp_path: Path,
) -> None:
    team_id = unique_id(f"{PREFIX}-cli")
    manifest = busybox_team(
        tmp_path, "name: cli-team\nowner: qa\nbuild: agent\nreplicas: 2\nhealth_path: /healthz\n"
    )
    env = {
        **os.environ,
        "RSM_TASK_QUEUE": task_queue,
        "RSM_TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "RSM_DATABASE_URL": pg_dsn,
    }

    async def rsm(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            # main() leaves through os._exit (the Temporal runtime may abort at interpreter exit).
            "import sys, control.cli_team; from workers.main import main; sys.argv[0] = 'rsm'; main()",
            *args,
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        return proc.returncode or 0, out.decode(), err.decode()

    code, out, err = await rsm("register", "team", str(manifest), "--id", team_id, "--wait")
    assert code == 0, (out, err)
    assert f"registered resource/team/{team_id}" in out
    assert "deployed" in out and f"resource/team/{team_id} is active" in out
    assert "replica 0: http://127.0.0.1:" in out and "replica 1: http://127.0.0.1:" in out

    # Waiting on a dependency: each moment's blocker is printed; the wait times out (exit 2).
    waiting_id, missing = unique_id(f"{PREFIX}-cliw"), unique_id(f"{PREFIX}-none")
    manifest.write_text(
        f"name: cli-team\nowner: qa\nbuild: agent\ndepends_on: [mcp_server/{missing}]\n"
    )
    code, out, err = await rsm(
        "register", "team", str(manifest), "--id", waiting_id, "--wait", "--timeout", "6"
    )
    assert code == 2, (out, err)
    assert f"awaiting_dependencies waiting for mcp_server/{missing} (not registered)" in " ".join(
        out.split()
    )
    assert f"… blocked on: dependency:mcp_server/{missing}" in out
    assert f"timed out after 6s; still running, waiting on dependency:mcp_server/{missing}" in err
    await archive(lifecycle, "team", waiting_id)

    code, out, err = await rsm("register", "team", str(manifest), "--wait", "--timeout", "-3")
    assert code == 2 and "Invalid value for '--timeout'" in err and "Traceback" not in err

    manifest.write_text("name: cli-team\nowner: qa\nbuild: agent\nreplicas: 0\n")
    code, out, err = await rsm("register", "team", str(manifest), "--id", unique_id(PREFIX))
    assert code == 1
    assert err.strip() == (
        f"error: team manifest {manifest}: replicas: must be between 1 and 20, got 0"
    )
    await archive(lifecycle, "team", team_id)
