"""Fixtures for tests that need a real n8n: one server per test session (installed by
scripts/install_n8n.sh; the tests are skipped, with that reason, when it is not), a connection for
the webhook-path query, and a client of n8n's public API.

A test module loads them with `pytest_plugins = ["tests.n8n_fixtures"]` (and never imports this
module itself): registered once as a plugin, the session fixtures exist once per session however
many modules use them. Plain helpers live in tests/n8n_helpers.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from activities.n8n_activities import N8nApi
from state.n8n_queries import N8nQueries
from workers.services.n8n import N8nAccess, N8nServer, n8n_binary, n8n_install_dir

N8N_MISSING_REASON = (
    f"n8n is not installed in {n8n_install_dir()}: run scripts/install_n8n.sh (CI does, once)"
)


@pytest.fixture(scope="session")
def n8n_access(session_dir: Path) -> Iterator[N8nAccess]:
    if n8n_binary() is None:
        pytest.skip(N8N_MISSING_REASON)
    server = N8nServer(session_dir / "n8n-state")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def n8n_queries(pg_dsn: str) -> AsyncIterator[N8nQueries]:
    queries = await N8nQueries.connect(pg_dsn)
    yield queries
    await queries.close()


@pytest.fixture
async def n8n_api(n8n_access: N8nAccess) -> AsyncIterator[N8nApi]:
    api = N8nApi.connect(n8n_access.base_url, n8n_access.api_key)
    yield api
    await api.close()
