"""What `rsm` prints while it follows a lifecycle: transitions, progress of long steps, tables, and
the exit code a settled (or timed-out) wait ends with."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import typer
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError

from control.client import LifecycleClient
from state.machines import ResourceState
from state.models import LifecycleStatus, TransitionView

EXIT_ACTIVE, EXIT_FAILED, EXIT_TIMEOUT, EXIT_OTHER = 0, 1, 2, 3
FAILED_STATES = {ResourceState.FAILED, ResourceState.FAILED_VALIDATION}


# Wide enough for the longest state name (awaiting_dependencies), so every arrow lines up.
STATE_WIDTH = max(len(s.value) for s in ResourceState)


def echo_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns as wide as their widest cell (ids may be 36-character UUIDs); the last is free."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    for line in (header, *rows):
        cells = [cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=False)]
        typer.echo(" ".join([*cells, line[-1]]).rstrip())


def _fmt_time(at: datetime) -> str:
    return at.astimezone().strftime("%H:%M:%S")


def _print_transition(t: TransitionView) -> None:
    frm = t.from_state.value if t.from_state else "·"
    typer.echo(
        f"  {_fmt_time(t.at)}  {frm:>{STATE_WIDTH}} → {t.to_state.value:<{STATE_WIDTH}} {t.reason}  [{t.actor}]"
    )


async def follow(
    lc: LifecycleClient,
    handle: WorkflowHandle[Any, Any],
    timeout: float,
    after: datetime | None = None,
) -> LifecycleStatus | None:
    """Print each transition and the progress of long steps until the resource settles. With
    `after` (the newest transition before a command), older transitions are not printed and a
    state counts as settled only once something newer was recorded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    printed: set[tuple[datetime, str]] = set()
    last_progress: str | None = None
    shown_blocked: list[str] = []
    warned = False
    while loop.time() < deadline:
        try:
            status = await lc.status(handle)
            transitions = await lc.transitions(handle)
        except RPCError as exc:
            if not warned:
                typer.echo(f"  waiting for a worker on task queue {lc.settings.task_queue} ({exc})")
                warned = True
            await asyncio.sleep(1)
            continue
        for t in transitions:
            key = (t.at, t.to_state.value)
            if key not in printed and (after is None or t.at > after):
                printed.add(key)
                _print_transition(t)
        # What the lifecycle waits on, each time it changes (approval, requirements, dependencies).
        if status.blocked_on != shown_blocked and printed:
            blocked = ", ".join(status.blocked_on) or "nothing"
            typer.echo(f"  {'':>8}  {'':>{STATE_WIDTH}}   … blocked on: {blocked}")
            shown_blocked = status.blocked_on
        moved = after is None or (bool(transitions) and transitions[-1].at > after)
        # Settled only when the lifecycle rests too: a failed redeploy is followed by its rollback,
        # an accepted command by its steps.
        if (
            moved
            and status.resting
            and (
                status.state is ResourceState.ACTIVE
                or status.state in FAILED_STATES | {ResourceState.ARCHIVED, ResourceState.INACTIVE}
            )
        ):
            return status
        progress = await lc.progress(handle)
        line = _progress_line(progress)
        if line and line != last_progress:
            typer.echo(f"  {'':>8}  {'':>{STATE_WIDTH}}   … {line}")
            last_progress = line
        await asyncio.sleep(0.3)
    return None


_STEP = re.compile(r"^Step (\d+)/(\d+) : ")


def progress_bar(done: int, total: int, width: int = 20) -> str:
    filled = round(width * done / total) if total else 0
    return "[" + "#" * filled + "-" * (width - filled) + f"] {done}/{total}"


async def report_timeout(
    lc: LifecycleClient, handle: WorkflowHandle[Any, Any], timeout: float
) -> int:
    """A --wait that ran out: what the lifecycle still waits on, exit 2."""
    waiting = await waiting_on(lc, handle)
    typer.secho(f"timed out after {timeout:.0f}s; still running{waiting}", fg="yellow", err=True)
    return EXIT_TIMEOUT


async def report_settled(
    lc: LifecycleClient,
    handle: WorkflowHandle[Any, Any],
    status: LifecycleStatus | None,
    timeout: float,
) -> int:
    """The last line of a command's --wait and its exit code: 0 for a resting state the command
    may aim at (active, inactive, archived), 1 failed, 2 timed out, 3 anything else."""
    if status is None:
        return await report_timeout(lc, handle, timeout)
    if status.state is ResourceState.ACTIVE:
        typer.secho(f"{handle.id} is active", fg="green")
        return EXIT_ACTIVE
    if status.state in FAILED_STATES:
        typer.secho(
            f"{handle.id} {status.state.value}: {status.failure_reason}", fg="red", err=True
        )
        return EXIT_FAILED
    typer.echo(f"{handle.id} is {status.state.value}")
    resting = {ResourceState.INACTIVE, ResourceState.ARCHIVED}
    return EXIT_ACTIVE if status.state in resting else EXIT_OTHER


async def waiting_on(lc: LifecycleClient, handle: WorkflowHandle[Any, Any]) -> str:
    """What the resource waits on, for a timeout message (empty when nothing or unknown)."""
    try:
        blocked = (await lc.status(handle)).blocked_on
    except RPCError:
        return ""
    return f", waiting on {', '.join(blocked)}" if blocked else ""


def _progress_line(progress: dict[str, Any] | None) -> str | None:
    if not progress:
        return None
    if progress.get("step"):
        step = str(progress["step"])
        if (m := _STEP.match(step)) is not None:
            # A build's "Step 3/7 : RUN ..." becomes a bar and the instruction.
            bar = progress_bar(int(m.group(1)), int(m.group(2)))
            return f"{progress['activity']} {bar} {step[m.end() :]}"
        return f"{progress['activity']}: {step}"
    if progress.get("attempt", 0) > 1:
        return (
            f"{progress['activity']}: attempt {progress['attempt']} ({progress.get('last_error')})"
        )
    return None
