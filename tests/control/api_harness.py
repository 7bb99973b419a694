"""Helpers for the API tests: tokens for each role, resources seeded straight into Postgres, and the API
served by a real uvicorn on a free 127.0.0.1 port (in the test's event loop for async tests, or on a
thread with its own loop for synchronous clients such as schemathesis)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from control.api.app import create_app
from control.api.auth import AccessConfig, AccessPolicy, Role, TokenEntry
from control.api.settings import ApiSettings
from control.client import LifecycleClient
from state.machines import ResourceState, ResourceType, machine_for
from state.models import RegisterResourceRequest, ResourceRef, TransitionRequest, workflow_id_for
from state.postgres import PostgresStore
from state.settings import RsmSettings
from workers.services.process import free_port


@dataclass(frozen=True)
class Tokens:
    operator: str
    approver: str
    viewer: str
    admin: str

    @classmethod
    def new(cls) -> Tokens:
        return cls(*(secrets.token_urlsafe(24) for _ in range(4)))

    def access(self, *, anonymous_read: bool = True) -> AccessPolicy:
        entries = [
            TokenEntry(actor="olga", role=Role.OPERATOR, token=SecretStr(self.operator)),
            TokenEntry(actor="alice", role=Role.APPROVER, token=SecretStr(self.approver)),
            TokenEntry(actor="vic", role=Role.VIEWER, token=SecretStr(self.viewer)),
            TokenEntry(actor="root", role=Role.ADMIN, token=SecretStr(self.admin)),
        ]
        return AccessPolicy(AccessConfig(tokens=entries, anonymous_read=anonymous_read))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def seed(
    store: PostgresStore,
    resource_type: ResourceType,
    resource_id: str,
    walk: list[ResourceState],
    *,
    owner_team: str = "",
    name: str | None = None,
) -> None:
    """A resource registered and walked through `walk` in the database only (no workflow)."""
    ref = ResourceRef(resource_type=resource_type, resource_id=resource_id)
    await store.register_resource(
        RegisterResourceRequest(
            ref=ref,
            name=name or resource_id,
            owner_team=owner_team,
            version="v1",
            workflow_id=workflow_id_for(resource_type, resource_id),
            actor="seed",
            machine_version=machine_for(resource_type).version,
        )
    )
    for i, to_state in enumerate(walk):
        await store.record_transition(
            TransitionRequest(
                ref=ref,
                to_state=to_state,
                actor="seed",
                reason=f"seeded {to_state.value}",
                idempotency_key=f"seed/{resource_id}/{i}",
            )
        )


async def add_requirement(
    store: PostgresStore, resource_id: str, requirement_type: str, name: str, status: str
) -> None:
    async with store._pool.connection() as conn:
        await conn.execute(
            "insert into public.deployment_requirements (resource_id, requirement_type, name, status)"
            " values (%s, %s, %s, %s)",
            (resource_id, requirement_type, name, status),
        )


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """uvicorn on a free port in this event loop; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.025)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


class ThreadedApi:
    """The API on its own thread and event loop, with its own store and Temporal client, for
    synchronous clients (schemathesis) that cannot share the test session's loop."""

    def __init__(
        self, settings: RsmSettings, api: ApiSettings, access: AccessPolicy, dsn: str
    ) -> None:
        self.settings, self.api, self.access, self.dsn = settings, api, access, dsn
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rsm-api", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc

    async def _main(self) -> None:
        store = await PostgresStore.connect(self.dsn, max_size=4)
        try:
            lifecycle: Any = await LifecycleClient.connect(self.settings)
            app = create_app(
                self.settings, store, lifecycle, api_settings=self.api, access=self.access
            )
            self._server = uvicorn.Server(
                uvicorn.Config(
                    app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
                )
            )
            await self._server.serve()
        finally:
            await store.close()

    def __enter__(self) -> ThreadedApi:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not (self._server and self._server.started):
            if self._error is not None:
                raise RuntimeError(f"API thread failed: {self._error!r}") from self._error
            if time.monotonic() > deadline:
                raise TimeoutError("API thread did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(15)
