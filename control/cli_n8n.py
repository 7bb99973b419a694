"""`rsm register workflow FILE`: register an n8n workflow export and start its lifecycle, plus the
client facade that starts it (`start_n8n_lifecycle`).

The file is sent as it is, even when it does not parse: validation is the lifecycle's job, so a
broken export is recorded as `failed_validation` with every problem, and `--wait` prints them.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import typer
from temporalio.client import WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from control.cli import _run, nonempty_id, register_app
from control.cli_output import (
    EXIT_ACTIVE,
    EXIT_FAILED,
    EXIT_OTHER,
    EXIT_TIMEOUT,
    FAILED_STATES,
    follow,
)
from control.client import LifecycleClient
from control.sources import n8n_export, resource_id_from
from state.machines import ResourceState, ResourceType
from state.models import LifecyclePolicy, ResourceRef
from state.n8n_models import DEFAULT_N8N_VERSION, N8nLifecycleInput, N8nStatus, N8nWorkflowSpec
from state.settings import RsmSettings
from workflows.n8n_lifecycle import N8nLifecycleWorkflow
from workflows.search_attributes import OWNER_TEAM, RESOURCE_STATE, RESOURCE_TYPE


def read_export(path: Path) -> tuple[str, str, str]:
    """(text, version, display name) of an export file; the name falls back to the file name."""
    _, text, version, name = n8n_export(path)
    return text, version, name


async def start_n8n_lifecycle(
    lc: LifecycleClient,
    workflow_json: str,
    *,
    source: str,
    name: str,
    resource_id: str,
    version: str | None = None,
    owner_team: str = "",
    actor: str = "cli",
    deploy_inactive: bool = False,
    n8n_version: str = DEFAULT_N8N_VERSION,
    policy: LifecyclePolicy | None = None,
    task_queue: str | None = None,
    **input_fields: Any,
) -> WorkflowHandle[N8nLifecycleWorkflow, Any]:
    """Start (or find running) the lifecycle `resource/n8n_workflow/<resource_id>`."""
    ref = ResourceRef(resource_type=ResourceType.N8N_WORKFLOW, resource_id=resource_id)
    spec = N8nWorkflowSpec(
        source=source,
        version=version or hashlib.sha256(workflow_json.encode()).hexdigest()[:12],
        workflow_json=workflow_json,
        n8n_version=n8n_version,
        deploy_inactive=deploy_inactive,
    )
    await lc.refuse_conflicting_registration(
        ref, spec.version, f"rsm command {resource_id} redeploy --path {source}"
    )
    lifecycle_input = N8nLifecycleInput(
        ref=ref,
        name=name,
        owner_team=owner_team,
        spec=spec,
        policy=(policy or LifecyclePolicy()).model_copy(update={"actor": actor}),
        **input_fields,
    )
    return await lc.client.start_workflow(
        N8nLifecycleWorkflow.run,
        lifecycle_input,
        id=ref.workflow_id,
        task_queue=task_queue or lc.settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(RESOURCE_TYPE, ref.resource_type.value),
                SearchAttributePair(RESOURCE_STATE, ResourceState.CREATED.value),
                SearchAttributePair(OWNER_TEAM, owner_team),
            ]
        ),
    )


async def n8n_status(handle: WorkflowHandle[Any, Any]) -> N8nStatus:
    return await handle.query("get_n8n", result_type=N8nStatus)


def _print_outcome(handle_id: str, state: ResourceState, reason: str | None, n8n: N8nStatus) -> int:
    if state is ResourceState.ACTIVE:
        typer.secho(f"{handle_id} is active as n8n workflow {n8n.n8n_workflow_id}", fg="green")
        for hook in n8n.webhooks:
            typer.echo(f"  webhook: {hook.method} /{hook.prefix}/{hook.path}")
        for req in n8n.requirements:
            typer.echo(f"  needs credential {req.credential_type} {req.name!r}")
        return EXIT_ACTIVE
    if state is ResourceState.FAILED_VALIDATION:
        typer.secho(f"{handle_id} failed_validation: {reason}", fg="red", err=True)
        for p in n8n.problems:
            where = f" [{p.node}]" if p.node else ""
            typer.echo(f"  - {p.rule.value}{where}: {p.message}", err=True)
        return EXIT_FAILED
    if state in FAILED_STATES:
        typer.secho(f"{handle_id} {state.value}: {reason}", fg="red", err=True)
        return EXIT_FAILED
    if state is ResourceState.INACTIVE:
        typer.echo(f"{handle_id} is deployed inactive as n8n workflow {n8n.n8n_workflow_id}")
        return EXIT_ACTIVE
    typer.echo(f"{handle_id} is {state.value}")
    return EXIT_OTHER


@register_app.command("workflow")
def register_workflow(
    path: Path = typer.Argument(..., help="An exported n8n workflow (JSON file)."),
    resource_id: str | None = typer.Option(
        None, "--id", help="Resource id (default: file name without .json).", callback=nonempty_id
    ),
    owner: str = typer.Option("", "--owner", help="Owner team."),
    actor: str = typer.Option("cli", "--actor", help="Who registers it (recorded on every row)."),
    deploy_inactive: bool = typer.Option(
        False,
        "--deploy-inactive",
        help="Deploy without activating (allowed without a trigger node).",
    ),
    n8n_version: str = typer.Option(
        DEFAULT_N8N_VERSION, "--n8n-version", help="n8n release whose node catalog validates it."
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow the lifecycle until it settles."),
    timeout: float = typer.Option(300, "--timeout", min=1, help="Seconds to wait with --wait."),
) -> None:
    """Register an n8n workflow export: validate it, deploy it to n8n and activate it."""
    settings = RsmSettings()
    # Absolute, as an MCP server's directory is: the row is read far from this shell.
    source = str(path.expanduser().resolve())

    async def main() -> int:
        text, version, name = read_export(path)
        lc = await LifecycleClient.connect(settings)
        handle = await start_n8n_lifecycle(
            lc,
            text,
            source=source,
            name=name,
            resource_id=resource_id or resource_id_from(path.stem),
            version=version,
            owner_team=owner,
            actor=actor,
            deploy_inactive=deploy_inactive,
            n8n_version=n8n_version,
        )
        typer.echo(f"registered {handle.id}")
        typer.echo(f"  Temporal UI: {lc.ui_link(handle.id)}")
        if not wait:
            return EXIT_ACTIVE
        status = await follow(lc, handle, timeout)
        if status is None:
            typer.secho(f"timed out after {timeout:.0f}s; still running", fg="yellow", err=True)
            return EXIT_TIMEOUT
        return _print_outcome(
            handle.id, status.state, status.failure_reason, await n8n_status(handle)
        )

    code = _run(main())
    # A short-lived process holding a Temporal client can abort in interpreter teardown
    # ("PyGILState_Release ... finalizing", SIGABRT after the output is printed): the SDK's Rust
    # threads outlive the event loop (temporalio/sdk-python#300). Everything is printed by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
