"""The BlockedOn and OwnerTeam values are cut to what Temporal accepts (2 KB per search
attribute), with a count of what was left out, so a long list never fails a workflow task."""

from __future__ import annotations

import json

from workflows.lifecycle import SEARCH_ATTRIBUTE_BUDGET, _fit, fit_keywords


def test_a_short_list_is_kept_whole() -> None:
    items = ["approval", "credential:SMTP", "dependency:abc"]
    assert fit_keywords(items) == items


def test_a_long_list_is_cut_with_a_count_and_fits_the_budget() -> None:
    items = [f"credential:{'n' * 180}-{i}" for i in range(40)]
    kept = fit_keywords(items)
    assert kept[:-1] == items[: len(kept) - 1]
    assert kept[-1] == f"+{len(items) - (len(kept) - 1)} more"
    assert len(json.dumps(kept).encode()) <= SEARCH_ATTRIBUTE_BUDGET


def test_text_is_cut_on_a_character_boundary() -> None:
    cut = _fit("é" * 2000)  # two bytes each: a cut mid-character would not decode
    assert len(cut.encode()) <= SEARCH_ATTRIBUTE_BUDGET and set(cut) == {"é"}
