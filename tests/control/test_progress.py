"""How `rsm register --wait` shows a long step's heartbeat (pure formatting)."""

from __future__ import annotations

from control.cli_output import _progress_line, progress_bar


def test_a_build_step_becomes_a_bar_with_its_instruction() -> None:
    line = _progress_line({"activity": "build_image", "step": "Step 3/6 : RUN make all"})
    assert line == "build_image [##########----------] 3/6 RUN make all"
    assert progress_bar(6, 6, width=4) == "[####] 6/6"
    assert progress_bar(0, 0, width=4) == "[----] 0/0"


def test_other_progress_is_shown_as_it_is_and_nothing_is_shown_without_news() -> None:
    assert _progress_line({"activity": "deploy", "step": "starting container"}) == (
        "deploy: starting container"
    )
    assert _progress_line({"activity": "health_check", "attempt": 3, "last_error": "refused"}) == (
        "health_check: attempt 3 (refused)"
    )
    assert _progress_line({"activity": "health_check", "attempt": 1}) is None
    assert _progress_line(None) is None
