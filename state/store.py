"""The store protocol: what workflows' activities, the CLI and the API need from persistence.

Adapters (Postgres direct now, Supabase later) implement it; one contract test suite runs against
every adapter that can be reached.
"""

from __future__ import annotations

from typing import Protocol

from state.commands import RequirementRecord
from state.models import (
    RegisterResourceRequest,
    ResourceRef,
    ResourceRow,
    TransitionRecord,
    TransitionRequest,
)


class StateStore(Protocol):
    async def register_resource(self, request: RegisterResourceRequest) -> ResourceRow:
        """Insert the resource in `created` (with its first history row) or return the existing one."""
        ...

    async def record_transition(self, request: TransitionRequest) -> TransitionRecord:
        """Move the resource atomically; a repeated idempotency key returns the first result."""
        ...

    async def get_resource(self, resource_id: str) -> ResourceRow | None: ...

    async def list_resources(
        self, resource_type: str | None = None, state: str | None = None
    ) -> list[ResourceRow]: ...

    async def list_transitions(
        self, resource_id: str, limit: int = 200
    ) -> list[TransitionRecord]: ...

    async def upsert_requirement(self, record: RequirementRecord) -> RequirementRecord: ...

    async def list_requirements(self, resource_id: str) -> list[RequirementRecord]: ...

    async def set_dependencies(self, ref: ResourceRef, depends_on: list[ResourceRef]) -> None:
        """Replace what `ref` depends on."""
        ...

    async def list_dependents(
        self, ref: ResourceRef, state: str | None = None
    ) -> list[ResourceRef]:
        """Resources (not archived) that depend on `ref`, optionally only those in `state`."""
        ...

    async def current_states(self, refs: list[ResourceRef]) -> dict[str, str]: ...

    async def close(self) -> None: ...
