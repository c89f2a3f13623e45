"""burst.BurstHistory: how much the demand grew within one cold start, and the headroom read
from it (the 95th percentile over the last 15 minutes). Virtual time: ticks every 2 s."""

from __future__ import annotations

import json
import random

import pytest

from kubeinfer.core import api
from kubeinfer.core.scaling import burst, policy


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


def test_growth_is_not_bounded_by_todays_demand() -> None:
    # At the top of recurring 3x bursts the headroom's bound reads 1 (no room beyond the
    # highest demand), but the load is not calm: ``growth`` still says 3x.
    minute = [100.0] * 20 + [300.0] * 10
    history = feed(minute * 10, horizon_s=30.0)
    assert history.headroom(300.0) == 1.0
    assert history.growth() == pytest.approx(3.0)


def restarted(history: burst.BurstHistory) -> burst.BurstHistory:
    """What an operator restart restores: the history through status's JSON."""
    return burst.BurstHistory.from_dict(json.loads(json.dumps(history.to_dict())))


@pytest.mark.parametrize("seed", range(5))
def test_a_restart_never_reads_a_history_as_less_bursty(seed: int) -> None:
    # Fifteen minutes of jumpy demand, persisted and restored: the growth, the room at any
    # load and the span read at least what they read before, and at most one grid step more;
    # the moments come back one for one.
    rng = random.Random(seed)
    demand = [rng.choice([100.0] * 30 + [115.0, 150.0, 330.0]) for _ in range(500)]
    history = feed(demand, horizon_s=rng.choice([4.0, 30.0]), start=1.7e9)
    back = restarted(history)
    assert len(back.ratios) == len(history.ratios) and not back.open
    assert history.growth() <= back.growth() <= history.growth() * (1 + burst.PERSIST_STEP)
    for load in (100.0, 200.0, 330.0):
        before = history.headroom(load)
        assert before <= back.headroom(load) <= before * (1 + burst.PERSIST_STEP)
    assert history.span_s() - burst.PERSIST_RUN_S <= back.span_s() <= history.span_s()


def test_a_rare_burst_stays_rare_after_a_restart() -> None:
    # Runs are not summarised by their highest growth: the moments before a short burst stay
    # as few as they were, so they remain outside the 95th percentile.
    demand = [100.0] * 200 + [300.0] * 5 + [100.0] * 250
    assert restarted(feed(demand, horizon_s=4.0)).headroom(100.0) == 1.0


def test_the_persisted_history_fits_its_budget_at_any_tick_rate() -> None:
    # Ticks ten times a second and every growth distinct: the steps coarsen until the JSON
    # fits, still rounding up.
    history = burst.BurstHistory()
    for i in range(round(burst.HISTORY_S * 10)):
        history.record(now=0.1 * i, demand=100.0 + (i * 7919 % 997), horizon_s=30.0)
    saved = history.to_dict()
    assert len(json.dumps(saved, separators=(",", ":"))) <= burst.PERSIST_BUDGET
    assert saved["step"] > burst.PERSIST_STEP
    back = burst.BurstHistory.from_dict(saved)
    assert history.growth() <= back.growth() <= history.growth() * (1 + saved["step"])


def test_a_restored_history_goes_on_recording() -> None:
    # New moments follow the restored ones (oldest first), and the restored ones still age
    # out after HISTORY_S: a restart neither keeps old bursts for good nor loses new ones.
    minute = [100.0] * 20 + [300.0] * 10
    history = feed(minute * 10, horizon_s=30.0)
    back = restarted(history)
    assert back.growth() == pytest.approx(3.0, rel=burst.PERSIST_STEP)
    start = 2.0 * len(minute) * 10
    for i in range(round(burst.HISTORY_S / 2.0) + 30):
        back.record(now=start + 2.0 * i, demand=100.0, horizon_s=30.0)
    times = [t for t, _, _ in back.ratios]
    assert times == sorted(times)
    assert back.growth() == 1.0
    assert restarted(burst.BurstHistory()).growth() == 1.0


def calm(seconds: float, *, burst_every: int = 0) -> burst.BurstHistory:
    """Ticks every 2 s at 100 req/s over ``seconds``; with ``burst_every``, a 2x tick that
    often (every moment within 30 s before one sees 2x growth)."""
    demand = [
        200.0 if burst_every and i % burst_every == burst_every - 1 else 100.0
        for i in range(round(seconds / 2.0))
    ]
    return feed(demand, horizon_s=30.0)


@pytest.mark.parametrize(
    ("cold_start_s", "factor"),
    [(10.0, 1.2), (60.0, 1.2), (75.0, 1.1), (90.0, 1.0), (300.0, 1.0)],
)
def test_the_calm_target_fades_as_the_cold_start_grows(cold_start_s: float, factor: float) -> None:
    # A rise after a calm spell has to fit in the thinner room until new replicas are Ready:
    # the longer they take, the less of the room the calm target may spend.
    pol = policy.from_spec()
    history = calm(pol.calm_span_s + 60.0)
    got = burst.calm_target_factor(pol, history, cold_start_s=cold_start_s)
    assert got == pytest.approx(factor)


@pytest.mark.parametrize(
    ("why", "overrides", "seconds", "burst_every"),
    [
        ("the history is too short to call calm", {}, 300.0, 0),
        ("the recent bursts grew 2x, even read at their peak", {}, 900.0, 20),
        ("burst headroom is off", {"burst_headroom": False}, 900.0, 0),
        ("a latency target is the SLO's", {"metric": api.ScalingMetric.QUEUE_TIME}, 900.0, 0),
    ],
)
def test_no_calm_target(
    why: str, overrides: dict[str, object], seconds: float, burst_every: int
) -> None:
    pol = policy.from_spec(**overrides)
    history = calm(seconds, burst_every=burst_every)
    assert burst.calm_target_factor(pol, history, cold_start_s=10.0) == 1.0, why
    assert burst.calm_target_factor(pol, restarted(history), cold_start_s=10.0) == 1.0, why


def test_a_calm_spell_survives_a_restart() -> None:
    pol = policy.from_spec()
    history = calm(pol.calm_span_s + 60.0)
    assert burst.calm_target_factor(pol, restarted(history), cold_start_s=10.0) == 1.2
