"""The three lifecycle state machines, as data.

The Python definition is the source of truth. `machine_arrows_sql()` renders the same arrows as SQL for
the migration that fills `state_machine_arrows`, which the database's `record_transition` function
checks; a test keeps the committed migration equal to this module.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise


class ResourceType(StrEnum):
    N8N_WORKFLOW = "n8n_workflow"
    MCP_SERVER = "mcp_server"
    TEAM = "team"


class ResourceState(StrEnum):
    CREATED = "created"
    REGISTERED = "registered"
    VALIDATING = "validating"
    VALIDATED = "validated"
    FAILED_VALIDATION = "failed_validation"
    BUILDING = "building"
    BUILT = "built"
    DEPLOYING = "deploying"
    DEPLOYED = "deployed"
    HEALTH_CHECKING = "health_checking"
    AVAILABLE = "available"
    ACTIVE = "active"
    INACTIVE = "inactive"
    FAILED = "failed"
    ARCHIVED = "archived"
    AWAITING_DEPENDENCIES = "awaiting_dependencies"
    SCALING = "scaling"


S = ResourceState

# States a resource rests in until a person or an event moves it; each may be archived.
# `available` rests at the approval/requirements gate of an MCP server, so it may be archived too.
SETTLED_STATES: frozenset[ResourceState] = frozenset(
    {
        S.REGISTERED,
        S.ACTIVE,
        S.INACTIVE,
        S.FAILED,
        S.FAILED_VALIDATION,
        S.AWAITING_DEPENDENCIES,
        S.AVAILABLE,
    }
)
FAILURE_STATES: frozenset[ResourceState] = frozenset({S.FAILED, S.FAILED_VALIDATION})


@dataclass(frozen=True)
class StateMachine:
    resource_type: ResourceType
    version: int
    arrows: frozenset[tuple[ResourceState, ResourceState]]

    def allows(self, from_state: ResourceState, to_state: ResourceState) -> bool:
        return (from_state, to_state) in self.arrows

    def targets(self, from_state: ResourceState) -> set[ResourceState]:
        return {t for f, t in self.arrows if f == from_state}

    @property
    def states(self) -> set[ResourceState]:
        return {s for arrow in self.arrows for s in arrow}

    def reachable_from(self, start: ResourceState) -> set[ResourceState]:
        seen = {start}
        queue = deque([start])
        while queue:
            for nxt in self.targets(queue.popleft()):
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append(nxt)
        return seen


def _chain(*states: ResourceState) -> set[tuple[ResourceState, ResourceState]]:
    return set(pairwise(states))


def _with_recovery(
    arrows: set[tuple[ResourceState, ResourceState]],
) -> frozenset[tuple[ResourceState, ResourceState]]:
    """Add the arrows every type shares: retry after failure, (de)activation, and archiving from
    each settled state the machine actually uses (a machine never gains a state it cannot reach)."""
    arrows = arrows | {(S.FAILED, S.REGISTERED), (S.ACTIVE, S.INACTIVE), (S.INACTIVE, S.ACTIVE)}
    used = {s for arrow in arrows for s in arrow}
    arrows |= {(settled, S.ARCHIVED) for settled in SETTLED_STATES & used}
    return frozenset(arrows)


_N8N_ARROWS = _chain(
    S.CREATED, S.REGISTERED, S.VALIDATING, S.VALIDATED, S.DEPLOYING, S.DEPLOYED, S.ACTIVE
) | {
    (S.VALIDATING, S.FAILED_VALIDATION),
    (S.DEPLOYING, S.FAILED),
    (S.DEPLOYED, S.FAILED),
    (S.DEPLOYED, S.INACTIVE),
    (S.FAILED_VALIDATION, S.REGISTERED),
    (S.INACTIVE, S.DEPLOYING),
    # A new version of the export is validated again before it replaces the live one.
    (S.ACTIVE, S.VALIDATING),
}

_MCP_ARROWS = _chain(
    S.CREATED,
    S.REGISTERED,
    S.BUILDING,
    S.BUILT,
    S.DEPLOYING,
    S.DEPLOYED,
    S.HEALTH_CHECKING,
    S.AVAILABLE,
    S.ACTIVE,
) | {
    (S.BUILDING, S.FAILED),
    (S.DEPLOYING, S.FAILED),
    (S.HEALTH_CHECKING, S.FAILED),
    (S.AVAILABLE, S.FAILED),
    (S.AVAILABLE, S.INACTIVE),
    (S.INACTIVE, S.DEPLOYING),
    # Redeploy: a running server builds its new version, or is rolled back to the last good one.
    (S.ACTIVE, S.BUILDING),
    (S.FAILED, S.BUILDING),
    (S.FAILED, S.DEPLOYING),
    (S.ACTIVE, S.FAILED),
}

_TEAM_ARROWS = _chain(
    S.CREATED, S.REGISTERED, S.BUILDING, S.BUILT, S.DEPLOYING, S.DEPLOYED, S.ACTIVE
) | {
    (S.BUILDING, S.FAILED),
    (S.DEPLOYING, S.FAILED),
    (S.DEPLOYED, S.FAILED),
    (S.DEPLOYED, S.AWAITING_DEPENDENCIES),
    (S.AWAITING_DEPENDENCIES, S.DEPLOYED),
    (S.AWAITING_DEPENDENCIES, S.ACTIVE),
    (S.AWAITING_DEPENDENCIES, S.FAILED),
    # A dependency that leaves `active` sends its dependents back to waiting.
    (S.ACTIVE, S.AWAITING_DEPENDENCIES),
    (S.ACTIVE, S.SCALING),
    (S.SCALING, S.ACTIVE),
    (S.SCALING, S.FAILED),
    (S.INACTIVE, S.DEPLOYING),
    (S.ACTIVE, S.BUILDING),
    (S.FAILED, S.BUILDING),
    (S.ACTIVE, S.FAILED),
}

MACHINES: dict[ResourceType, StateMachine] = {
    ResourceType.N8N_WORKFLOW: StateMachine(
        ResourceType.N8N_WORKFLOW, 1, _with_recovery(_N8N_ARROWS)
    ),
    ResourceType.MCP_SERVER: StateMachine(ResourceType.MCP_SERVER, 1, _with_recovery(_MCP_ARROWS)),
    ResourceType.TEAM: StateMachine(ResourceType.TEAM, 1, _with_recovery(_TEAM_ARROWS)),
}


def machine_for(resource_type: ResourceType | str) -> StateMachine:
    return MACHINES[ResourceType(resource_type)]


def machine_arrows_sql() -> str:
    """SQL that writes every machine's arrows; idempotent, so it is safe to apply again."""
    lines = [
        "-- Generated by `python -m state.machines` from state/machines.py: do not edit by hand.",
        "insert into public.state_machine_arrows"
        " (resource_type, machine_version, from_state, to_state) values",
    ]
    rows = [
        f"  ('{m.resource_type.value}', {m.version}, '{f.value}', '{t.value}')"
        for m in MACHINES.values()
        for f, t in sorted(m.arrows)
    ]
    lines.append(",\n".join(rows))
    lines.append("on conflict do nothing;")
    lines.append("")
    lines.append("notify pgrst, 'reload schema';")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(machine_arrows_sql(), end="")
