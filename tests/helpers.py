"""Test helpers in the style of sdk-python's tests: a worker on a test's own queue, assert_eventually."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from temporalio.client import Client
from temporalio.worker import Worker

from workers.worker import new_worker

T = TypeVar("T")


def unique_id(prefix: str = "r") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def running_worker(
    client: Client, task_queue: str, activities: list[Any], workflows: list[type] | None = None
) -> AsyncIterator[Worker]:
    kwargs: dict[str, Any] = {}
    if workflows is not None:
        kwargs["workflows"] = workflows
    worker = new_worker(client, task_queue, activities, **kwargs)
    async with worker:
        yield worker


async def assert_eventually(
    check: Callable[[], Awaitable[T]], timeout: float = 30.0, interval: float = 0.1
) -> T:
    """Call check until it returns without AssertionError (sdk-python's helper)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(interval)
