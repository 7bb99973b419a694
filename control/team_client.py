"""Starting a team's lifecycle from its manifest (the client facade's team part).

`register_team` loads and checks the manifest first (a bad one raises `ManifestError` naming the
field, before anything is started), derives the version (the build context's content hash, or the
image reference), and starts `resource/team/<id>` with the USE_EXISTING conflict policy, so
registering twice returns the running lifecycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from control.client import LifecycleClient
from control.sources import directory_version
from state.machines import ResourceState, ResourceType
from state.models import LifecyclePolicy, ResourceRef
from state.team_models import (
    ManifestError,
    TeamLifecycleInput,
    TeamManifest,
    TeamStatus,
    load_manifest,
)
from workflows.search_attributes import OWNER_TEAM, RESOURCE_STATE, RESOURCE_TYPE
from workflows.team_lifecycle import TeamLifecycleWorkflow


def team_version(manifest: TeamManifest) -> str:
    if manifest.build is not None:
        return directory_version(Path(manifest.build))
    assert manifest.image is not None
    return manifest.image


async def register_team(
    lc: LifecycleClient,
    manifest_path: Path,
    actor: str = "cli",
    owner: str = "",
    policy: LifecyclePolicy | None = None,
    *,
    resource_id: str | None = None,
    task_queue: str | None = None,
) -> WorkflowHandle[TeamLifecycleWorkflow, Any]:
    """Start (or find running) the lifecycle of the team the manifest describes; `owner` defaults to
    the manifest's owner, the resource id to its name."""
    manifest = load_manifest(manifest_path)
    ref = ResourceRef(resource_type=ResourceType.TEAM, resource_id=resource_id or manifest.name)
    if (problem := manifest.self_dependency(ref.resource_id)) is not None:
        field, message = problem.split(": ", 1)
        raise ManifestError(str(manifest_path), [(field, message)])
    owner_team = owner or manifest.owner
    version = team_version(manifest)
    await lc.refuse_conflicting_registration(
        ref,
        version,
        f"rsm command {ref.resource_id} redeploy --path {manifest.build}"
        if manifest.build
        else f"rsm command {ref.resource_id} redeploy (the new image as the version)",
    )
    lifecycle_input = TeamLifecycleInput(
        ref=ref,
        name=manifest.name,
        owner_team=owner_team,
        manifest=manifest,
        version=version,
        policy=(policy or LifecyclePolicy()).model_copy(update={"actor": actor}),
    )
    return await lc.client.start_workflow(
        TeamLifecycleWorkflow.run,
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


async def team_status(handle: WorkflowHandle[Any, Any]) -> TeamStatus:
    return await handle.query("get_status", result_type=TeamStatus)
