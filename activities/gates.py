"""What a lifecycle's gates need from the store: requirement rows, dependency links, who depends on
whom. The workflow keeps the gate's live state; these activities mirror it into the database (for
`resources_awaiting_action`) and answer questions only the database can."""

from __future__ import annotations

from temporalio import activity

from state.commands import DependencyLinks, DependentsQuery, RequirementRecord
from state.models import ResourceRef
from state.store import StateStore


class GateActivities:
    def __init__(self, store: StateStore) -> None:
        self._store = store

    @activity.defn(name="record_requirement")
    async def record_requirement(self, record: RequirementRecord) -> RequirementRecord:
        return await self._store.upsert_requirement(record)

    @activity.defn(name="list_requirements")
    async def list_requirements(self, ref: ResourceRef) -> list[RequirementRecord]:
        """The requirements the database holds for a resource (a restarted lifecycle's gates)."""
        return await self._store.list_requirements(ref.resource_id)

    @activity.defn(name="link_dependencies")
    async def link_dependencies(self, links: DependencyLinks) -> dict[str, str]:
        """Record the links first, then read the dependencies' states: a dependency that becomes
        active after this read finds the link and signals us, one that did before is in the answer."""
        await self._store.set_dependencies(links.ref, links.depends_on)
        return await self._store.current_states(links.depends_on)

    @activity.defn(name="list_dependents")
    async def list_dependents(self, query: DependentsQuery) -> list[ResourceRef]:
        return await self._store.list_dependents(query.ref, query.only_state)
