"""`rsm` commands for operators and pipelines: approve, reject, satisfy, command, transition, ls,
overview, awaiting, wait. Reads come from the database; every write names its actor and goes
through the resource's workflow, which answers at once (Temporal updates) with a yes or a reason.

Exit codes a pipeline can rely on: 0 done, 1 refused or failed (the reason on stderr), 2 timed out.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import typer

from control.cli import _run, _store, app
from control.cli_output import EXIT_FAILED, EXIT_TIMEOUT, echo_table, follow, report_settled
from control.client import COMMANDS, CommandRefused, LifecycleClient
from state.commands import CommandResult
from state.machines import FAILURE_STATES, ResourceState, ResourceType
from state.models import ResourceRow
from state.postgres import PostgresStore
from state.queries import ResourceFilter, awaiting_action, list_resources, overview
from state.settings import RsmSettings


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


async def _resource(store: PostgresStore, resource_id: str) -> ResourceRow:
    row = await store.get_resource(resource_id)
    if row is None:
        typer.secho(f"error: no resource {resource_id!r}", fg="red", err=True)
        raise typer.Exit(EXIT_FAILED)
    return row


def _act(
    resource_id: str,
    action: Callable[[LifecycleClient, ResourceRow], Awaitable[CommandResult | None]],
    done: str,
    check: Callable[[PostgresStore, ResourceRow], Awaitable[str | None]] | None = None,
    then: Callable[[LifecycleClient, ResourceRow], Awaitable[int]] | None = None,
) -> None:
    """Look the resource up, run a write through its workflow, report the answer. `check` may
    refuse first (it returns why); `then` runs after an accepted write and gives the exit code."""
    settings = RsmSettings()

    async def main() -> int:
        store = await _store(settings)
        try:
            row = await _resource(store, resource_id)
            why = await check(store, row) if check is not None else None
        finally:
            await store.close()
        if why is not None:
            typer.secho(f"error: {why}", fg="red", err=True)
            return EXIT_FAILED
        lc = await LifecycleClient.connect(settings)
        try:
            result = await action(lc, row)
        except CommandRefused as refused:
            typer.secho(f"refused: {refused}", fg="red", err=True)
            return EXIT_FAILED
        message = result.message if result else done
        typer.echo(f"{resource_id}: {message}")
        typer.echo(f"  Temporal UI: {lc.ui_link(row.workflow_id or '')}")
        return await then(lc, row) if then is not None else 0

    raise typer.Exit(_run(main()))


@app.command()
def approve(
    resource_id: str,
    approver: str = typer.Option(..., "--as", help="Who approves (recorded as the actor)."),
    reason: str = typer.Option("", "--reason"),
) -> None:
    """Approve a resource waiting at its approval gate (refused for its registrant)."""
    _act(
        resource_id,
        lambda lc, r: lc.approve(r.resource_type, r.resource_id, approver, reason),
        "approved",
    )


@app.command()
def reject(
    resource_id: str,
    approver: str = typer.Option(..., "--as", help="Who rejects (recorded as the actor)."),
    reason: str = typer.Option(..., "--reason"),
) -> None:
    """Reject a resource waiting at its approval gate: it fails, naming you and your reason."""
    _act(
        resource_id,
        lambda lc, r: lc.reject(r.resource_type, r.resource_id, approver, reason),
        "rejected",
    )


@app.command()
def satisfy(
    resource_id: str,
    requirement: str = typer.Argument(..., help="The requirement's name."),
    status: str = typer.Option(
        "satisfied", "--status", help="satisfied, failed, waived or pending."
    ),
    actor: str = typer.Option("cli", "--actor"),
    reason: str = typer.Option("", "--reason"),
    add: str | None = typer.Option(
        None,
        "--add",
        help="Add it as a new requirement of this type (credential, approval, dependency, other).",
    ),
) -> None:
    """Update a deployment requirement (a credential provided, a review waived...)."""
    if status not in {"satisfied", "failed", "waived", "pending"}:
        typer.secho(f"error: unknown status {status!r}", fg="red", err=True)
        raise typer.Exit(EXIT_FAILED)
    if add is not None and add not in {"credential", "approval", "dependency", "other"}:
        typer.secho(f"error: unknown requirement type {add!r}", fg="red", err=True)
        raise typer.Exit(EXIT_FAILED)

    target = {"name": requirement}

    async def known(store: PostgresStore, row: ResourceRow) -> str | None:
        # A misspelt name would otherwise become a new requirement that nothing waits for.
        held = await store.list_requirements(row.resource_id)
        names = sorted(r.name for r in held)
        if add is not None or requirement in names:
            return None
        # `rsm awaiting` and timeouts show TYPE:NAME; that form names the requirement too.
        kind, _, name = requirement.partition(":")
        if any(r.requirement_type == kind and r.name == name for r in held):
            target["name"] = name
            return None
        return (
            f"{resource_id} has no requirement {requirement!r}"
            f" (has: {', '.join(names) or 'none'}); pass --add TYPE to add it"
        )

    _act(
        resource_id,
        lambda lc, r: lc.update_requirement(
            r.resource_type,
            r.resource_id,
            target["name"],
            status,  # type: ignore[arg-type]
            actor,
            reason,
            add or "other",
        ),
        f"requirement {requirement} {status}",
        check=known,
    )


@app.command()
def command(
    resource_id: str = typer.Argument(..., help="Resource id."),
    name: str = typer.Argument(..., help=f"One of: {', '.join(COMMANDS)}."),
    actor: str = typer.Option("cli", "--actor"),
    reason: str = typer.Option("", "--reason"),
    path: str | None = typer.Option(
        None,
        "--path",
        help="redeploy: the new source directory, or for an n8n workflow its export (JSON file).",
    ),
    version: str | None = typer.Option(
        None, "--version", help="redeploy: for a team that runs a given image, the new image."
    ),
    replicas: int | None = typer.Option(None, "--replicas", help="scale: the new replica count."),
    wait: bool = typer.Option(
        False, "--wait", help="Follow the lifecycle until it settles (exit codes as register)."
    ),
    timeout: float = typer.Option(900, "--timeout", min=1, help="Seconds to wait with --wait."),
) -> None:
    """Run an operator command; refused at once (exit 1) when illegal in the current state."""
    if name not in COMMANDS:
        typer.secho(
            f"error: unknown command {name!r}; one of {', '.join(COMMANDS)}", fg="red", err=True
        )
        raise typer.Exit(EXIT_FAILED)
    if name == "scale" and replicas is None:
        typer.secho("error: scale needs --replicas N", fg="red", err=True)
        raise typer.Exit(EXIT_FAILED)
    if path is not None and version is not None:
        typer.secho("error: give --path or --version, not both", fg="red", err=True)
        raise typer.Exit(EXIT_FAILED)
    args: dict[str, Any] = {}
    if path is not None:
        args["path"] = path
    if version is not None:
        args["version"] = version
    if replicas is not None:
        args["replicas"] = replicas
    # The newest transition before the command (--wait follows only what the command causes) and
    # the versions refused before it (a redeploy that rolled back adds one).
    before: dict[str, Any] = {"at": None, "bad": set()}

    async def run(lc: LifecycleClient, row: ResourceRow) -> CommandResult:
        if wait:
            handle = lc.handle(row.resource_type, row.resource_id)
            seen = await lc.transitions(handle)
            before["at"] = seen[-1].at if seen else None
            before["bad"] = set((await lc.status(handle)).bad_versions)
        return await lc.run_command(row.resource_type, row.resource_id, name, actor, reason, **args)

    async def follow_it(lc: LifecycleClient, row: ResourceRow) -> int:
        handle = lc.handle(row.resource_type, row.resource_id)
        status = await follow(lc, handle, timeout, after=before["at"])
        rolled_back = set(status.bad_versions) - before["bad"] if status else set()
        if status is not None and rolled_back:
            failed = [
                t
                for t in await lc.transitions(handle)
                if t.to_state is ResourceState.FAILED
                and (before["at"] is None or t.at > before["at"])
            ]
            why = failed[0].reason if failed else "it failed"
            typer.secho(
                f"{handle.id}: version {', '.join(sorted(rolled_back))} failed ({why}); back on"
                f" version {status.last_good_version} ({status.state.value})",
                fg="red",
                err=True,
            )
            return EXIT_FAILED
        return await report_settled(lc, handle, status, timeout)

    _act(resource_id, run, name, then=follow_it if wait else None)


@app.command()
def transition(
    resource_id: str,
    to_state: ResourceState = typer.Argument(..., help="The state to move to."),
    actor: str = typer.Option(..., "--actor"),
    reason: str = typer.Option(..., "--reason"),
) -> None:
    """A manual transition with a reason, checked against the resource's state machine."""
    _act(
        resource_id,
        lambda lc, r: lc.transition(r.resource_type, r.resource_id, to_state, actor, reason),
        "recorded",
    )


@app.command("ls")
def list_command(
    resource_type: ResourceType | None = typer.Option(None, "--type"),
    state: ResourceState | None = typer.Option(None, "--state"),
    owner: str | None = typer.Option(None, "--owner"),
    search: str | None = typer.Option(None, "--search", help="Substring of the id or name."),
    limit: int = typer.Option(100, "--limit"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List resources with filters."""
    settings = RsmSettings()

    async def main() -> int:
        store = await _store(settings)
        try:
            flt = ResourceFilter(
                resource_type=resource_type, state=state, owner_team=owner, search=search
            )
            page = await list_resources(store.pool, flt, limit=limit)
        finally:
            await store.close()
        if as_json:
            _echo_json([r.model_dump(mode="json") for r in page.items])
            return 0
        echo_table(
            ("ID", "TYPE", "STATE", "OWNER", "UPDATED"),
            [
                (
                    r.resource_id,
                    r.resource_type.value,
                    r.current_state.value,
                    r.owner_team or "-",
                    f"{r.updated_at:%Y-%m-%d %H:%M:%S}",
                )
                for r in page.items
            ],
        )
        typer.echo(f"{len(page.items)} of {page.total}")
        return 0

    raise typer.Exit(_run(main()))


@app.command("overview")
def overview_command(as_json: bool = typer.Option(False, "--json")) -> None:
    """How many resources of each type are in each state."""
    settings = RsmSettings()

    async def main() -> int:
        store = await _store(settings)
        try:
            counts = await overview(store.pool)
        finally:
            await store.close()
        if as_json:
            _echo_json([c.model_dump(mode="json") for c in counts])
            return 0
        for c in counts:
            typer.echo(f"{c.resource_type.value:<14} {c.state.value:<22} {c.count}")
        return 0

    raise typer.Exit(_run(main()))


@app.command("awaiting")
def awaiting_command(
    resource_type: ResourceType | None = typer.Option(None, "--type"),
    owner: str | None = typer.Option(None, "--owner"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Resources that wait on something (a requirement, an approval, a dependency) or failed."""
    settings = RsmSettings()

    async def main() -> int:
        store = await _store(settings)
        try:
            rows = await awaiting_action(store.pool, resource_type=resource_type, owner_team=owner)
        finally:
            await store.close()
        if as_json:
            _echo_json([r.model_dump(mode="json") for r in rows])
            return 0
        if not rows:
            typer.echo("nothing awaits action")
            return 0
        echo_table(
            ("ID", "TYPE", "STATE", "WAITING ON"),
            [
                (
                    r.resource_id,
                    r.resource_type.value,
                    r.current_state.value,
                    ", ".join(r.waiting_on)
                    or (
                        "its failure: retry, redeploy or archive"
                        if r.current_state in FAILURE_STATES
                        else "-"
                    ),
                )
                for r in rows
            ],
        )
        return 0

    raise typer.Exit(_run(main()))


@app.command("wait")
def wait_command(
    resource_id: str,
    state: ResourceState = typer.Option(
        ResourceState.ACTIVE, "--state", help="The state to wait for."
    ),
    timeout: float = typer.Option(600, "--timeout", min=0.1, help="Seconds."),
    interval: float = typer.Option(0.5, "--interval"),
) -> None:
    """Wait until a resource is in STATE: exit 0 when it is, 1 when it fails or is archived
    first, 2 on timeout."""
    settings = RsmSettings()

    async def main() -> int:
        store = await _store(settings)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                row = await _resource(store, resource_id)
                if row.current_state is state:
                    typer.echo(f"{resource_id} is {state.value}")
                    return 0
                ended = FAILURE_STATES | {ResourceState.ARCHIVED}
                if row.current_state in ended and state not in ended:
                    history = await store.list_transitions(resource_id, limit=1)
                    why = history[-1].reason if history else ""
                    typer.secho(
                        f"{resource_id} is {row.current_state.value}: {why}", fg="red", err=True
                    )
                    return EXIT_FAILED
                if loop.time() >= deadline:
                    typer.secho(
                        f"timed out after {timeout:g}s: {resource_id} is {row.current_state.value}",
                        fg="yellow",
                        err=True,
                    )
                    return EXIT_TIMEOUT
                await asyncio.sleep(interval)
        finally:
            await store.close()

    raise typer.Exit(_run(main()))
