"""decide() rule by rule (table-driven, one decision each) and over series (a virtual loop).

Virtual time only: each test builds a window with samples at chosen times and passes ``now``.
The rules are tested on one stated policy, a default InferenceService's with max 10 replicas
and a 120 s scale-down delay: target 8 per replica, tolerance 0.1, stable 60 s, panic 6 s,
threshold 2x, scale-up max(10x, +4), scale-down 2x, GPU veto 0.8, cold start 60 s.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Callable

import pytest

from kubeinfer.core import api
from kubeinfer.core.scaling import decide, policy, season, signals, state, window

NOW = 1000.0


def make_policy(**knobs: object) -> policy.ScalingPolicy:
    return policy.from_spec(**{"max_replicas": 10, "scale_down_stabilization_s": 120.0, **knobs})


R = decide.Reason
C = decide.Clamp


def tick(
    t: float,
    depth: float,
    *,
    gpu: float | None = None,
    qt: float | None = None,
    rate: float | None = None,
) -> signals.TickSample:
    return signals.TickSample(
        time=t,
        ready_replicas=1,
        pods_scraped=1,
        queue_depth_total=depth,
        request_rate_total=depth if rate is None else rate,
        queue_time_ms=qt,
        gpu_utilization=gpu,
    )


def window_of(
    values: list[float],
    *,
    now: float = NOW,
    gpu: float | None = None,
    qt: float | None = None,
    rate: float | None = None,
) -> window.SignalWindow:
    """Samples every 2 s, the last one at ``now``."""
    w = window.SignalWindow(length_s=60, granularity_s=2)
    n = len(values)
    for i, v in enumerate(values):
        w.record(sample=tick(now - 2 * (n - 1 - i), v, gpu=gpu, qt=qt, rate=rate))
    return w


@dataclasses.dataclass
class Case:
    name: str
    values: list[float]
    current: int
    desired: int
    reason: decide.Reason
    clamps: tuple[decide.Clamp, ...] = ()
    ready: int | None = None
    starting: int = 0
    unschedulable: int = 0
    placing: int = 0
    gpu: float | None = None
    scraped: bool = True
    headroom: float = 1.0
    policy: policy.ScalingPolicy = dataclasses.field(default_factory=make_policy)
    state: state.ScalerState = dataclasses.field(default_factory=state.ScalerState)


WIDE = make_policy(max_replicas=50)
CASES = [
    Case(
        "hold within tolerance",
        [33.0] * 30,
        current=4,
        desired=4,
        reason=R.HOLD,
        clamps=(C.TOLERANCE,),
    ),
    Case("steady scale-up", [48.0] * 30, current=4, desired=6, reason=R.SCALE_UP),
    Case(
        "panic on a burst",
        [32.0] * 27 + [96.0] * 3,
        current=4,
        desired=12,
        reason=R.PANIC_SCALE_UP,
        policy=WIDE,
    ),
    Case(
        "no scale-down while panicking",
        [8.0] * 30,
        current=12,
        desired=12,
        reason=R.HOLD,
        policy=WIDE,
        state=state.ScalerState(panic_until=NOW + 30),
    ),
    Case(
        "panic ends after its window",
        [8.0] * 30,
        current=12,
        desired=6,
        reason=R.SCALE_DOWN,
        clamps=(C.SCALE_DOWN_RATE,),
        policy=WIDE,
        state=state.ScalerState(panic_until=NOW - 1),
    ),
    Case(
        "scale-up rate limit",
        [800.0] * 30,
        current=2,
        desired=20,
        reason=R.PANIC_SCALE_UP,
        clamps=(C.SCALE_UP_RATE,),
        policy=WIDE,
    ),
    Case(
        "scale-up step limit from zero-ish",
        [200.0] * 30,
        current=0,
        ready=0,
        desired=4,
        reason=R.PANIC_SCALE_UP,
        clamps=(C.SCALE_UP_RATE,),
        policy=make_policy(min_replicas=0, max_replicas=50),
    ),
    Case(
        "max trims a scale-up",
        [240.0] * 30,
        current=8,
        desired=10,
        reason=R.PANIC_SCALE_UP,
        clamps=(C.MAX_REPLICAS,),
    ),
    Case(
        "max trims a steady scale-up",
        [96.0] * 30,
        current=8,
        desired=10,
        reason=R.SCALE_UP,
        clamps=(C.MAX_REPLICAS,),
    ),
    Case("at max", [240.0] * 30, current=10, desired=10, reason=R.AT_MAX, clamps=(C.MAX_REPLICAS,)),
    Case(
        "stabilization keeps the highest recent recommendation",
        [16.0] * 30,
        current=8,
        desired=6,
        reason=R.SCALE_DOWN,
        clamps=(C.STABILIZATION,),
        state=state.ScalerState(recommendations=((NOW - 50, 6), (NOW - 100, 5))),
    ),
    Case(
        "stabilizing holds",
        [16.0] * 30,
        current=8,
        desired=8,
        reason=R.STABILIZING,
        clamps=(C.STABILIZATION,),
        state=state.ScalerState(recommendations=((NOW - 10, 8),)),
    ),
    Case(
        "old recommendations expire; down rate halves",
        [16.0] * 30,
        current=8,
        desired=4,
        reason=R.SCALE_DOWN,
        clamps=(C.SCALE_DOWN_RATE,),
        state=state.ScalerState(recommendations=((NOW - 130, 8),)),
    ),
    Case(
        "GPU busy vetoes scale-down (when the veto is on)",
        [16.0] * 30,
        current=4,
        desired=4,
        reason=R.GPU_VETO,
        clamps=(C.GPU_VETO,),
        gpu=0.9,
        policy=make_policy(gpu_veto_utilization=0.8),
    ),
    Case(
        "GPU busy does not hold replicas by default (the veto is off)",
        [16.0] * 30,
        current=4,
        desired=2,
        reason=R.SCALE_DOWN,
        gpu=0.9,
    ),
    Case(
        "GPU idle allows scale-down",
        [16.0] * 30,
        current=4,
        desired=2,
        reason=R.SCALE_DOWN,
        gpu=0.5,
    ),
    Case(
        "GPU alone never scales up",
        [32.0] * 30,
        current=4,
        desired=4,
        reason=R.HOLD,
        clamps=(C.TOLERANCE,),
        gpu=1.0,
    ),
    Case(
        "at min",
        [2.0] * 30,
        current=2,
        desired=2,
        reason=R.AT_MIN,
        clamps=(C.MIN_REPLICAS,),
        policy=make_policy(min_replicas=2),
    ),
    Case(
        "below min rises to min",
        [2.0] * 30,
        current=1,
        desired=3,
        reason=R.SCALE_UP,
        clamps=(C.MIN_REPLICAS,),
        policy=make_policy(min_replicas=3),
    ),
    Case(
        "no data holds",
        [],
        current=5,
        desired=5,
        reason=R.NO_DATA,
        clamps=(C.NO_DATA,),
        scraped=False,
    ),
    Case(
        "failed scrape never scales down",
        [8.0] * 30,
        current=5,
        desired=5,
        reason=R.NO_DATA,
        clamps=(C.SCALE_DOWN_RATE, C.NO_DATA),
        scraped=False,
    ),
    Case(
        "failed scrape may still scale up",
        [48.0] * 30,
        current=4,
        desired=6,
        reason=R.SCALE_UP,
        scraped=False,
    ),
    Case(
        "fallback after N failures",
        [],
        current=2,
        desired=6,
        reason=R.FALLBACK,
        scraped=False,
        policy=make_policy(fallback_replicas=6, failures_before_fallback=3),
        state=state.ScalerState(consecutive_failures=2),
    ),
    Case(
        "fallback never scales down",
        [],
        current=8,
        desired=8,
        reason=R.FALLBACK,
        scraped=False,
        policy=make_policy(fallback_replicas=6, failures_before_fallback=3),
        state=state.ScalerState(consecutive_failures=2),
    ),
    Case(
        "pods waiting for GPUs block scale-up",
        [64.0] * 30,
        current=4,
        desired=4,
        reason=R.BLOCKED_BY_CAPACITY,
        clamps=(C.CAPACITY,),
        unschedulable=1,
    ),
    Case(
        "a cluster full within the stable window: scale-up by the additive step only",
        [160.0] * 30,  # 20 wanted; 10x from 4 would allow 40
        current=4,
        desired=8,
        reason=R.PANIC_SCALE_UP,
        clamps=(C.CAPACITY,),
        policy=WIDE,
        state=state.ScalerState(last_unschedulable_time=NOW - 30),
    ),
    Case(
        "a cluster full longer ago than the stable window: the full rate again",
        [160.0] * 30,
        current=4,
        desired=20,
        reason=R.PANIC_SCALE_UP,
        policy=WIDE,
        state=state.ScalerState(last_unschedulable_time=NOW - 61),
    ),
    Case(
        "pods the scheduler has not placed yet hold scale-up",
        [160.0] * 30,
        current=10,
        ready=4,
        desired=10,
        reason=R.AWAITING_PLACEMENT,
        clamps=(C.CAPACITY,),
        placing=6,
    ),
    Case(
        "pods not placed yet allow scale-down",
        [1.0] * 30,
        current=4,
        ready=2,
        desired=2,
        reason=R.SCALE_DOWN,
        clamps=(C.SCALE_DOWN_RATE,),
        placing=2,
    ),
    Case(
        "pods waiting for GPUs allow scale-down",
        [16.0] * 30,
        current=4,
        desired=2,
        reason=R.SCALE_DOWN,
        unschedulable=1,
    ),
    Case(
        "starting replicas count as capacity (no panic)",
        [48.0] * 27 + [40.0] * 3,
        current=6,
        ready=2,
        starting=4,
        desired=6,
        reason=R.HOLD,
        clamps=(C.TOLERANCE,),
    ),
    Case(
        "hysteresis: a drop under 20 % of the count holds",
        [80.0] * 30,  # 10 wanted, 12 running: 2 < 0.2 * 12
        current=12,
        desired=12,
        reason=R.HOLD,
        clamps=(C.HYSTERESIS,),
        policy=WIDE,
    ),
    Case(
        "hysteresis always allows one replica",
        [24.0] * 30,  # 3 wanted, 4 running
        current=4,
        desired=3,
        reason=R.SCALE_DOWN,
    ),
    Case(
        "hysteresis: a drop of 20 % goes ahead",
        [80.0] * 30,  # 10 wanted, 13 running: 3 >= 2.6
        current=13,
        desired=10,
        reason=R.SCALE_DOWN,
        policy=WIDE,
    ),
    Case(
        "burst headroom: room for the recent growth",
        [32.0] * 30,  # 4 wanted, x1.5 = 6
        current=4,
        desired=6,
        reason=R.BURST_HEADROOM,
        clamps=(C.TOLERANCE,),  # the load alone holds 4
        headroom=1.5,
    ),
    Case(
        "burst headroom within the tolerance holds",
        [32.0] * 30,  # 4 wanted, x1.05 = 4.2: under the 10 % tolerance
        current=4,
        desired=4,
        reason=R.HOLD,
        clamps=(C.TOLERANCE, C.BURST_HEADROOM),
        headroom=1.05,
    ),
    Case(
        "burst headroom keeps replicas the load alone gives back",
        [16.0] * 30,  # 2 wanted, x2.5 = 5
        current=8,
        desired=5,
        reason=R.SCALE_DOWN,
        clamps=(C.BURST_HEADROOM,),
        headroom=2.5,
    ),
    Case(
        "burst headroom holding the count is not stabilizing",
        [16.0] * 30,  # 2 wanted, x4 = 8
        current=8,
        desired=8,
        reason=R.HOLD,
        clamps=(C.BURST_HEADROOM,),
        headroom=4.0,
    ),
    Case(
        "same load with only ready capacity panics",
        [48.0] * 27 + [40.0] * 3,
        current=2,
        ready=2,
        desired=5,
        reason=R.PANIC_SCALE_UP,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decide_rules(case: Case) -> None:
    result = decide.decide(
        policy=case.policy,
        window=window_of(case.values, gpu=case.gpu),
        state=case.state,
        now=NOW,
        scraped=case.scraped,
        headroom=case.headroom,
        replicas=decide.Replicas(
            current=case.current,
            ready=case.current if case.ready is None else case.ready,
            starting=case.starting,
            unschedulable=case.unschedulable,
            placing=case.placing,
        ),
    )
    assert (result.desired, result.reason, result.clamps) == (
        case.desired,
        case.reason,
        case.clamps,
    )
    assert result.message.endswith(".")
    assert result.state.last_scale_time == (NOW if case.desired != case.current else None)


def test_panic_sets_and_reports_panic_mode() -> None:
    result = decide.decide(
        policy=WIDE,
        window=window_of([32.0] * 27 + [96.0] * 3),
        state=state.ScalerState(),
        now=NOW,
        replicas=decide.Replicas(current=4, ready=4),
    )
    assert result.state.panic_until == NOW + 60
    assert result.inputs.panicking and result.inputs.panic == 96.0
    assert result.inputs.stable == pytest.approx(38.4)


def test_failures_are_counted_and_reset() -> None:
    s = state.ScalerState(consecutive_failures=3)
    failed = decide.decide(
        policy=make_policy(),
        window=window_of([]),
        state=s,
        now=NOW,
        replicas=decide.Replicas(current=2, ready=2),
        scraped=False,
    )
    assert failed.state.consecutive_failures == 4
    ok = decide.decide(
        policy=make_policy(),
        window=window_of([16.0] * 30),
        state=failed.state,
        now=NOW,
        replicas=decide.Replicas(current=2, ready=2),
    )
    assert ok.state.consecutive_failures == 0


RAMP = [20.0 + i for i in range(15)]  # +1 per 2 s over the last 28 s: 0.5 per second


@pytest.mark.parametrize(
    ("cold_start_s", "starting", "desired", "reason"),
    [
        (None, 0, 8, R.EARLY_SCALE_UP),  # 33 + 0.5 * 60 s default = 63 -> 8
        (20.0, 0, 6, R.EARLY_SCALE_UP),  # learned 20 s: 33 + 10 = 43 -> 6
        (None, 2, 4, R.HOLD),  # replicas already starting: no look-ahead on top
    ],
)
def test_early_scale_up_uses_cold_start_horizon(
    cold_start_s: float | None, starting: int, desired: int, reason: decide.Reason
) -> None:
    result = decide.decide(
        policy=make_policy(),
        window=window_of(RAMP),
        state=state.ScalerState(cold_start_s=cold_start_s),
        now=NOW,
        replicas=decide.Replicas(current=4, ready=4 - starting, starting=starting),
    )
    assert (result.desired, result.reason) == (desired, reason)
    # The trend is reported either way; it only acts when nothing is starting.
    assert result.inputs.trend_per_s == pytest.approx(0.5)


def test_rising_trend_is_a_floor_for_scale_down() -> None:
    # The stable window wants ceil(27 / 8) = 4 of 10, but the rise projects
    # 33 + 0.5 * 60 = 63 -> 8 one cold start ahead: keep 8 (the 2x rate limit alone allows 5).
    result = decide.decide(
        policy=WIDE,
        # One earlier point on the same line: half a stable window of samples, enough to
        # scale down at all (decide.WARM_FRACTION).
        window=window_of([RAMP[0] - 1, *RAMP]),
        state=state.ScalerState(),
        now=NOW,
        replicas=decide.Replicas(current=10, ready=10),
    )
    assert (result.desired, result.reason, result.clamps) == (
        8,
        R.SCALE_DOWN,
        (C.SCALE_DOWN_RATE, C.TREND),
    )


def test_trend_needs_half_its_window_of_points() -> None:
    # Three fresh points rising 5 per second (an operator that just started): no trend, so no
    # projection to 30 + 5 * 60 = 330; the stable average 20 wants 3 replicas, and 4 s of
    # samples are too few to give one back (WarmingUp); a rise would still scale up.
    result = decide.decide(
        policy=make_policy(),
        window=window_of([10.0, 20.0, 30.0]),
        state=state.ScalerState(),
        now=NOW,
        replicas=decide.Replicas(current=4, ready=4),
    )
    assert (result.desired, result.reason, result.clamps) == (4, R.WARMING_UP, (C.WARMING_UP,))
    assert result.inputs.trend_per_s is None
    assert "4 s of metrics so far" in result.message


@pytest.mark.parametrize(
    ("samples", "desired", "reason"),
    [
        # One sample after a start reads low (a pod's first scrape has no executing count):
        # no scale-down on it, however low.
        ([4.0], 4, R.WARMING_UP),
        ([4.0] * 14, 4, R.WARMING_UP),  # 26 s of samples: under half the 60 s window
        ([4.0] * 16, 2, R.SCALE_DOWN),  # 30 s: half the window, scale-down as usual (rate 2x)
        ([200.0], 10, R.PANIC_SCALE_UP),  # a burst needs no history to scale up
    ],
)
def test_a_young_window_scales_up_but_never_down(
    samples: list[float], desired: int, reason: decide.Reason
) -> None:
    result = decide.decide(
        policy=make_policy(),
        window=window_of(samples),
        state=state.ScalerState(),
        now=NOW,
        replicas=decide.Replicas(current=4, ready=4),
    )
    assert (result.desired, result.reason) == (desired, reason)


def test_small_projected_rise_is_within_tolerance() -> None:
    # A perfect but slight rise, 0.01 per second: 32.28 + 0.6 -> 4.1 replicas of 4 is within the
    # 10 % tolerance, so no early scale-up on what is a flat load.
    result = decide.decide(
        policy=make_policy(),
        window=window_of([32.0 + 0.02 * i for i in range(15)]),
        state=state.ScalerState(),
        now=NOW,
        replicas=decide.Replicas(current=4, ready=4),
    )
    assert (result.desired, result.reason, result.clamps) == (4, R.HOLD, (C.TOLERANCE,))
    assert result.inputs.trend_per_s == pytest.approx(0.01)


def test_queue_depth_trend_is_fitted_on_the_request_rate() -> None:
    # The pending gauge jumps between 30 and 34 (no trend of its own); the request rate rises
    # 1 per second from 40 to 68. Little's law: 31.87 depth per 54 requests/s on average, so
    # the depth rises 0.59 per second; 31.33 (panic window) + 0.59 * 60 = 66.7 -> 8.3 -> 9.
    w = window.SignalWindow(length_s=60, granularity_s=2)
    for i in range(15):
        t = NOW - 2 * (14 - i)
        sample = dataclasses.replace(tick(t, 30.0 + 4 * (i % 2)), request_rate_total=40.0 + 2 * i)
        w.record(sample=sample)
    result = decide.decide(
        policy=make_policy(),
        window=w,
        state=state.ScalerState(),
        now=NOW,
        replicas=decide.Replicas(current=4, ready=4),
    )
    assert (result.desired, result.reason) == (9, R.EARLY_SCALE_UP)
    assert result.inputs.trend_per_s == pytest.approx(478.0 / 15 / 54.0)


def test_noisy_trend_is_not_trusted() -> None:
    rng = random.Random(7)
    noisy = [30.0 + rng.uniform(-8, 8) + 0.05 * i for i in range(15)]
    result = decide.decide(
        policy=make_policy(),
        window=window_of(noisy),
        state=state.ScalerState(),
        now=NOW,
        replicas=decide.Replicas(current=4, ready=4),
    )
    assert result.reason is not R.EARLY_SCALE_UP
    assert result.desired == 4


@pytest.mark.parametrize(
    ("metric", "target", "sample", "desired", "reason"),
    [
        (api.ScalingMetric.QUEUE_TIME, 50.0, {"qt": 75.0}, 6, R.SCALE_UP),  # 4 * 75 / 50
        (api.ScalingMetric.QUEUE_TIME, 50.0, {"qt": 100.0}, 8, R.PANIC_SCALE_UP),  # 2x capacity
        (api.ScalingMetric.REQUEST_RATE, 100.0, {"rate": 450.0}, 5, R.SCALE_UP),
        (api.ScalingMetric.REQUEST_RATE, 100.0, {"rate": 410.0}, 4, R.HOLD),
    ],
)
def test_selectable_metrics(
    metric: policy.Metric,
    target: float,
    sample: dict[str, float],
    desired: int,
    reason: decide.Reason,
) -> None:
    result = decide.decide(
        policy=make_policy(metric=metric, target=target, early_scale_up=False),
        window=window_of([0.0] * 30, **sample),
        state=state.ScalerState(),
        now=NOW,
        replicas=decide.Replicas(current=4, ready=4),
    )
    assert (result.desired, result.reason) == (desired, reason)


# ---------------------------------------------------------------- series through a virtual loop


def run(
    load: Callable[[float], float | None],
    *,
    until: float,
    scaling: policy.ScalingPolicy,
    start: int,
) -> list[tuple[float, decide.ScaleResult]]:
    """Tick every 2 s; replicas become ready at once; load is total queue depth (None: a
    failed scrape)."""
    w = window.SignalWindow.for_policy(scaling)
    s, current, out = state.ScalerState(), start, []
    t = 0.0
    while t <= until:
        value = load(t)
        if value is not None:
            w.record(sample=tick(t, value))
        result = decide.decide(
            policy=scaling,
            window=w,
            state=s,
            now=t,
            replicas=decide.Replicas(current=current, ready=current),
            scraped=value is not None,
        )
        s, current = result.state, result.desired
        out.append((t, result))
        t += 2
    return out


def changes(results: list[tuple[float, decide.ScaleResult]]) -> list[tuple[float, int, str]]:
    return [(t, r.desired, r.reason.value) for t, r in results if r.changed]


def test_step_up_then_down() -> None:
    scaling = make_policy(max_replicas=20, early_scale_up=False)
    out = run(lambda t: 80.0 if 100 <= t < 300 else 16.0, until=700, scaling=scaling, start=2)
    moves = changes(out)
    # Panic on the step's first tick, at full size two ticks later; no overshoot.
    assert moves[:3] == [
        (100, 5, "PanicScaleUp"),
        (102, 8, "PanicScaleUp"),
        (104, 10, "PanicScaleUp"),
    ]
    assert max(r.desired for _, r in out) == 10
    # After the step down: nothing for the stabilization window, then down to 2.
    downs = [m for m in moves if m[2] == "ScaleDown"]
    assert downs[0][0] >= 300 + 120
    assert out[-1][1].desired == 2
    # Down in steps as the stabilized recommendation falls, never back up (no flapping).
    assert [m[1] for m in moves[3:]] == sorted((m[1] for m in moves[3:]), reverse=True)
    assert len(moves) <= 12


def test_spike_is_met_and_released() -> None:
    scaling = make_policy(max_replicas=20)
    out = run(lambda t: 160.0 if 200 <= t < 220 else 16.0, until=600, scaling=scaling, start=2)
    assert max(r.desired for _, r in out) == 20  # 160 / 8, within 2 ticks of the spike
    assert next(t for t, r in out if r.desired == 20) <= 204
    assert out[-1][1].desired == 2


def test_ramp_scales_ahead_of_the_load() -> None:
    def ramp(t: float) -> float:
        return 16.0 + min(max(t - 100, 0), 400) * 0.2  # 16 -> 96 over 400 s

    out = run(ramp, until=600, scaling=make_policy(max_replicas=20), start=2)
    early = [t for t, r in out if r.reason is R.EARLY_SCALE_UP and r.changed]
    assert early, "a steady ramp should trigger early scale-ups"
    # Replicas reach what the peak needs (96 / 8 = 12) well before the ramp ends at t = 500.
    assert next(t for t, r in out if r.desired >= 12) <= 470
    assert max(r.desired for _, r in out) <= 14


def test_gradual_decline_scales_down_in_few_large_steps() -> None:
    def decline(t: float) -> float:
        return 96.0 - min(max(t - 100, 0), 200) * 0.4  # 96 -> 16 over 200 s

    out = run(decline, until=700, scaling=make_policy(max_replicas=20), start=12)
    moves = changes(out)
    assert all(reason == "ScaleDown" for _, _, reason in moves)
    counts = [12] + [desired for _, desired, _ in moves]
    # Every move gives back at least 20 % of the count (or one replica), down to 16 / 8 = 2.
    assert all(a - b >= max(1, 0.2 * a) for a, b in itertools.pairwise(counts))
    assert counts[-1] == 2
    assert len(moves) <= 6


def test_noisy_load_does_not_flap() -> None:
    rng = random.Random(42)
    noise = [40.0 * (1 + rng.uniform(-0.2, 0.2)) for _ in range(400)]
    out = run(lambda t: noise[int(t) // 2], until=600, scaling=make_policy(), start=5)
    assert len(changes(out)) <= 2
    assert all(4 <= r.desired <= 7 for _, r in out)


def test_missing_data_holds_then_falls_back() -> None:
    scaling = make_policy(fallback_replicas=6, failures_before_fallback=5)
    out = run(lambda t: None if 100 <= t < 200 else 32.0, until=300, scaling=scaling, start=4)
    during = [(t, r) for t, r in out if 100 <= t < 200]
    assert all(r.desired >= 4 for _, r in during)
    fallback = [t for t, r in during if r.reason is R.FALLBACK]
    assert fallback[0] == 108  # the fifth failed tick
    assert all(r.desired == 6 for t, r in during if t >= 108)


def test_a_target_factor_raises_the_target_the_rules_read_and_status_says_so() -> None:
    # Depth 24 at target 4 wants 6 replicas; at 1.2x (4.8) it wants 5. The inputs keep the
    # spec's target (dashboards compare signals with it) and name the factor; the message
    # says which target the decision read and why.
    pol = make_policy(target=4.0)
    plain, calm = (
        decide.decide(
            policy=pol,
            window=window_of([24.0] * 30),
            state=state.ScalerState(),
            now=NOW,
            replicas=decide.Replicas(current=2, ready=2),
            target_factor=factor,
        )
        for factor in (1.0, 1.2)
    )
    assert (plain.desired, calm.desired) == (6, 5)
    assert calm.inputs.target == 4.0
    assert calm.record(now=NOW).inputs["calmTargetFactor"] == 1.2
    assert "target 4.8 per replica (1.20x the spec's 4 while the demand is calm)" in calm.message
    assert plain.record(now=NOW).inputs["calmTargetFactor"] == 1.0
    assert "calm" not in plain.message


def test_while_calm_replicas_go_back_after_the_short_window_and_without_hysteresis() -> None:
    # The same raised target (9.6) read two ways: as the spec's own (not calm) and as the
    # spec's 8 x the calm factor 1.2. Only the calm one gives back replicas a recommendation
    # 50 s old still holds (calm_scale_down_s 30 < the policy's 120 s), and a drop of one
    # replica in ten (under the 20 % hysteresis).
    def run(
        *, calm: bool, values: list[float], current: int, held: tuple[tuple[float, int], ...]
    ) -> decide.ScaleResult:
        return decide.decide(
            policy=make_policy(target=8.0 if calm else 9.6),
            window=window_of(values),
            state=state.ScalerState(recommendations=held),
            now=NOW,
            replicas=decide.Replicas(current=current, ready=current),
            target_factor=1.2 if calm else 1.0,
        )

    held = ((NOW - 50.0, 10),)
    plain = run(calm=False, values=[56.0] * 30, current=10, held=held)  # 5.8 -> 6 wanted
    assert (plain.desired, plain.reason) == (10, R.STABILIZING)
    calm = run(calm=True, values=[56.0] * 30, current=10, held=held)
    assert (calm.desired, calm.reason) == (6, R.SCALE_DOWN)
    # The older recommendation is still kept, so the full window holds again the moment the
    # calm spell ends (here: the next tick, before the scale-down took effect).
    assert held[0] in calm.state.recommendations
    after = decide.decide(
        policy=make_policy(target=9.6),
        window=window_of([56.0] * 30, now=NOW + 2.0),
        state=calm.state,
        now=NOW + 2.0,
        replicas=decide.Replicas(current=10, ready=10),
    )
    assert (after.desired, after.reason) == (10, R.STABILIZING)

    plain = run(calm=False, values=[84.0] * 30, current=10, held=())  # 8.75 -> 9 wanted
    assert (plain.desired, plain.reason) == (10, R.HOLD)
    assert C.HYSTERESIS in plain.clamps
    calm = run(calm=True, values=[84.0] * 30, current=10, held=())
    assert (calm.desired, calm.reason) == (9, R.SCALE_DOWN)
    assert C.HYSTERESIS not in calm.clamps
    # One replica in ten is within the tolerance: no settling period follows it.
    assert calm.state.last_scale_down_time is None


def test_while_calm_a_scale_down_waits_for_the_window_to_see_the_last_one() -> None:
    # Calm (or forecast), 17 replicas and a window that reads a quarter of their target: the
    # rate limit would halve the count on every tick while the window still averages the
    # load spread over 17. After a scale-down the next waits a stable window (60 s here);
    # a scale-up does not start that wait, and outside calm the usual rules apply.
    def run(*, calm: bool, last_down: float | None, last_scale: float | None) -> decide.ScaleResult:
        return decide.decide(
            policy=make_policy(target=8.0, scale_down_stabilization_s=0.0, max_replicas=30),
            window=window_of([40.0] * 30),
            state=state.ScalerState(last_scale_down_time=last_down, last_scale_time=last_scale),
            now=NOW,
            replicas=decide.Replicas(current=17, ready=17),
            target_factor=1.2 if calm else 1.0,
        )

    settling = run(calm=True, last_down=NOW - 10.0, last_scale=NOW - 10.0)
    assert (settling.desired, settling.reason) == (17, R.HOLD)
    assert C.SETTLING in settling.clamps
    settled = run(calm=True, last_down=NOW - 70.0, last_scale=NOW - 70.0)
    assert (settled.desired, settled.reason) == (8, R.SCALE_DOWN)  # halved: the rate limit
    assert settled.state.last_scale_down_time == NOW
    after_up = run(calm=True, last_down=NOW - 70.0, last_scale=NOW - 10.0)
    assert after_up.desired == 8
    plain = run(calm=False, last_down=NOW - 10.0, last_scale=NOW - 10.0)
    assert plain.desired == 8 and C.SETTLING not in plain.clamps


def test_panic_is_judged_on_the_specs_target() -> None:
    # Two replicas, the panic window at 16 in flight: 2x their capacity at the spec's target
    # (4), only 1.67x at the raised one (4.8). A rise that ends a calm spell must not panic
    # later for it.
    result = decide.decide(
        policy=make_policy(target=4.0),
        window=window_of([8.0] * 27 + [16.0] * 3),
        state=state.ScalerState(),
        now=NOW,
        replicas=decide.Replicas(current=2, ready=2),
        target_factor=1.2,
    )
    assert result.reason is R.PANIC_SCALE_UP
    assert result.desired == 4  # what the panic window wants at the raised target


def test_the_forecast_floor_reads_the_latency_the_pods_had_at_the_target() -> None:
    # 17 replicas just asked for ahead of a rise to 1,200 req/s run far below the target, so
    # the window's latency (depth / rate: 8 in flight at 400 req/s, 20 ms) is low. At that
    # latency the floor would read 1,200 x 0.02 / (8 x 1.4) = 2.1 replicas' worth, and give the
    # rise's replicas back before it came. At the 100 ms the pods had at the target, 11.
    def run(latency_at_target_s: float | None) -> decide.ScaleResult:
        return decide.decide(
            policy=make_policy(target=8.0, scale_down_stabilization_s=0.0, max_replicas=30),
            window=window_of([8.0] * 30, rate=400.0),
            state=state.ScalerState(latency_at_target_s=latency_at_target_s),
            now=NOW,
            replicas=decide.Replicas(current=17, ready=17),
            target_factor=1.4,
            forecast=season.Forecast(demand=1200.0, scale=1.0, error=0.0),
        )

    assert run(None).desired < 11
    learned = run(0.1)
    assert learned.desired == 11 and C.FORECAST in learned.clamps
    # Never below the moment's latency: pods queueing now read their own.
    assert run(0.001).desired == run(None).desired


def test_a_forecast_no_higher_than_todays_load_holds_within_the_tolerance() -> None:
    # 1,000 req/s now and forecast, at the 46 ms the pods had at the target: 1,000 x 0.046 /
    # (8 x 1.4) = 4.1 replicas. Four would not scale up for it (2.5 % over, inside the 10 %
    # tolerance), so five give one back; a forecast above today's load keeps its replica.
    def run(current: int, demand: float, *, depth: float = 11.2 * 3.5) -> decide.ScaleResult:
        return decide.decide(
            policy=make_policy(target=8.0, scale_down_stabilization_s=0.0, max_replicas=30),
            window=window_of([depth] * 30, rate=1000.0),
            state=state.ScalerState(latency_at_target_s=0.046),
            now=NOW,
            replicas=decide.Replicas(current=current, ready=current),
            target_factor=1.4,
            forecast=season.Forecast(demand=demand, scale=1.0, error=0.0),
        )

    flat = run(5, 1000.0)
    assert (flat.desired, flat.reason) == (4, R.SCALE_DOWN) and C.FORECAST not in flat.clamps
    held = run(4, 1000.0)
    assert (held.desired, held.reason) == (4, R.HOLD) and C.FORECAST in held.clamps
    # Today's load 9 replicas' worth (100.8 in flight, 0.1 s a request), 1,200 req/s forecast:
    # 1,200 x 0.1008 / 11.2 = 10.8, so 11 are kept, where the tolerance would keep 10.
    rising = run(11, 1200.0, depth=100.8)
    assert (rising.desired, rising.reason) == (11, R.HOLD) and C.FORECAST in rising.clamps
    # 1,050 req/s is within the tolerance of today's: 9.4 replicas' worth, 9 kept, not 10.
    assert run(11, 1050.0, depth=100.0).desired == 9


def test_the_flat_forecast_keeps_what_it_scales_up_to() -> None:
    # A floor of exactly 4 x 1.1 replicas, the tolerance's own boundary (4,400 req/s, flat
    # against today's 4,000, at 11.2 ms a request: 4,400 x 0.0112 / 11.2). Whatever the float
    # quotient reads, the count four replicas scale up to is the count five keep: no flap.
    def run(current: int) -> decide.ScaleResult:
        return decide.decide(
            policy=make_policy(target=8.0, scale_down_stabilization_s=0.0, max_replicas=30),
            window=window_of([11.2 * 3.5] * 30, rate=4000.0),
            state=state.ScalerState(latency_at_target_s=0.0112),
            now=NOW,
            replicas=decide.Replicas(current=current, ready=current),
            target_factor=1.4,
            forecast=season.Forecast(demand=4400.0, scale=1.0, error=0.0),
        )

    up, kept = run(4), run(5)
    assert up.desired == kept.desired == 5
    assert up.reason is R.FORECAST_SCALE_UP and C.FORECAST in kept.clamps


def test_while_calm_a_step_that_only_stabilization_chose_waits_for_it() -> None:
    # Calm, 17 replicas, the load asks for 4 and the window's highest recommendation (10 s
    # old) for 16: one replica less would start a settling period that holds 16 for a stable
    # window. It waits for that recommendation to expire; a step beyond the tolerance does not.
    def run(highest: int, current: int = 17) -> decide.ScaleResult:
        return decide.decide(
            policy=make_policy(target=8.0, max_replicas=30),
            window=window_of([40.0] * 30),
            state=state.ScalerState(recommendations=((NOW - 10.0, highest),)),
            now=NOW,
            replicas=decide.Replicas(current=current, ready=current),
            target_factor=1.2,
        )

    small = run(16)
    assert (small.desired, small.reason) == (17, R.STABILIZING)
    assert small.state.last_scale_down_time is None
    large = run(12)
    assert (large.desired, large.reason) == (12, R.SCALE_DOWN)
    assert large.state.last_scale_down_time == NOW
    # The boundary is the tolerance's, as for settling: one replica in ten (10 -> 9) is not
    # noticed, so it waits too.
    ten = run(9, current=10)
    assert (ten.desired, ten.reason) == (10, R.STABILIZING)


def test_while_forecast_replicas_go_back_after_the_forecasts_shorter_window() -> None:
    # 10 replicas, the load asks for 5, a recommendation of 10 from 20 s ago: the calm window
    # (30 s) still holds it; with a forecast in force (one far below today's load, so its
    # floor keeps nothing) the window is forecast_scale_down_s (15 s) and it has expired.
    def run(forecast: season.Forecast | None) -> decide.ScaleResult:
        return decide.decide(
            policy=make_policy(target=8.0, max_replicas=30),
            window=window_of([40.0] * 30),
            state=state.ScalerState(recommendations=((NOW - 20.0, 10),)),
            now=NOW,
            replicas=decide.Replicas(current=10, ready=10),
            target_factor=1.2,
            forecast=forecast,
        )

    calm = run(None)
    assert (calm.desired, calm.reason) == (10, R.STABILIZING)
    forecast = run(season.Forecast(demand=1.0, scale=1.0, error=0.0))
    assert (forecast.desired, forecast.reason) == (5, R.SCALE_DOWN)
