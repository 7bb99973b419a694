"""The `rsm` command: register resources, follow them to `active`, read status and history.

Reads (`status`, `history`) come from the database, which is the audit record; commands go through
the workflows. Every command prints the workflow's Temporal UI link.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from temporalio.service import RPCError

from control.cli_output import (
    EXIT_ACTIVE,
    EXIT_FAILED,
    EXIT_OTHER,
    FAILED_STATES,
    STATE_WIDTH,
    echo_table,
    follow,
    report_timeout,
)
from control.client import LifecycleClient, RegistrationRefused
from control.sources import SourceError
from state.errors import StoreError, StoreUnavailableError
from state.machines import ResourceState, ResourceType
from state.models import (
    ID_RULE,
    ApprovalPolicy,
    LifecyclePolicy,
    RequirementSpec,
    workflow_id_for,
)
from state.postgres import PostgresStore, apply_migrations
from state.settings import RsmSettings

T = TypeVar("T")

app = typer.Typer(
    help="rsm: durable resource lifecycles on Temporal, audited in Postgres.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
register_app = typer.Typer(
    help="Register a resource and start its lifecycle.", no_args_is_help=True
)
app.add_typer(register_app, name="register")


def _problem(error: Any) -> str:
    # A resource id's rule in words rather than its regular expression.
    if error["type"] == "string_pattern_mismatch" and error["loc"][-1:] == ("resource_id",):
        return f"{error['input']!r} is not a valid id: {ID_RULE}"
    return str(error["msg"])


def nonempty_id(value: str | None) -> str | None:
    """--id "" would otherwise quietly fall back to the default id."""
    if value is not None and not value.strip():
        typer.secho(f"error: --id must not be empty; an id is {ID_RULE}", fg="red", err=True)
        raise typer.Exit(EXIT_FAILED)
    return value


def _run(coro: Awaitable[T]) -> T:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except (StoreError, SourceError, RegistrationRefused) as exc:
        hint = " (is `rsm dev up` running?)" if isinstance(exc, StoreUnavailableError) else ""
        typer.secho(f"error: {exc}{hint}", fg="red", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {_problem(e)}" for e in exc.errors()
        )
        typer.secho(f"error: invalid input: {problems}", fg="red", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    except RPCError as exc:
        if "already completed" in str(exc):
            typer.secho(
                "refused: this resource's lifecycle has ended (it is archived); an archived id"
                " is not reused: register the resource under a new id",
                fg="red",
                err=True,
            )
        elif "not found" in str(exc).lower():
            typer.secho(
                f"error: no lifecycle for that resource in Temporal: {exc}", fg="red", err=True
            )
        else:
            typer.secho(f"error: Temporal refused the request: {exc}", fg="red", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    except RuntimeError as exc:
        if "Failed client connect" in str(exc) or "connection" in str(exc).lower():
            typer.secho(
                f"error: cannot reach Temporal: {exc} (is `rsm dev up` running?)",
                fg="red",
                err=True,
            )
            raise typer.Exit(EXIT_FAILED) from None
        raise


def _policy(
    require_approval: bool, approvers: list[str], requirements: list[str]
) -> LifecyclePolicy:
    specs = []
    for item in requirements:
        kind, sep, name = item.partition(":")
        if not sep:
            kind, name = "other", item
        if kind not in {"credential", "approval", "dependency", "other"} or not name:
            typer.secho(
                f"error: --requirement {item!r}: use TYPE:NAME with TYPE credential, "
                "approval, dependency or other",
                fg="red",
                err=True,
            )
            raise typer.Exit(EXIT_FAILED)
        specs.append(RequirementSpec.model_validate({"name": name, "requirement_type": kind}))
    return LifecyclePolicy(
        approval=ApprovalPolicy(required=require_approval or bool(approvers), approvers=approvers),
        requirements=specs,
    )


@register_app.command("mcp")
def register_mcp(
    path: Path = typer.Argument(..., help="Directory with a Dockerfile and an MCP server."),
    resource_id: str | None = typer.Option(
        None, "--id", help="Resource id (default: directory name).", callback=nonempty_id
    ),
    owner: str = typer.Option("", "--owner", help="Owner team."),
    actor: str = typer.Option("cli", "--actor", help="Who registers it (recorded on every row)."),
    wait: bool = typer.Option(False, "--wait", help="Follow the lifecycle until it settles."),
    timeout: float = typer.Option(900, "--timeout", min=1, help="Seconds to wait with --wait."),
    require_approval: bool = typer.Option(
        False, "--require-approval", help="Gate `active` on an approval."
    ),
    approvers: list[str] = typer.Option(
        [], "--approver", help="Who may approve (repeat); default anyone but you."
    ),
    requirements: list[str] = typer.Option(
        [],
        "--requirement",
        help="TYPE:NAME that must be satisfied (repeat), e.g. credential:slack-token.",
    ),
) -> None:
    """Register an MCP server directory and start its lifecycle."""
    settings = RsmSettings()
    policy = _policy(require_approval, approvers, requirements)

    async def main() -> int:
        lc = await LifecycleClient.connect(settings)
        handle = await lc.register_mcp(
            path, resource_id=resource_id, owner_team=owner, actor=actor, policy=policy
        )
        typer.echo(f"registered {handle.id}")
        typer.echo(f"  Temporal UI: {lc.ui_link(handle.id)}")
        if not wait:
            return EXIT_ACTIVE
        status = await follow(lc, handle, timeout)
        if status is None:
            return await report_timeout(lc, handle, timeout)
        if status.state is ResourceState.ACTIVE:
            endpoint = status.deployment.endpoint if status.deployment else "?"
            typer.secho(f"{handle.id} is active at {endpoint}", fg="green")
            return EXIT_ACTIVE
        if status.state in FAILED_STATES:
            typer.secho(
                f"{handle.id} {status.state.value}: {status.failure_reason}", fg="red", err=True
            )
            typer.echo(
                f"  `rsm command {status.ref.resource_id} retry` tries again;"
                " `redeploy --path DIR` gives a new version"
            )
            return EXIT_FAILED
        if status.state is ResourceState.ARCHIVED:
            typer.secho(
                f"{handle.id} was archived earlier: an archived id is not reused;"
                " register the resource under a new --id",
                fg="red",
                err=True,
            )
            return EXIT_FAILED
        typer.echo(f"{handle.id} is {status.state.value}")
        return EXIT_OTHER

    raise typer.Exit(_run(main()))


async def _store(settings: RsmSettings) -> PostgresStore:
    # A person is waiting: say at once that the database is down, without the pool's retry noise.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    return await PostgresStore.connect(settings.database_url, max_size=2, timeout=5)


@app.command()
def status(
    resource_id: str | None = typer.Argument(None, help="One resource; all when omitted."),
    resource_type: ResourceType | None = typer.Option(None, "--type"),
    state: ResourceState | None = typer.Option(None, "--state"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Current state of resources, from the database."""
    settings = RsmSettings()

    async def main() -> int:
        store = await _store(settings)
        try:
            if resource_id is None:
                rows = await store.list_resources(
                    resource_type.value if resource_type else None, state.value if state else None
                )
                if as_json:
                    typer.echo(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
                    return 0
                echo_table(
                    ("ID", "TYPE", "STATE", "VERSION", "OWNER", "UPDATED"),
                    [
                        (
                            r.resource_id,
                            r.resource_type.value,
                            r.current_state.value,
                            r.version or "-",
                            r.owner_team or "-",
                            f"{r.updated_at:%Y-%m-%d %H:%M:%S}",
                        )
                        for r in rows
                    ],
                )
                return 0
            row = await store.get_resource(resource_id)
            if row is None:
                typer.secho(f"error: no resource {resource_id!r}", fg="red", err=True)
                return EXIT_FAILED
            details: dict[str, Any] = row.model_dump(mode="json")
            if row.resource_type is ResourceType.MCP_SERVER:
                mcp = await store.mcp_status(resource_id)
                details["mcp"] = json.loads(json.dumps(mcp, default=str)) if mcp else None
            wf = row.workflow_id or workflow_id_for(row.resource_type, row.resource_id)
            details["temporal_ui"] = settings.workflow_ui_link(wf)
            # Why it is where it is (for a failed resource: the failure), without `rsm history`.
            newest = await store.list_transitions(resource_id, limit=1)
            last = newest[-1] if newest else None
            details["last_transition"] = last.model_dump(mode="json") if last else None
            if as_json:
                typer.echo(json.dumps(details, indent=2))
                return 0
            typer.echo(
                f"{row.resource_id} ({row.resource_type.value}, machine v{row.machine_version})"
            )
            typer.echo(
                f"  state:    {row.current_state.value}  since {row.updated_at:%Y-%m-%d %H:%M:%S}"
            )
            if last is not None:
                typer.echo(f"  why:      {last.reason or '-'}  [{last.actor}]")
                if row.current_state in FAILED_STATES:
                    typer.echo(f"  next:     rsm command {resource_id} retry | redeploy | archive")
            typer.echo(f"  version:  {row.version or '-'}")
            typer.echo(f"  owner:    {row.owner_team or '-'}   registered by {row.registered_by}")
            if details.get("mcp"):
                # A factory-registered server may not have reported an endpoint or a handshake yet:
                # print what is known, "-" for the rest, never "None".
                mcp = details["mcp"]
                typer.echo(
                    f"  endpoint: {mcp.get('endpoint') or '-'}  image {mcp.get('image') or '-'}"
                )
                if mcp.get("server_name") or mcp.get("tools"):
                    typer.echo(
                        f"  server:   {mcp.get('server_name') or '-'}"
                        f"  protocol {mcp.get('protocol_version') or '-'}"
                        f"  tools {', '.join(mcp.get('tools') or []) or '-'}"
                    )
            typer.echo(f"  Temporal UI: {details['temporal_ui']}")
            return 0
        finally:
            await store.close()

    raise typer.Exit(_run(main()))


@app.command()
def history(
    resource_id: str = typer.Argument(..., help="Resource id."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Every recorded transition of a resource: from, to, who, why, when."""
    settings = RsmSettings()

    async def main() -> int:
        store = await _store(settings)
        try:
            row = await store.get_resource(resource_id)
            if row is None:
                typer.secho(f"error: no resource {resource_id!r}", fg="red", err=True)
                return EXIT_FAILED
            records = await store.list_transitions(resource_id)
            if as_json:
                typer.echo(json.dumps([r.model_dump(mode="json") for r in records], indent=2))
                return 0
            typer.echo(
                f"history of {resource_id} ({row.resource_type.value}), now {row.current_state.value}"
            )
            for r in records:
                frm = r.from_state.value if r.from_state else "·"
                typer.echo(
                    f"  {r.recorded_at:%Y-%m-%d %H:%M:%S}  {frm:>{STATE_WIDTH}} → {r.to_state.value:<{STATE_WIDTH}} "
                    f"{r.actor:<10} {r.reason}"
                )
            wf = row.workflow_id or workflow_id_for(row.resource_type, row.resource_id)
            typer.echo(f"  Temporal UI: {settings.workflow_ui_link(wf)}")
            return 0
        finally:
            await store.close()

    raise typer.Exit(_run(main()))


@app.command()
def migrate() -> None:
    """Apply the schema migrations in supabase/migrations to RSM_DATABASE_URL."""
    settings = RsmSettings()
    applied = _run(apply_migrations(settings.database_url))
    typer.echo(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")


def main() -> None:  # pragma: no cover - console entry
    app()
    sys.exit(0)
