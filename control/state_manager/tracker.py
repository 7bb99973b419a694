"""StateTracker: the seed's read side (overview, awaiting action, failures, details, search,
readiness), over the store protocol so it answers the same on Postgres and on Supabase."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from control.state_manager.connection import StateClient, StateManagerUnavailable, create_client
from control.state_manager.shapes import (
    SEED_NAMES,
    history_dict,
    requirement_dict,
    resource_dict,
    resource_type_of,
)
from state.commands import RequirementRecord
from state.errors import StoreError
from state.machines import FAILURE_STATES, ResourceState, ResourceType
from state.models import LifecycleStatus, ResourceRow

T = TypeVar("T")
S = ResourceState
_AWAITING_STATES = frozenset({S.FAILED, S.FAILED_VALIDATION, S.AWAITING_DEPENDENCIES})
# Per type: the states the seed calls ready to deploy, and the key of its readiness summary.
_READY: dict[ResourceType, tuple[str, S]] = {
    ResourceType.N8N_WORKFLOW: ("workflows", S.VALIDATED),
    ResourceType.MCP_SERVER: ("mcp_servers", S.BUILT),
    ResourceType.TEAM: ("teams", S.BUILT),
}


class StateTracker:
    def __init__(self, client: StateClient | None = None) -> None:
        self.client = client if client is not None else create_client()

    def _read(self, make: Callable[[], Awaitable[T]]) -> T:
        try:
            return self.client.call(make)
        except StoreError as err:
            raise StateManagerUnavailable(str(err)) from None

    async def _rows(self, resource_type: str | None = None) -> list[ResourceRow]:
        kind = resource_type_of(resource_type).value if resource_type else None
        return await self.client.store.list_resources(kind)

    async def _requirements(self, rows: list[ResourceRow]) -> dict[str, list[RequirementRecord]]:
        store = self.client.store
        found = await asyncio.gather(*(store.list_requirements(r.resource_id) for r in rows))
        return {row.resource_id: reqs for row, reqs in zip(rows, found, strict=True)}

    def get_resource_overview(self) -> dict[str, dict[str, dict[str, Any]]]:
        """{type: {state: {"count": n, "last_transition": iso}}}, types in the seed's words."""
        overview: dict[str, dict[str, dict[str, Any]]] = {}
        for row in self._read(self._rows):
            states = overview.setdefault(SEED_NAMES[row.resource_type], {})
            entry = states.setdefault(row.current_state.value, {"count": 0, "last_transition": ""})
            entry["count"] += 1
            entry["last_transition"] = max(entry["last_transition"], row.updated_at.isoformat())
        return overview

    def get_resources_awaiting_action(self, limit: int = 50) -> list[dict[str, Any]]:
        """Failed resources, teams awaiting dependencies, and any resource with a pending or failed
        requirement, newest first, each with what it waits on."""

        async def awaiting() -> list[dict[str, Any]]:
            rows = [r for r in await self._rows() if r.current_state is not S.ARCHIVED]
            requirements = await self._requirements(rows)
            found = []
            for row in rows:
                waiting = sorted(
                    f"{q.requirement_type}:{q.name}"
                    for q in requirements[row.resource_id]
                    if q.status in {"pending", "failed"}
                )
                if row.current_state in _AWAITING_STATES or waiting:
                    found.append((row, waiting))
            found.sort(key=lambda item: item[0].updated_at, reverse=True)
            return [{**resource_dict(row), "waiting_on": w} for row, w in found[:limit]]

        return self._read(awaiting)

    def get_failed_resources(self) -> list[dict[str, Any]]:
        rows = self._read(self._rows)
        return [resource_dict(r) for r in rows if r.current_state in FAILURE_STATES]

    def get_resource_details(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        kind = resource_type_of(resource_type)
        details: dict[str, Any] = {
            "resource_type": SEED_NAMES[kind],
            "resource_id": resource_id,
            "current_state": None,
            "history": [],
            "requirements": None,
        }

        async def read() -> None:
            store = self.client.store
            row = await store.get_resource(resource_id)
            if row is None or row.resource_type is not kind:
                return
            history = await store.list_transitions(resource_id, 20)
            details["current_state"] = resource_dict(row)
            details["history"] = [history_dict(t, kind) for t in reversed(history)]
            details["requirements"] = [
                requirement_dict(r) for r in await store.list_requirements(resource_id)
            ]
            details["blocked_on"] = await self._blocked_on(kind, resource_id)
            specific = {**row.spec}
            mcp_status = getattr(store, "mcp_status", None)
            if kind is ResourceType.MCP_SERVER and mcp_status is not None:
                specific.update(await mcp_status(resource_id) or {})
            key = {"workflow": "workflow", "mcp_server": "mcp", "team": "team"}[SEED_NAMES[kind]]
            details[key] = _jsonable(specific)

        self._read(read)
        return details

    async def _blocked_on(self, kind: ResourceType, resource_id: str) -> list[str] | None:
        """What the running lifecycle says it waits on; None when no lifecycle runs."""
        try:
            status = await self.client.lifecycle.handle(kind, resource_id).query(
                "get_status", result_type=LifecycleStatus
            )
        except Exception:  # archived (no running workflow) or not reachable: the rows still stand
            return None
        return list(status.blocked_on)

    def search_resources(
        self, query: str, resource_type: str | None = None, states: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Resources whose name or id contains `query` (any case), optionally of one type and in
        some states."""
        needle = query.casefold()
        wanted = set(states or [])
        rows = self._read(lambda: self._rows(resource_type))
        return [
            resource_dict(r)
            for r in rows
            if (needle in r.name.casefold() or needle in r.resource_id)
            and (not wanted or r.current_state.value in wanted)
        ]

    def get_deployment_readiness(self) -> dict[str, dict[str, Any]]:
        """Per type: how many are ready for their next stage (workflows validated, MCP servers and
        teams built, with nothing pending) and how many are blocked (teams awaiting dependencies,
        and any ready one still waiting on a requirement), with the details."""

        async def readiness() -> dict[str, dict[str, Any]]:
            summary: dict[str, dict[str, Any]] = {
                key: {"ready": 0, "blocked": 0, "details": []} for key, _ in _READY.values()
            }
            rows = await self._rows()
            requirements = await self._requirements(rows)
            for row in rows:
                key, ready_state = _READY[row.resource_type]
                pending = [q.name for q in requirements[row.resource_id] if q.status == "pending"]
                if row.current_state is ready_state and not pending:
                    state = "ready_to_deploy"
                elif row.current_state is ready_state:
                    state = "blocked_by_requirements"
                elif row.current_state is S.AWAITING_DEPENDENCIES:
                    state = "blocked_by_dependencies"
                else:
                    continue
                summary[key]["ready" if state == "ready_to_deploy" else "blocked"] += 1
                summary[key]["details"].append(
                    {
                        "id": row.resource_id,
                        "name": row.name,
                        "state": state,
                        "waiting_on": pending,
                    }
                )
            return summary

        return self._read(readiness)


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in values.items()}
