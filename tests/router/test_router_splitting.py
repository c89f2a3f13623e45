"""splitting: the canary split is exact, follows readiness, and restarts on new weights."""

from __future__ import annotations

import collections

import pytest

from kubeinfer_router import splitting

BOTH = frozenset({"stable", "canary"})


def counts(
    splitter: splitting.Splitter, n: int, available: frozenset[str] = BOTH
) -> dict[str, int]:
    return dict(collections.Counter(splitter.choose(available) for _ in range(n)))


@pytest.mark.parametrize("canary", [1, 5, 10, 25, 50, 90])
def test_split_is_exact_over_any_whole_cycle(canary: int) -> None:
    splitter = splitting.Splitter({"stable": 100 - canary, "canary": canary})
    assert counts(splitter, 200) == {"stable": 2 * (100 - canary), "canary": 2 * canary}


def test_split_is_smooth_not_bursty() -> None:
    splitter = splitting.Splitter({"stable": 90, "canary": 10})
    picks = [splitter.choose(BOTH) for _ in range(100)]
    # Every window of 10 consecutive requests holds exactly one canary request.
    assert all(picks[i : i + 10].count("canary") == 1 for i in range(0, 100, 10))


def test_a_variant_without_ready_pods_gives_its_share_to_the_others() -> None:
    splitter = splitting.Splitter({"stable": 80, "canary": 20})
    assert counts(splitter, 50, frozenset({"stable"})) == {"stable": 50}
    assert counts(splitter, 50, frozenset({"canary"})) == {"canary": 50}
    assert splitter.choose(frozenset()) is None


def test_a_zero_weight_variant_serves_only_when_nothing_else_can() -> None:
    splitter = splitting.Splitter({"stable": 0, "canary": 100})
    assert counts(splitter, 10) == {"canary": 10}
    assert counts(splitter, 10, frozenset({"stable"})) == {"stable": 10}


def test_new_weights_take_effect_at_once() -> None:
    splitter = splitting.Splitter({"stable": 90, "canary": 10})
    counts(splitter, 7)
    splitter.set_weights({"stable": 50, "canary": 50})
    assert splitter.weights == {"stable": 50, "canary": 50}
    assert counts(splitter, 100) == {"stable": 50, "canary": 50}
