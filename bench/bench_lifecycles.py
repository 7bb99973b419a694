"""Lifecycle throughput: N MCP-shaped lifecycles beside N bare workflows, on one server, in one run.

The MCP-shaped side is the real `McpLifecycleWorkflow` with the worker's real store activities
(`TransitionRecorder`, `GateActivities`) writing to a real Postgres; only the Docker/MCP side effects
(build_image, deploy, health_check, stop_runtime) are replaced by activities that answer at once
under the same names. The bare side is a workflow that runs as many no-op activities in sequence as
one MCP lifecycle runs on its way to `active` (counted from a warm-up lifecycle's history, not
assumed). Both are timed by the server's clock, from a phase's first start to its last history
event. The ratio of the two throughputs is what the lifecycle machinery costs: payload models,
idempotent recording in Postgres, search-attribute upserts.

The process starts its own Temporal dev server (in memory) and its own throwaway Postgres on free
127.0.0.1 ports and stops both at the end, also on error or Ctrl-C. The bare baseline runs before and
after the MCP phase so that warm-up or drift shows up as two different ratios instead of one skewed
one.

    python -m bench.bench_lifecycles --n 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, cast

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

# The sandbox re-imports this module for every bare workflow run: everything but the workflow's own
# code comes from the host's modules (cheap, and nothing here runs inside a workflow).
with workflow.unsafe.imports_passed_through():
    import psycopg
    from temporalio.client import Client, WorkflowHandle
    from temporalio.common import (
        SearchAttributePair,
        TypedSearchAttributes,
        WorkflowIDConflictPolicy,
    )
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from activities.docker_build import DockerImageBuilder
    from activities.docker_runtime import LocalDockerRuntime
    from activities.mcp_health import McpHealthChecker
    from state.errors import StoreError
    from state.machines import ResourceState, ResourceType
    from state.models import (
        BuildImageRequest,
        BuildImageResult,
        DeploymentInfo,
        DeployRequest,
        HealthCheckRequest,
        McpHealthResult,
        McpLifecycleInput,
        McpServerSpec,
        ResourceRef,
        StopRuntimeRequest,
    )
    from state.postgres import PostgresStore, apply_migrations
    from state.settings import RsmSettings
    from workers.services.postgres import PostgresServer
    from workers.services.process import ServiceError, free_port
    from workers.services.temporal import temporal_cli
    from workers.worker import new_worker, real_activities
    from workflows.mcp_lifecycle import McpLifecycleWorkflow
    from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES
    from workflows.search_attributes import OWNER_TEAM, RESOURCE_STATE, RESOURCE_TYPE

# The same options the lifecycle gives its store activities, so the bare side is not cheaper by
# configuration.
NOOP_TIMEOUT = timedelta(seconds=30)
NOOP_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=500))
OWNER = "bench"
STALL_SECONDS = 30.0


class BenchError(RuntimeError):
    """The benchmark could not produce a figure (a lifecycle failed, a phase timed out)."""


# -- the bare side --------------------------------------------------------------------------------


@activity.defn(name="bench_noop")
async def noop(step: int) -> int:
    return step


@workflow.defn(name="BenchBareWorkflow")
class BareWorkflow:
    @workflow.run
    async def run(self, activities: int) -> int:
        for step in range(activities):
            await workflow.execute_activity(
                noop, step, start_to_close_timeout=NOOP_TIMEOUT, retry_policy=NOOP_RETRY
            )
        return activities


# -- the MCP side: instant adapters under the real activity names ----------------------------------


class InstantMcpRuntime:
    """build_image/deploy/health_check/stop_runtime that succeed at once with valid results."""

    @activity.defn(name="build_image")
    async def build_image(self, req: BuildImageRequest) -> BuildImageResult:
        return BuildImageResult(
            image=f"rsm/{req.name}:{req.version}",
            image_id=f"sha256:{req.resource_id}",
            duration_seconds=0.0,
        )

    @activity.defn(name="deploy")
    async def deploy(self, req: DeployRequest) -> DeploymentInfo:
        return DeploymentInfo(
            runtime="bench",
            runtime_ref=f"bench-{req.resource_id}",
            # Never contacted: health_check below answers without a connection.
            endpoint=f"http://127.0.0.1:9{req.mcp_path}",
            image=req.image,
            version=req.version,
        )

    @activity.defn(name="health_check")
    async def health_check(self, req: HealthCheckRequest) -> McpHealthResult:
        return McpHealthResult(
            server_name=req.resource_id,
            protocol_version="2025-06-18",
            tools=["noop"],
            attempts=1,
            elapsed_seconds=0.0,
        )

    @activity.defn(name="stop_runtime")
    async def stop_runtime(self, req: StopRuntimeRequest) -> None:
        return None


# -- phases ---------------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    name: str
    n: int
    wall_seconds: float
    activities_per_workflow: int

    @property
    def per_second(self) -> float:
        return self.n / self.wall_seconds

    @property
    def activities_per_second(self) -> float:
        return self.n * self.activities_per_workflow / self.wall_seconds


@dataclass
class Bench:
    client: Client
    store: PostgresStore
    dsn: str
    run_id: str
    start_concurrency: int

    def ids(self, phase: str, n: int) -> list[str]:
        return [f"bench-{self.run_id}-{phase}-{i:05d}" for i in range(n)]

    async def bounded(self, calls: Iterable[Callable[[], Awaitable[Any]]]) -> list[Any]:
        gate = asyncio.Semaphore(self.start_concurrency)

        async def one(call: Callable[[], Awaitable[Any]]) -> Any:
            async with gate:
                return await call()

        return await asyncio.gather(*(one(c) for c in calls))

    @contextlib.asynccontextmanager
    async def mcp_worker(self) -> AsyncIterator[str]:
        queue = f"bench-mcp-{uuid.uuid4()}"
        # The production wiring (workers.worker.LifecycleActivities.all), so every store activity
        # the lifecycle calls is the real one; only the Docker and MCP adapters are instant.
        instant = InstantMcpRuntime()
        wiring = dataclasses.replace(
            real_activities(self.store, RsmSettings()),
            builder=cast(DockerImageBuilder, instant),
            runtime=cast(LocalDockerRuntime, instant),
            health=cast(McpHealthChecker, instant),
        )
        async with new_worker(self.client, queue, wiring.all(), workflows=[McpLifecycleWorkflow]):
            yield queue

    @contextlib.asynccontextmanager
    async def bare_worker(self) -> AsyncIterator[str]:
        queue = f"bench-bare-{uuid.uuid4()}"
        worker: Worker = new_worker(self.client, queue, [noop], workflows=[BareWorkflow])
        async with worker:
            yield queue

    async def start_mcp(self, queue: str, resource_id: str) -> WorkflowHandle[Any, Any]:
        # The same start as control.client.LifecycleClient.register_mcp, minus the source folder.
        ref = ResourceRef(resource_type=ResourceType.MCP_SERVER, resource_id=resource_id)
        return await self.client.start_workflow(
            McpLifecycleWorkflow.run,
            McpLifecycleInput(
                ref=ref,
                name=resource_id,
                owner_team=OWNER,
                spec=McpServerSpec(context_path=f"/bench/{resource_id}", version="0.0.1"),
            ),
            id=ref.workflow_id,
            task_queue=queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(RESOURCE_TYPE, ref.resource_type.value),
                    SearchAttributePair(RESOURCE_STATE, ResourceState.CREATED.value),
                    SearchAttributePair(OWNER_TEAM, OWNER),
                ]
            ),
        )

    async def start_bare(
        self, queue: str, workflow_id: str, activities: int
    ) -> WorkflowHandle[Any, Any]:
        return await self.client.start_workflow(
            BareWorkflow.run, activities, id=workflow_id, task_queue=queue
        )

    async def wait_active(self, prefix: str, n: int, timeout: float) -> None:
        """Poll the database (one cheap count, not n queries through the worker) until n are active."""
        deadline = time.monotonic() + timeout
        seen: dict[str, int] = {}
        moved = time.monotonic()
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            while True:
                cur = await conn.execute(
                    "select current_state, count(*) from public.resource_states"
                    " where resource_id like %s group by current_state",
                    (prefix + "%",),
                )
                states: dict[str, int] = dict(await cur.fetchall())
                if states.get("failed"):
                    cur = await conn.execute(
                        "select resource_id, reason from public.state_transitions"
                        " where resource_id like %s and to_state = 'failed' limit 1",
                        (prefix + "%",),
                    )
                    raise BenchError(f"a lifecycle failed: {await cur.fetchone()}")
                if states.get("active", 0) >= n:
                    return
                if states != seen:
                    seen, moved = states, time.monotonic()
                elif time.monotonic() - moved > STALL_SECONDS:
                    # A failing workflow task retries forever without a row in the database.
                    raise BenchError(
                        f"no lifecycle moved for {STALL_SECONDS:.0f}s: {states}"
                        " (a failing workflow task or an activity no worker serves? see the log)"
                    )
                if time.monotonic() > deadline:
                    raise BenchError(f"{n} lifecycles not active after {timeout:.0f}s: {states}")
                await asyncio.sleep(0.05)

    async def wait_listed_active(self, queue: str, n: int, timeout: float) -> None:
        """Until the Temporal UI filter `ResourceState="active"` lists all n of this phase."""
        query = f'TaskQueue="{queue}" AND ResourceState="active"'
        deadline = time.monotonic() + timeout
        while (listed := (await self.client.count_workflows(query)).count) < n:
            if time.monotonic() > deadline:
                raise BenchError(f"only {listed} of {n} listed by {query} after {timeout:.0f}s")
            await asyncio.sleep(0.2)

    async def wait_settled(self, handles: list[WorkflowHandle[Any, Any]], timeout: float) -> None:
        """Until no lifecycle has a workflow task or activity pending: whatever follows the `active`
        row (the search-attribute upsert, telling dependents) is part of reaching active."""
        deadline = time.monotonic() + timeout

        async def busy(handle: WorkflowHandle[Any, Any]) -> bool:
            raw = (await handle.describe()).raw_description
            return bool(raw.pending_activities) or raw.HasField("pending_workflow_task")

        while any(await self.bounded([partial(busy, h) for h in handles])):
            if time.monotonic() > deadline:
                raise BenchError(f"lifecycles still busy at active after {timeout:.0f}s")
            await asyncio.sleep(0.5)

    async def span(
        self, handles: list[WorkflowHandle[Any, Any]]
    ) -> tuple[float, list[Counter[str]]]:
        """Seconds from the phase's first workflow start to its last workflow event, by the server's
        clock (the same for both kinds, and no polling interval in it), and each one's activities."""
        histories = await self.bounded([partial(_history, h) for h in handles])
        first = min(h[0] for h in histories)
        last = max(h[1] for h in histories)
        return (last - first).total_seconds(), [h[2] for h in histories]

    async def terminate(self, handles: list[WorkflowHandle[Any, Any]]) -> None:
        await self.bounded([partial(h.terminate, reason="benchmark over") for h in handles])

    async def mcp_phase(
        self, name: str, n: int, timeout: float
    ) -> tuple[float, list[Counter[str]]]:
        async with self.mcp_worker() as queue:
            ids = self.ids(name, n)
            handles = await self.bounded([partial(self.start_mcp, queue, r) for r in ids])
            await self.wait_active(f"bench-{self.run_id}-{name}-", n, timeout)
            await self.wait_settled(handles, timeout)
            await self.wait_listed_active(queue, n, timeout)
            measured = await self.span(handles)
            # They stay alive at `active` as the resources' actors: end them while the worker still
            # runs (no task cut off by its shutdown) and before the next phase (a quiet server).
            await self.terminate(handles)
            return measured

    async def bare_phase(
        self, name: str, n: int, activities: int, timeout: float
    ) -> tuple[float, list[Counter[str]]]:
        async with self.bare_worker() as queue:
            handles = await self.bounded(
                [partial(self.start_bare, queue, wid, activities) for wid in self.ids(name, n)]
            )
            try:
                async with asyncio.timeout(timeout):
                    results = await asyncio.gather(*(h.result() for h in handles))
            except TimeoutError:
                raise BenchError(f"{n} bare workflows not done after {timeout:.0f}s") from None
            if results != [activities] * n:
                raise BenchError(f"bare workflows returned {set(results)}, expected {activities}")
            return await self.span(handles)


async def _history(handle: WorkflowHandle[Any, Any]) -> tuple[datetime, datetime, Counter[str]]:
    counts: Counter[str] = Counter()
    times: list[datetime] = []
    async for event in handle.fetch_history_events():
        times.append(event.event_time.ToDatetime())
        if event.HasField("activity_task_scheduled_event_attributes"):
            counts[event.activity_task_scheduled_event_attributes.activity_type.name] += 1
    return times[0], times[-1], counts


def same_activities(phase: str, counters: list[Counter[str]], expected: int) -> None:
    totals = {sum(c.values()) for c in counters}
    if totals != {expected}:
        raise BenchError(f"{phase}: workflows ran {sorted(totals)} activities, expected {expected}")


async def check_recorded(dsn: str, prefix: str, n: int, expected_rows: int) -> None:
    """Every measured lifecycle left its whole walk in Postgres (so nothing was skipped)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "select count(*) from public.state_transitions where resource_id like %s",
            (prefix + "%",),
        )
        row = await cur.fetchone()
    rows = row[0] if row else 0
    if rows != n * expected_rows:
        raise BenchError(f"expected {n * expected_rows} history rows for {prefix}*, found {rows}")


async def run(args: argparse.Namespace) -> list[PhaseResult]:
    timeout = max(120.0, args.n * 1.0)
    async with contextlib.AsyncExitStack() as stack:
        pg = PostgresServer(args.scratch / "pg", free_port(), durable=False)
        stack.callback(pg.destroy)
        dsn = await asyncio.to_thread(pg.start)
        await apply_migrations(dsn)
        store = await PostgresStore.connect(dsn)
        stack.push_async_callback(store.close)
        # In memory, as the tests run it. The dev stack's --sqlite-pragma journal_mode=wal and
        # synchronous=normal are for its database file: start_local without a file opens SQLite
        # with mode=memory, where WAL is unavailable and nothing is synced, so they change nothing.
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_cli(),
            search_attributes=SEARCH_ATTRIBUTES,
            data_converter=pydantic_data_converter,
            dev_server_log_level="error",
        )
        stack.push_async_callback(env.shutdown)
        bench = Bench(env.client, store, dsn, uuid.uuid4().hex[:6], args.start_concurrency)

        # Warm-up (untimed): imports, sandbox, connection pools; and count what one lifecycle runs.
        _, counters = await bench.mcp_phase("warm", args.warmup, timeout)
        by_type = counters[0]
        per_lifecycle = sum(by_type.values())
        transitions = by_type["record_transition"]
        await check_recorded(dsn, f"bench-{bench.run_id}-warm-", args.warmup, transitions + 1)
        await bench.bare_phase("bwarm", args.warmup, per_lifecycle, timeout)
        print(
            f"one MCP lifecycle to active runs {per_lifecycle} activities: "
            + ", ".join(f"{count} {name}" for name, count in sorted(by_type.items())),
            flush=True,
        )

        results: list[PhaseResult] = []
        # bare, then (mcp, bare) per round: every MCP phase has a baseline before and after it.
        for round_ in range(1, args.rounds + 2):
            wall, counters = await bench.bare_phase(f"bare{round_}", args.n, per_lifecycle, timeout)
            same_activities(f"bare {round_}", counters, per_lifecycle)
            results.append(PhaseResult(f"bare {round_}", args.n, wall, per_lifecycle))
            if round_ > args.rounds:
                break
            wall, counters = await bench.mcp_phase(f"mcp{round_}", args.n, timeout)
            same_activities(f"mcp-shaped {round_}", counters, per_lifecycle)
            results.append(PhaseResult(f"mcp-shaped {round_}", args.n, wall, per_lifecycle))
            await check_recorded(dsn, f"bench-{bench.run_id}-mcp{round_}-", args.n, transitions + 1)
        return results


def report(results: list[PhaseResult]) -> str:
    lines = [f"{'phase':<14} {'N':>5} {'wall s':>8} {'lifecycles/s':>13} {'activities/s':>13}"]
    for r in results:
        lines.append(
            f"{r.name:<14} {r.n:>5} {r.wall_seconds:>8.2f} {r.per_second:>13.1f}"
            f" {r.activities_per_second:>13.1f}"
        )
    means = []
    # results alternate bare, mcp, bare, mcp, ..., bare.
    for i in range(1, len(results), 2):
        before, mcp, after = (r.per_second for r in results[i - 1 : i + 2])
        means.append(mcp / statistics.mean([before, after]))
        lines.append(
            f"ratio {results[i].name} / bare: {mcp / before:.2f} (vs bare before), "
            f"{mcp / after:.2f} (vs bare after), {means[-1]:.2f} (vs their mean)"
        )
    if len(means) > 1:
        lines.append(f"median ratio over {len(means)} rounds: {statistics.median(means):.2f}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_lifecycles", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--n", type=int, default=200, help="workflows per phase (20: quick mode)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed workflows of each kind")
    parser.add_argument(
        "--rounds", type=int, default=1, help="MCP phases, each between two bare phases"
    )
    parser.add_argument(
        "--start-concurrency", type=int, default=50, help="workflow starts in flight at once"
    )
    args = parser.parse_args(argv)
    if min(args.n, args.warmup, args.rounds, args.start_concurrency) < 1:
        parser.error("--n, --warmup, --rounds and --start-concurrency must be at least 1")
    return args


async def _main(args: argparse.Namespace) -> list[PhaseResult]:
    # SIGTERM ends the run like Ctrl-C does: the exit stack then stops what this process started.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run(args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"rsm lifecycle benchmark: N={args.n}, warm-up {args.warmup} of each,"
        f" {args.rounds} round(s); load average {load} on {os.cpu_count()} CPUs",
        flush=True,
    )
    args.scratch = Path(tempfile.mkdtemp(prefix="rsm-bench-"))
    args.scratch.chmod(0o755)  # the postgres user must reach its data folder inside
    try:
        results = asyncio.run(_main(args))
    except (BenchError, ServiceError, StoreError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("benchmark interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(args.scratch, ignore_errors=True)
    print(report(results))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"load average at the end: {load} on {os.cpu_count()} CPUs (other work skews the figures)"
    )
    return 0


if __name__ == "__main__":
    # Import by name so the workflow classes live in `bench.bench_lifecycles`, a module the workflow
    # sandbox can re-import (it cannot re-import `__main__`).
    from bench.bench_lifecycles import main as _named_main

    sys.exit(_named_main())
