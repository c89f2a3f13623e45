"""burst.BurstHistory: how much the demand grew within one cold start, and the headroom read
from it (the 95th percentile over the last 15 minutes). Virtual time: ticks every 2 s."""

from __future__ import annotations

import pytest

from kubeinfer.core.scaling import burst


def feed(demand: list[float], *, horizon_s: float, start: float = 0.0) -> burst.BurstHistory:
    history = burst.BurstHistory()
    for i, value in enumerate(demand):
        history.record(now=start + 2.0 * i, demand=value, horizon_s=horizon_s)
    return history


def test_a_flat_load_needs_no_headroom() -> None:
    assert feed([500.0] * 200, horizon_s=30.0).headroom(100.0) == 1.0


def test_too_few_closed_moments_are_no_evidence() -> None:
    # A tenfold jump, but only a handful of moments have seen a whole cold start.
    history = feed([100.0] * 20 + [1000.0] * 2, horizon_s=30.0)
    assert len(history.ratios) < burst.MIN_RATIOS
    assert history.headroom(100.0) == 1.0


def test_recurring_bursts_set_the_headroom_to_their_growth() -> None:
    # Every minute: 40 s at 100 req/s, then 20 s at 300. Every moment within 30 s before a
    # burst sees it, which is far more than 5 % of the moments: the headroom is the 3x growth.
    minute = [100.0] * 20 + [300.0] * 10
    assert feed(minute * 10, horizon_s=30.0).headroom(100.0) == pytest.approx(3.0)


def test_a_rare_burst_is_outside_the_95th_percentile() -> None:
    # One 3x burst in 15 minutes: the few moments before it are under 5 % of the history.
    demand = [100.0] * 200 + [300.0] * 5 + [100.0] * 250
    assert feed(demand, horizon_s=4.0).headroom(100.0) == 1.0


def test_growth_older_than_the_history_is_forgotten() -> None:
    minute = [100.0] * 20 + [300.0] * 10
    calm = [100.0] * round(burst.HISTORY_S / 2.0 + 30)
    history = feed(minute * 10 + calm, horizon_s=30.0)
    assert history.headroom(100.0) == 1.0
    assert all(
        t >= 2.0 * (len(minute) * 10 + len(calm) - 1) - burst.HISTORY_S
        for t, _, _ in history.ratios
    )


def test_room_never_exceeds_the_highest_recent_demand() -> None:
    # A trickle (1 req/s) for ten minutes, then 200 req/s: the moments before the jump grew
    # 200x. At 150 req/s the room is for 200 (the highest demand seen), not 200 x 150.
    demand = [1.0] * 300 + [200.0] * 60
    history = feed(demand, horizon_s=60.0)
    assert max(r for _, r, _ in history.ratios) == pytest.approx(200.0)
    assert history.headroom(150.0) == pytest.approx(200.0 / 150.0)
    assert history.headroom(250.0) == 1.0


def test_moments_without_demand_are_skipped() -> None:
    # Growth from zero has no ratio (a scale from zero is the router's job, not headroom's).
    history = feed([0.0] * 30 + [100.0] * 30, horizon_s=10.0)
    assert all(r == 1.0 for _, r, _ in history.ratios)


def test_copy_is_independent() -> None:
    history = feed([100.0] * 30, horizon_s=10.0)
    copy = history.copy()
    copy.record(now=1000.0, demand=5.0, horizon_s=10.0)
    assert len(copy.ratios) != len(history.ratios) or len(copy.open) != len(history.open)
    assert history.open[-1] == (58.0, 100.0)
