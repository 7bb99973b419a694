"""`rsm register team MANIFEST`: register a team from its YAML manifest and start its lifecycle.

With `--wait` it follows the lifecycle like `rsm register mcp` and also prints what the team is
blocked on whenever that changes (its dependencies, requirements, an approval), so an operator sees
what it waits for at each moment.
"""

from __future__ import annotations

from pathlib import Path

import typer

from control.cli import _policy, _run, nonempty_id, register_app
from control.cli_output import (
    EXIT_ACTIVE,
    EXIT_FAILED,
    EXIT_OTHER,
    FAILED_STATES,
    follow,
    report_timeout,
)
from control.client import LifecycleClient
from control.team_client import register_team, team_status
from state.machines import ResourceState
from state.settings import RsmSettings
from state.team_models import ManifestError, load_manifest


@register_app.command("team")
def register_team_command(
    manifest: Path = typer.Argument(..., help="The team's YAML manifest (team.yaml)."),
    resource_id: str | None = typer.Option(
        None, "--id", help="Resource id (default: the manifest's name).", callback=nonempty_id
    ),
    owner: str = typer.Option("", "--owner", help="Owner team (default: the manifest's owner)."),
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
        [], "--requirement", help="TYPE:NAME that must be satisfied (repeat)."
    ),
) -> None:
    """Register a team: build or take its image, run its replicas, wait for its dependencies."""
    settings = RsmSettings()
    policy = _policy(require_approval, approvers, requirements)

    async def main() -> int:
        try:
            load_manifest(manifest)  # a bad manifest is named before anything is contacted
        except ManifestError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            return EXIT_FAILED
        lc = await LifecycleClient.connect(settings)
        try:
            handle = await register_team(
                lc, manifest, actor=actor, owner=owner, policy=policy, resource_id=resource_id
            )
        except ManifestError as exc:  # what only the registration knows (e.g. the final id)
            typer.secho(f"error: {exc}", fg="red", err=True)
            return EXIT_FAILED
        typer.echo(f"registered {handle.id}")
        typer.echo(f"  Temporal UI: {lc.ui_link(handle.id)}")
        if not wait:
            return EXIT_ACTIVE
        status = await follow(lc, handle, timeout)
        if status is None:
            return await report_timeout(lc, handle, timeout)
        if status.state is ResourceState.ACTIVE:
            team = (await team_status(handle)).team
            typer.secho(f"{handle.id} is active", fg="green")
            for instance in team.instances if team else []:
                typer.echo(f"  replica {instance.replica}: {instance.endpoint}")
            return EXIT_ACTIVE
        if status.state in FAILED_STATES:
            typer.secho(
                f"{handle.id} {status.state.value}: {status.failure_reason}", fg="red", err=True
            )
            return EXIT_FAILED
        typer.echo(f"{handle.id} is {status.state.value}")
        return EXIT_OTHER

    raise typer.Exit(_run(main()))
