"""Payloads of the messages people and other resources send to a lifecycle: approvals,
requirement updates, dependency changes, operator commands, manual transitions, and the policy that
decides what a resource must wait for before it may become active."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from state.machines import ResourceState
from state.models import (  # noqa: F401  (re-exported: the policy's parts live with the policy)
    MAX_REASON,
    ApprovalDecision,
    ApprovalPolicy,
    JsonObject,
    RequirementSpec,
    RequirementStatus,
    RequirementType,
    ResourceRef,
    Text,
)

CommandName = Literal["retry", "deactivate", "activate", "redeploy", "scale", "archive"]
COMMAND_NAMES: tuple[str, ...] = ("retry", "deactivate", "activate", "redeploy", "scale", "archive")


class RequirementUpdate(BaseModel):
    # Shown in BlockedOn (a search attribute Temporal caps at 2 KB for all of them together).
    name: Text = Field(min_length=1, max_length=200)
    status: RequirementStatus
    requirement_type: RequirementType = "other"
    actor: Text = "operator"
    reason: Text = Field(default="", max_length=MAX_REASON)
    # Free-form facts about the requirement (where a credential was verified, ...); kept on its row.
    details: JsonObject = Field(default_factory=dict)


class DependencyChange(BaseModel):
    ref: ResourceRef
    state: ResourceState


class OperatorCommand(BaseModel):
    command: CommandName
    actor: Text = Field(default="operator", min_length=1)
    reason: Text = Field(default="", max_length=MAX_REASON)
    # redeploy: the new source (a directory for MCP servers and teams) and its version.
    context_path: Text | None = None
    version: Text | None = None
    # scale: the new replica count.
    replicas: int | None = Field(default=None, ge=0, le=100)


class ManualTransition(BaseModel):
    to_state: ResourceState
    actor: Text = Field(min_length=1)
    reason: Text = Field(min_length=1, max_length=MAX_REASON)
    # Recorded on the transition's row (an image tag, an n8n id, a validation report).
    metadata: JsonObject = Field(default_factory=dict)


class CommandResult(BaseModel):
    accepted: bool
    state: ResourceState
    message: str = ""


class RequirementRecord(BaseModel):
    """A requirement as the store keeps it (`deployment_requirements`)."""

    resource_id: str
    name: str
    requirement_type: RequirementType
    status: RequirementStatus
    details: dict[str, Any] = Field(default_factory=dict)


class DependencyLinks(BaseModel):
    ref: ResourceRef
    depends_on: list[ResourceRef] = Field(default_factory=list)


class DependentsQuery(BaseModel):
    ref: ResourceRef
    only_state: str | None = None
