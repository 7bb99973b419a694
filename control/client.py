"""The Temporal client facade: start lifecycles, send commands, ask workflows where they are.

Registering is idempotent: the workflow id is the resource's (`resource/{type}/{id}`) and a start
that finds it running returns the running one (USE_EXISTING).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter

from control.sources import directory_version, mcp_source, resource_id_from
from state.machines import ResourceType
from state.models import (
    CommandRequest,
    LifecyclePolicy,
    LifecycleStatus,
    McpLifecycleInput,
    McpServerSpec,
    ResourceRef,
    TransitionView,
    workflow_id_for,
)
from state.settings import RsmSettings
from workflows.mcp_lifecycle import McpLifecycleWorkflow
from workflows.search_attributes import OWNER_TEAM, RESOURCE_STATE, RESOURCE_TYPE

COMMANDS = ("retry", "deactivate", "activate", "archive")


class LifecycleClient:
    def __init__(self, client: Client, settings: RsmSettings) -> None:
        self.client = client
        self.settings = settings

    @classmethod
    async def connect(cls, settings: RsmSettings) -> LifecycleClient:
        client = await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            data_converter=pydantic_data_converter,
        )
        return cls(client, settings)

    def handle(
        self, resource_type: ResourceType | str, resource_id: str
    ) -> WorkflowHandle[Any, Any]:
        return self.client.get_workflow_handle(workflow_id_for(resource_type, resource_id))

    def ui_link(self, workflow_id: str) -> str:
        return self.settings.workflow_ui_link(workflow_id)

    async def register_mcp(
        self,
        path: Path,
        *,
        resource_id: str | None = None,
        owner_team: str = "",
        actor: str = "cli",
        policy: LifecyclePolicy | None = None,
        task_queue: str | None = None,
    ) -> WorkflowHandle[McpLifecycleWorkflow, Any]:
        source = mcp_source(path)
        ref = ResourceRef(
            resource_type=ResourceType.MCP_SERVER,
            resource_id=resource_id or resource_id_from(source.name),
        )
        spec = McpServerSpec(context_path=str(source), version=directory_version(source))
        lifecycle_input = McpLifecycleInput(
            ref=ref,
            name=source.name,
            owner_team=owner_team,
            spec=spec,
            policy=(policy or LifecyclePolicy()).model_copy(update={"actor": actor}),
        )
        return await self.client.start_workflow(
            McpLifecycleWorkflow.run,
            lifecycle_input,
            id=ref.workflow_id,
            task_queue=task_queue or self.settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(RESOURCE_TYPE, ref.resource_type.value),
                    SearchAttributePair(RESOURCE_STATE, "created"),
                    SearchAttributePair(OWNER_TEAM, owner_team),
                ]
            ),
        )

    async def status(self, handle: WorkflowHandle[Any, Any]) -> LifecycleStatus:
        return await handle.query("get_status", result_type=LifecycleStatus)

    async def transitions(self, handle: WorkflowHandle[Any, Any]) -> list[TransitionView]:
        return await handle.query("get_transitions", result_type=list[TransitionView])

    async def command(
        self, handle: WorkflowHandle[Any, Any], command: str, actor: str, reason: str = ""
    ) -> None:
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}; one of {', '.join(COMMANDS)}")
        await handle.signal(command, CommandRequest(actor=actor, reason=reason))

    async def progress(self, handle: WorkflowHandle[Any, Any]) -> dict[str, Any] | None:
        """The latest heartbeat of the step in flight (a build's current Dockerfile step)."""
        description = await handle.describe()
        for pending in description.raw_description.pending_activities:
            if pending.heartbeat_details.payloads:
                values = await self.client.data_converter.decode(pending.heartbeat_details.payloads)
                if values and isinstance(values[0], dict):
                    return {"activity": pending.activity_type.name, **values[0]}
        return None
