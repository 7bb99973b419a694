"""The state machines as data: seed arrows present, everything reachable, nothing stuck."""

from __future__ import annotations

import pytest

from state.machines import MACHINES, ResourceState, ResourceType, machine_arrows_sql, machine_for
from tests.conftest import REPO

S = ResourceState

SEED_ARROWS = {
    ResourceType.N8N_WORKFLOW: [
        (S.CREATED, S.REGISTERED),
        (S.REGISTERED, S.VALIDATING),
        (S.VALIDATING, S.VALIDATED),
        (S.VALIDATED, S.DEPLOYING),
        (S.DEPLOYING, S.DEPLOYED),
        (S.DEPLOYED, S.ACTIVE),
        (S.VALIDATING, S.FAILED_VALIDATION),
        (S.DEPLOYING, S.FAILED),
        (S.DEPLOYED, S.INACTIVE),
        (S.ACTIVE, S.ARCHIVED),
    ],
    ResourceType.MCP_SERVER: [
        (S.CREATED, S.REGISTERED),
        (S.REGISTERED, S.BUILDING),
        (S.BUILDING, S.BUILT),
        (S.BUILT, S.DEPLOYING),
        (S.DEPLOYING, S.DEPLOYED),
        (S.DEPLOYED, S.HEALTH_CHECKING),
        (S.HEALTH_CHECKING, S.AVAILABLE),
        (S.AVAILABLE, S.ACTIVE),
        (S.BUILDING, S.FAILED),
        (S.DEPLOYING, S.FAILED),
        (S.HEALTH_CHECKING, S.FAILED),
        (S.ACTIVE, S.INACTIVE),
    ],
    ResourceType.TEAM: [
        (S.CREATED, S.REGISTERED),
        (S.REGISTERED, S.BUILDING),
        (S.BUILDING, S.BUILT),
        (S.BUILT, S.DEPLOYING),
        (S.DEPLOYING, S.DEPLOYED),
        (S.DEPLOYED, S.ACTIVE),
        (S.DEPLOYED, S.AWAITING_DEPENDENCIES),
        (S.AWAITING_DEPENDENCIES, S.DEPLOYED),
        (S.AWAITING_DEPENDENCIES, S.ACTIVE),
        (S.ACTIVE, S.SCALING),
        (S.SCALING, S.ACTIVE),
    ],
}

RECOVERY_ARROWS = [
    (S.FAILED, S.REGISTERED),
    (S.INACTIVE, S.ACTIVE),
    (S.ACTIVE, S.INACTIVE),
    (S.ACTIVE, S.ARCHIVED),
    (S.FAILED, S.ARCHIVED),
    (S.INACTIVE, S.ARCHIVED),
]


@pytest.mark.parametrize("resource_type", list(ResourceType))
def test_every_seed_and_recovery_arrow_is_present(resource_type: ResourceType) -> None:
    machine = machine_for(resource_type)
    missing = [a for a in SEED_ARROWS[resource_type] + RECOVERY_ARROWS if not machine.allows(*a)]
    assert missing == []


@pytest.mark.parametrize("resource_type", list(ResourceType))
def test_every_state_is_reachable_from_created(resource_type: ResourceType) -> None:
    machine = machine_for(resource_type)
    assert machine.states - machine.reachable_from(S.CREATED) == set()


@pytest.mark.parametrize("resource_type", list(ResourceType))
def test_no_state_is_stuck(resource_type: ResourceType) -> None:
    """From every state but archived, some path reaches active or archived."""
    machine = machine_for(resource_type)
    stuck = [
        s
        for s in machine.states - {S.ARCHIVED}
        if not machine.reachable_from(s) & {S.ACTIVE, S.ARCHIVED} - {s} and s is not S.ACTIVE
    ]
    assert stuck == []
    assert machine.targets(S.ARCHIVED) == set(), "archived is final"


def test_machines_are_versioned_per_type() -> None:
    assert set(MACHINES) == set(ResourceType)
    assert all(m.version >= 1 and m.resource_type is t for t, m in MACHINES.items())


def test_the_committed_migration_matches_the_python_machines() -> None:
    committed = (REPO / "supabase/migrations/20261203000002_machine_arrows.sql").read_text()
    assert committed == machine_arrows_sql(), (
        "regenerate: python -m state.machines > supabase/migrations/20261203000002_machine_arrows.sql"
    )
