"""The seed's row shapes and vocabulary: `workflow` for n8n workflows, `resource_name`,
`transitioned_at`, ISO timestamps (plain dicts, as supabase-py returns them)."""

from __future__ import annotations

from typing import Any, get_args

from state.commands import RequirementRecord
from state.machines import ResourceType
from state.models import RequirementStatus, RequirementType, ResourceRow, TransitionRecord

REQUIREMENT_TYPES: tuple[str, ...] = get_args(RequirementType)
REQUIREMENT_STATUSES: tuple[str, ...] = get_args(RequirementStatus)

SEED_NAMES: dict[ResourceType, str] = {
    ResourceType.N8N_WORKFLOW: "workflow",
    ResourceType.MCP_SERVER: "mcp_server",
    ResourceType.TEAM: "team",
}
_ALIASES: dict[str, ResourceType] = {
    "workflow": ResourceType.N8N_WORKFLOW,
    "n8n_workflow": ResourceType.N8N_WORKFLOW,
    "mcp_server": ResourceType.MCP_SERVER,
    "mcp": ResourceType.MCP_SERVER,
    "team": ResourceType.TEAM,
}


def resource_type_of(name: str) -> ResourceType:
    """The seed's type name (or rsm's) as a ResourceType; ValueError names the accepted ones."""
    try:
        return _ALIASES[name]
    except KeyError:
        raise ValueError(
            f"unknown resource type {name!r}; one of workflow, mcp_server, team"
        ) from None


def resource_dict(row: ResourceRow) -> dict[str, Any]:
    return {
        "resource_id": row.resource_id,
        "resource_type": SEED_NAMES[row.resource_type],
        "resource_name": row.name,
        "current_state": row.current_state.value,
        "owner_team": row.owner_team,
        "version": row.version,
        "state_metadata": row.spec,
        "workflow_id": row.workflow_id,
        "registered_by": row.registered_by,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


def history_dict(record: TransitionRecord, resource_type: ResourceType) -> dict[str, Any]:
    return {
        "id": record.transition_id,
        "resource_id": record.resource_id,
        "resource_type": SEED_NAMES[resource_type],
        "from_state": record.from_state.value if record.from_state else None,
        "to_state": record.to_state.value,
        "transitioned_by": record.actor,
        "transition_reason": record.reason,
        "metadata": record.metadata,
        "transitioned_at": record.recorded_at.isoformat(),
    }


def requirement_dict(record: RequirementRecord) -> dict[str, Any]:
    return {
        "resource_id": record.resource_id,
        "requirement_type": record.requirement_type,
        "requirement_name": record.name,
        "requirement_status": record.status,
        "requirement_details": record.details,
    }
