"""The connection the seed's managers share (what the seed called `supabase`).

The seed's managers are synchronous; rsm's client facade and stores are asyncio. A `StateClient`
owns one event loop on a thread of its own and runs every call there, so the managers can be called
from plain scripts, from threads, and from inside another running event loop alike.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from pydantic import SecretStr

from control.client import LifecycleClient
from state.settings import RsmSettings
from state.store import StateStore
from state.store_factory import store_from_settings, store_location

T = TypeVar("T")
DEFAULT_TIMEOUT = 60.0


class StateManagerUnavailable(ConnectionError):
    """Temporal or the database could not be reached; the message says which and where."""


class StateClient:
    def __init__(
        self, settings: RsmSettings | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.settings = settings or RsmSettings()
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="rsm-state-manager", daemon=True
        )
        self._thread.start()
        self._store: StateStore | None = None
        self._lifecycle: LifecycleClient | None = None
        # What _connect is waiting for, so a timeout names the one that did not answer.
        self._connecting_to = "the store"
        # A script that never closes its client still shuts the loop down cleanly at exit.
        atexit.register(self.close)
        connecting = asyncio.run_coroutine_threadsafe(self._connect(), self._loop)
        try:
            connecting.result(timeout)
        except FutureTimeout:
            connecting.cancel()
            self.close()
            raise StateManagerUnavailable(
                f"no answer within {timeout:g}s from {self._connecting_to}"
            ) from None
        except Exception as err:
            self.close()
            raise StateManagerUnavailable(str(err)) from None

    async def _connect(self) -> None:
        self._connecting_to = store_location(self.settings)
        self._store = await store_from_settings(self.settings)
        self._connecting_to = f"Temporal at {self.settings.temporal_address}"
        try:
            self._lifecycle = await LifecycleClient.connect(self.settings)
        except Exception as err:
            raise StateManagerUnavailable(
                f"cannot reach Temporal at {self.settings.temporal_address}: {err}"
                " (start the dev stack with `rsm dev up`)"
            ) from None

    @property
    def store(self) -> StateStore:
        assert self._store is not None, "StateClient is closed"
        return self._store

    @property
    def lifecycle(self) -> LifecycleClient:
        assert self._lifecycle is not None, "StateClient is closed"
        return self._lifecycle

    def call(self, make: Callable[[], Awaitable[T]], *, timeout: float | None = None) -> T:
        """Run `make()` on this client's loop and wait for it (TimeoutError after `timeout`)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("a StateClient call cannot be made from its own loop")
        if self._store is None or not self._loop.is_running():
            raise StateManagerUnavailable("this StateClient is closed")

        async def run() -> T:
            return await make()

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        try:
            return future.result(timeout or self.timeout)
        except FutureTimeout:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout or self.timeout:g}s") from None

    def close(self) -> None:
        atexit.unregister(self.close)
        if not self._loop.is_running():
            return
        store, self._store, self._lifecycle = self._store, None, None
        try:
            asyncio.run_coroutine_threadsafe(_shut_down(store), self._loop).result(10)
        except Exception:  # closing is best effort: the process may be exiting anyway
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> StateClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


async def _shut_down(store: StateStore | None) -> None:
    # The store first: it stops its own pool workers. Then a call or a connection that timed out
    # and may still be running is cancelled and let unwind, rather than stopping the loop under it
    # ("Task was destroyed but it is pending").
    if store is not None:
        await store.close()
    current = asyncio.current_task()
    pending = [task for task in asyncio.all_tasks() if task is not current]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def create_client(
    url: str | None = None,
    key: str | None = None,
    *,
    settings: RsmSettings | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> StateClient:
    """The seed's `create_client(url, key)`: a Supabase project URL and service-role key, or a
    Postgres URL (key unused); with neither, the environment (`RSM_*`, `SUPABASE_*`) decides. Temporal
    is found through `RSM_TEMPORAL_ADDRESS` (the dev stack's by default)."""
    base = settings or RsmSettings()
    if url and url.startswith(("http://", "https://")):
        if not key:
            raise StateManagerUnavailable(f"a Supabase URL ({url}) needs its service-role key")
        base = base.model_copy(
            update={"supabase_url": url, "supabase_service_role_key": SecretStr(key)}
        )
    elif url:
        base = base.model_copy(
            update={
                "database_url_override": url,
                "supabase_url": None,
                "supabase_service_role_key": None,
            }
        )
    return StateClient(base, timeout=timeout)
