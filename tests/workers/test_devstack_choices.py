"""Pure choices `rsm dev up` makes (the services themselves are exercised by every other test)."""

from __future__ import annotations

import pytest

from workers.devstack import use_n8n


@pytest.mark.parametrize(
    ("asked", "configured", "running", "expected"),
    [
        (True, False, False, True),  # --n8n
        (None, True, False, True),  # RSM_N8N=1
        (None, False, False, False),  # neither, and none running
        # `dev up --n8n` then `dev up`: the n8n already up stays the worker's (it was dropped).
        (None, False, True, True),
    ],
)
def test_dev_up_keeps_a_running_n8n_in_use(
    asked: bool | None, configured: bool, running: bool, expected: bool
) -> None:
    assert use_n8n(asked, configured, running) is expected
