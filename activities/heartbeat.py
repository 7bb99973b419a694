"""A heartbeat ticker for long activities whose progress arrives irregularly (builds, rollouts)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from temporalio import activity


class Progress:
    """Holds the latest progress detail; a background task heartbeats it every `interval` seconds,
    so a build step that prints nothing for minutes still proves the worker is alive."""

    def __init__(self) -> None:
        self.detail: dict[str, Any] = {}

    def update(self, **detail: Any) -> None:
        self.detail.update(detail)


@contextlib.asynccontextmanager
async def heartbeating(interval: float = 2.0) -> AsyncIterator[Progress]:
    progress = Progress()

    async def tick() -> None:
        while True:
            activity.heartbeat(dict(progress.detail))
            await asyncio.sleep(interval)

    task = asyncio.create_task(tick())
    try:
        yield progress
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
