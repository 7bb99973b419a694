"""The Temporal client facade: start lifecycles, send commands, ask workflows where they are.

Registering is idempotent: the workflow id is the resource's (`resource/{type}/{id}`) and a start
that finds it running returns the running one (USE_EXISTING).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from control.sources import directory_version, mcp_source, n8n_export, resource_id_from
from state.commands import (
    COMMAND_NAMES,
    ApprovalDecision,
    CommandResult,
    ManualTransition,
    OperatorCommand,
    RequirementStatus,
    RequirementUpdate,
)
from state.machines import ResourceState, ResourceType
from state.models import (
    CommandRequest,
    LifecyclePolicy,
    LifecycleResult,
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

COMMANDS = COMMAND_NAMES


class CommandRefused(Exception):
    """The lifecycle refused a command, an approval or a transition; the message says why."""


class RegistrationRefused(Exception):
    """Registering would not do what the caller means: the id is archived, or its lifecycle runs
    another version (a start would silently return that one). The message says what to do."""


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

    async def refuse_conflicting_registration(
        self, ref: ResourceRef, version: str, redeploy_hint: str
    ) -> None:
        """Raise RegistrationRefused when the id was archived or its running lifecycle has another
        version; registering the same version again stays harmless (the running one is returned).
        Bounded: callers (the API) have their own deadline, and no answer only skips the check."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._registration_conflict(ref, version, redeploy_hint), 1.0)

    async def _registration_conflict(
        self, ref: ResourceRef, version: str, redeploy_hint: str
    ) -> None:
        handle = self.handle(ref.resource_type, ref.resource_id)
        try:
            described = await handle.describe()
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return
            raise
        if described.status is WorkflowExecutionStatus.COMPLETED:
            done = self.client.get_workflow_handle(ref.workflow_id, result_type=LifecycleResult)
            result = await done.result()
            if result.final_state is ResourceState.ARCHIVED:
                raise RegistrationRefused(
                    f"{ref.workflow_id} was archived: an archived id is not reused; register the"
                    " resource under a new --id"
                )
            return
        if described.status is not WorkflowExecutionStatus.RUNNING:
            return  # terminated or failed: a new lifecycle adopts what the database recorded
        try:
            current = await handle.query("get_status", rpc_timeout=timedelta(seconds=1))
        except (RPCError, WorkflowQueryFailedError):
            return  # no worker answers now: the start returns the running lifecycle as before
        running = current.get("version") if isinstance(current, dict) else None
        if running is not None and running != version:
            raise RegistrationRefused(
                f"{ref.workflow_id} is already registered and runs version {running}"
                f" ({current.get('state')}); this source is version {version}. To deploy it:"
                f" {redeploy_hint}"
            )

    async def register_mcp(
        self,
        path: Path,
        *,
        resource_id: str | None = None,
        owner_team: str = "",
        actor: str = "cli",
        policy: LifecyclePolicy | None = None,
        task_queue: str | None = None,
        runtime: Literal["docker", "kubernetes"] | None = None,
    ) -> WorkflowHandle[McpLifecycleWorkflow, Any]:
        source = mcp_source(path)
        ref = ResourceRef(
            resource_type=ResourceType.MCP_SERVER,
            resource_id=resource_id or resource_id_from(source.name),
        )
        spec = McpServerSpec(
            context_path=str(source),
            version=directory_version(source),
            runtime=runtime or self.settings.default_runtime,
        )
        await self.refuse_conflicting_registration(
            ref, spec.version, f"rsm command {ref.resource_id} redeploy --path {source}"
        )
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
        """Fire-and-forget: the signal form (what `temporal workflow signal` sends too)."""
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}; one of {', '.join(COMMANDS)}")
        if command in {"redeploy", "scale"}:
            await handle.signal(
                command,
                OperatorCommand.model_validate(
                    {"command": command, "actor": actor, "reason": reason}
                ),
            )
        else:
            await handle.signal(command, CommandRequest(actor=actor, reason=reason))

    async def _update(
        self, handle: WorkflowHandle[Any, Any], name: str, args: list[Any]
    ) -> CommandResult:
        try:
            return await handle.execute_update(name, args=args, result_type=CommandResult)
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            raise CommandRefused(message) from None

    async def approve(
        self, resource_type: ResourceType | str, resource_id: str, approver: str, reason: str = ""
    ) -> CommandResult:
        """Approve now: refused at once for self-approval, an approver the policy does not allow,
        or when nothing awaits approval."""
        decision = ApprovalDecision(approver=approver, reason=reason)
        return await self._update(
            self.handle(resource_type, resource_id), "decide", [decision, True]
        )

    async def reject(
        self, resource_type: ResourceType | str, resource_id: str, approver: str, reason: str = ""
    ) -> CommandResult:
        decision = ApprovalDecision(approver=approver, reason=reason)
        return await self._update(
            self.handle(resource_type, resource_id), "decide", [decision, False]
        )

    async def update_requirement(
        self,
        resource_type: ResourceType | str,
        resource_id: str,
        name: str,
        status: RequirementStatus,
        actor: str,
        reason: str = "",
        requirement_type: str = "other",
    ) -> None:
        update = RequirementUpdate.model_validate(
            {
                "name": name,
                "status": status,
                "actor": actor,
                "reason": reason,
                "requirement_type": requirement_type,
            }
        )
        await self.handle(resource_type, resource_id).signal("requirement_updated", update)

    async def run_command(
        self,
        resource_type: ResourceType | str,
        resource_id: str,
        command: str,
        actor: str,
        reason: str = "",
        **args: Any,
    ) -> CommandResult:
        """A command with an answer: refused at once when it is illegal in the current state."""
        if command not in COMMANDS:
            raise CommandRefused(f"unknown command {command!r}; one of {', '.join(COMMANDS)}")
        if command == "redeploy" and "path" in args:
            path = Path(args.pop("path"))
            if ResourceType(resource_type) is ResourceType.N8N_WORKFLOW:
                # An n8n workflow's new version is one export file, which the worker reads.
                export, _, version, _ = n8n_export(path)
                args.update(context_path=str(export), version=version)
            else:
                what = (
                    "a team's new version is its build directory (the manifest's `build`), with a"
                    " Dockerfile; an image team is redeployed with --version IMAGE"
                    if ResourceType(resource_type) is ResourceType.TEAM
                    else "an MCP server is a directory with a Dockerfile"
                )
                source = mcp_source(path, what)
                args.update(context_path=str(source), version=directory_version(source))
        request = OperatorCommand.model_validate(
            {"command": command, "actor": actor, "reason": reason, **args}
        )
        result = await self._update(self.handle(resource_type, resource_id), "command", [request])
        if not result.accepted:
            raise CommandRefused(result.message)
        return result

    async def transition(
        self,
        resource_type: ResourceType | str,
        resource_id: str,
        to_state: ResourceState | str,
        actor: str,
        reason: str,
    ) -> CommandResult:
        """A manual transition, checked against the resource's machine."""
        request = ManualTransition(to_state=ResourceState(to_state), actor=actor, reason=reason)
        result = await self._update(
            self.handle(resource_type, resource_id), "transition", [request]
        )
        if not result.accepted:
            raise CommandRefused(result.message)
        return result

    async def progress(self, handle: WorkflowHandle[Any, Any]) -> dict[str, Any] | None:
        """The latest heartbeat of the step in flight (a build's current Dockerfile step)."""
        description = await handle.describe()
        for pending in description.raw_description.pending_activities:
            if pending.heartbeat_details.payloads:
                values = await self.client.data_converter.decode(pending.heartbeat_details.payloads)
                if values and isinstance(values[0], dict):
                    return {"activity": pending.activity_type.name, **values[0]}
        return None
