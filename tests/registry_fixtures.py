"""A real container registry for tests that push: Debian's docker-registry (distribution 2.8,
installed by scripts/bootstrap.sh) on 127.0.0.1 and a free port, its config and storage in the
session's temp folder, stopped by its PID when the session ends. Tests are skipped, saying so, when
the package is missing.

A test module loads it with `pytest_plugins = ["tests.registry_fixtures"]` (as tests/n8n_fixtures.py
is loaded), so the registry exists once per session however many modules use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.services.process import free_port
from workers.services.registry import LocalRegistry, registry_binary

REGISTRY_MISSING_REASON = "docker-registry is not installed: run scripts/bootstrap.sh (CI does)"


@pytest.fixture(scope="session")
def registry(session_dir: Path) -> Iterator[LocalRegistry]:
    if registry_binary() is None:
        pytest.skip(REGISTRY_MISSING_REASON)
    server = LocalRegistry(session_dir / "registry", free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def read_only_registry(session_dir: Path) -> Iterator[LocalRegistry]:
    """A registry in distribution's read-only maintenance mode: it answers, and refuses pushes."""
    if registry_binary() is None:
        pytest.skip(REGISTRY_MISSING_REASON)
    server = LocalRegistry(session_dir / "registry-read-only", free_port(), read_only=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
