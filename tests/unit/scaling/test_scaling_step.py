"""step(): one autoscaler tick on virtual time, as the operator's engine and the benchmark run it.

A simulated service: pods that answer scrapes with Triton's counters, a load that steps up and
back down, replicas that become ready after a cold start. The loop is the engine's: observe
(pod signals from two scrapes) -> step -> act (the desired count becomes the next current).
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from kubeinfer.core import api, metrics
from kubeinfer.core.scaling import burst, decide, policy, season, signals, step
from kubeinfer.engines import autoscaler

CAPACITY = 100.0  # requests per second one replica serves
LATENCY_S = 0.04  # service time


@dataclasses.dataclass
class FakeReplica:
    """One replica's counters and its queue."""

    done: float = 0.0
    failed: float = 0.0
    queue: float = 0.0


@dataclasses.dataclass
class FakeService:
    """Counters a scrape would read: load split evenly over the ready replicas, each serving
    up to its capacity from a bounded queue (the pending gauge) that rejects what does not
    fit (the failure counter); so answered + rejected + the queues' growth is the load
    offered."""

    ready: int = 1
    queue_size: float = 20.0  # requests one replica's queue holds before it rejects
    replicas: list[FakeReplica] = dataclasses.field(default_factory=list)

    def scrape(self, rate: float, dt: float) -> dict[str, metrics.RawScrape]:
        # New replicas start empty; one that went away takes its queue with it.
        del self.replicas[self.ready :]
        self.replicas += [FakeReplica() for _ in range(self.ready - len(self.replicas))]
        out = {}
        for i, replica in enumerate(self.replicas):
            replica.queue += rate / self.ready * dt
            served = min(replica.queue, CAPACITY * dt)
            rejected = max(0.0, replica.queue - served - self.queue_size)
            replica.queue -= served + rejected
            replica.done += served
            replica.failed += rejected
            out[f"p{i}"] = metrics.RawScrape(
                pending_requests=replica.queue,
                queue_duration_us=0.0,
                request_duration_us=replica.done * LATENCY_S * 1e6,
                request_success=replica.done,
                request_failure=replica.failed,
            )
        return out


def run(loads: list[float], pol: policy.ScalingPolicy) -> list[tuple[float, decide.Reason, int]]:
    """(time, reason, desired) per tick; ticks every 2 s; new replicas ready after 2 ticks."""
    return [(now, s.result.reason, s.result.desired) for now, s in steps(loads, pol)]


def steps(
    loads: list[float], pol: policy.ScalingPolicy, service: FakeService | None = None
) -> list[tuple[float, step.Step]]:
    """(time, step) per tick, as ``run``."""
    service = service or FakeService()
    memory = step.Memory.fresh(pol)
    baselines = metrics.Baselines()
    current, starting_since = 1, dict[int, float]()
    out: list[tuple[float, step.Step]] = []
    for tick, rate in enumerate(loads):
        now = 1000.0 + 2.0 * tick
        service.ready = max(1, current - sum(1 for t in starting_since.values() if now - t < 4))
        scrapes = service.scrape(rate, 2.0)
        first = baselines.first_scrapes(scrapes)  # as the engine reads it, before the signals
        pods = baselines.signals(scrapes, now)
        observation = step.Observation(
            replicas=decide.Replicas(
                current=current, ready=service.ready, starting=current - service.ready
            ),
            pods=pods,
            first_scrapes=first,
            queued=metrics.queued(scrapes),
            # Pods start in 4 s here: the learned cold start sets the scale-down window's floor.
            cold_starts=[(t, t + 4.0) for t in starting_since.values() if now - t >= 4],
        )
        result = step.step(pol, observation, memory, now)
        memory = result.memory
        for i in range(current, result.result.desired):
            starting_since[i] = now
        current = result.result.desired
        out.append((now, result))
    return out


def test_a_step_is_met_at_once_and_given_back_after_the_delay() -> None:
    pol = policy.from_spec(
        target=4.0, stable_window_s=12.0, scale_down_stabilization_s=10.0, burst_headroom=False
    )
    loads = [50.0] * 10 + [300.0] * 20 + [50.0] * 30
    history = run(loads, pol)
    # The first tick has only baselines (no rates yet): it holds, never scales down on them.
    assert history[0][1] is decide.Reason.NO_DATA
    first_up = next(t for t, _, desired in history if desired > 1)
    assert first_up - 1000.0 == 2.0 * 10  # the tick the step arrives
    assert max(d for _, _, d in history) >= 3
    assert history[-1][2] == 1  # back to one after the load and the delay


def test_burst_headroom_keeps_room_for_the_next_burst_then_lets_it_go() -> None:
    # The same 6x step with burst headroom on: once the load is back, the count stays at the
    # load times the growth seen within one cold start (50 req/s -> depth 2 -> 0.5 replicas,
    # x6 = 3) while that growth is among the top 5 % of the recent moments, then goes down
    # without ever flapping back up, to one when the burst is history.
    pol = policy.from_spec(target=4.0, stable_window_s=12.0, scale_down_stabilization_s=10.0)
    quiet = round((burst.HISTORY_S + 60) / 2.0)
    history = run([50.0] * 10 + [300.0] * 20 + [50.0] * quiet, pol)
    back = [desired for t, _, desired in history if t >= 1000.0 + 2.0 * 30 + 20.0]
    assert back[:60] == [3] * 60  # two minutes of room for another burst like that one
    assert back == sorted(back, reverse=True)
    assert back[-1] == 1


def test_a_backlog_counts_as_demand_when_it_arrives_not_when_it_is_answered() -> None:
    # 50 -> 300 req/s on one replica whose queue holds everything a cold start piles up: the
    # replica answers its capacity (100/s) while the queue grows 200/s, and once the new
    # replicas are Ready they drain it on top of the 300/s. The demand the burst history
    # and the forecast record is what arrived, 300/s (answered + rejected alone read 100/s,
    # then 400/s), but on the tick the new replicas turn Ready: their first scrape is a
    # baseline, so what they took until then is not counted (signals.aggregate), an
    # under-read for one tick rather than an over-read for the history to keep.
    pol = policy.from_spec(target=4.0, stable_window_s=12.0, scale_down_stabilization_s=10.0)
    loads = [50.0] * 10 + [300.0] * 20
    ticks = steps(loads, pol, FakeService(queue_size=1e6))
    recorded = [s.memory.burst.open[-1][1] if s.sample else None for _, s in ticks]
    assert recorded[1:10] == pytest.approx([50.0] * 9)
    joined = next(i for i, (_, s) in enumerate(ticks) if s.sample and s.sample.ready_replicas > 1)
    assert joined > 10 and recorded[joined] is not None and recorded[joined] < 300.0
    del recorded[joined]
    assert recorded[10:] == pytest.approx([300.0] * 19)


def test_a_calm_load_runs_hotter_once_the_history_says_so() -> None:
    # 110 req/s at a depth target of 2 (50 req/s a replica) wants 3 replicas; at the calm
    # target (2.4, 60 req/s) 2 do, each well under capacity. The factor comes only once the
    # burst history spans calm_span_s, and the decision says why it reads a hotter target.
    pol = policy.from_spec(target=2.0, stable_window_s=12.0, scale_down_stabilization_s=10.0)
    calm_at = 1000.0 + pol.calm_span_s
    history = steps([110.0] * round((pol.calm_span_s + 120.0) / 2.0), pol)
    before = [s.result for t, s in history if 1030.0 <= t < calm_at]
    after = [s.result for t, s in history if t >= calm_at + 60.0]
    assert {r.desired for r in before} == {3}
    assert {r.inputs.target_factor for r in before} == {1.0}
    assert {r.desired for r in after} == {2}
    assert all(r.inputs.target_factor == pytest.approx(pol.calm_target_factor) for r in after)
    assert "while the demand is calm" in after[-1].message


def test_a_calm_target_and_burst_headroom_survive_a_restart() -> None:
    # The engine persists the step's memory in status and restores it after a restart: the
    # calm spell and the room a burst earned come back (a state written before the burst
    # history was persisted restores as no evidence: factor 1 until calm_span_s again).
    pol = policy.from_spec(target=2.0, stable_window_s=12.0, scale_down_stabilization_s=10.0)
    calm = steps([110.0] * round((pol.calm_span_s + 120.0) / 2.0), pol)[-1][1].memory
    bursty = steps(([50.0] * 20 + [150.0] * 10) * 10, pol)[-1][1].memory
    for carried, factor in ((calm, pol.calm_target_factor), (bursty, 1.0)):
        isvc = {"status": {"autoscaler": {"state": autoscaler.persisted_state(carried)}}}
        back, _ = autoscaler.restore(isvc, pol)
        assert burst.calm_target_factor(pol, back.burst, cold_start_s=4.0) == factor
        assert back.burst.headroom(50.0) >= carried.burst.headroom(50.0)
    assert bursty.burst.headroom(50.0) == pytest.approx(3.0)
    saved = json.loads(autoscaler.persisted_state(calm))
    del saved["burst"]
    isvc = {"status": {"autoscaler": {"state": json.dumps(saved)}}}
    back, _ = autoscaler.restore(isvc, pol)
    assert burst.calm_target_factor(pol, back.burst, cold_start_s=4.0) == 1.0


def test_the_calm_target_ends_with_the_calm() -> None:
    # After ten calm minutes at the raised target, a load that jumps 1.5x every 8 s (pods
    # start in 4 s here, so half the moments see that growth within one cold start): once
    # enough of them have closed the factor drops to 1 for good.
    pol = policy.from_spec(target=2.0, stable_window_s=12.0, scale_down_stabilization_s=10.0)
    calm = [110.0] * round((pol.calm_span_s + 120.0) / 2.0)
    wave = [110.0, 110.0, 165.0, 165.0] * 45
    history = steps(calm + wave + [110.0] * 30, pol)
    factors = [s.result.inputs.target_factor for _, s in history]
    assert factors[len(calm) - 1] == pytest.approx(pol.calm_target_factor)
    assert factors[-1] == 1.0
    ended = factors.index(1.0, len(calm))
    assert ended < len(calm) + len(wave)  # while the bursts go on, not after them
    assert set(factors[ended:]) == {1.0}


def test_step_leaves_the_memory_it_was_given_untouched() -> None:
    pol = policy.from_spec()
    memory = step.Memory.fresh(pol)
    before = memory.window.to_dict()
    signal = metrics.pod_signals(
        pod="p",
        previous=metrics.RawScrape(),
        previous_time=0.0,
        current=metrics.RawScrape(request_success=10.0, pending_requests=3.0),
        current_time=2.0,
    )
    assert signal is not None
    observation = step.Observation(replicas=decide.Replicas(current=1, ready=1), pods=[signal])
    out = step.step(pol, observation, memory, 2.0)
    assert memory.window.to_dict() == before
    assert out.memory.window.to_dict() != before
    assert out.sample is not None and out.sample.queue_depth_total == 3.0


@pytest.mark.parametrize(
    ("name", "ready", "scraped", "failures", "recorded", "unanswered", "quiet"),
    [
        # A new service's first ticks: nothing Ready, nothing scraped, holding the start count.
        ("nothing ready yet", 0, False, 0, False, 0, True),
        # The Ready replica's first scrape is a baseline: no sample yet, nothing missing.
        ("first scrape is a baseline", 1, False, 0, False, 0, True),
        # A Ready replica whose metrics do not answer: missing metrics are news.
        ("a ready replica did not answer", 1, False, 0, False, 1, False),
        # A decision made on data is the first worth recording.
        ("scraped", 1, True, 0, False, 0, False),
        # The fallback raises the count: a move is always news.
        ("fallback after failures", 0, False, 2, False, 0, False),
        # Once something is recorded, state.is_news judges every later decision.
        ("already recorded", 0, False, 0, True, 0, False),
    ],
)
def test_nothing_to_record(
    name: str,
    ready: int,
    scraped: bool,
    failures: int,
    recorded: bool,
    unanswered: int,
    quiet: bool,
) -> None:
    pol = policy.from_spec(fallback_replicas=3, failures_before_fallback=3)
    memory = step.Memory.fresh(pol)
    memory = dataclasses.replace(
        memory, state=dataclasses.replace(memory.state, consecutive_failures=failures)
    )
    pods = (
        [
            signals.PodSignals(
                pod="p0", pending_requests=4.0, queue_time_us=None, request_rate=10.0, executing=1.0
            )
        ]
        if scraped
        else []
    )
    observation = step.Observation(
        replicas=decide.Replicas(current=1, ready=ready, starting=1 - ready), pods=pods
    )
    result = step.step(pol, observation, memory, 1000.0).result
    assert step.nothing_to_record(result, recorded=recorded, unanswered=unanswered) is quiet, (
        name,
        result.reason,
        result.desired,
    )


def day_policy() -> policy.ScalingPolicy:
    """A 600 s forecast period: a "day" of 300 ticks, 2.08 s buckets."""
    return policy.from_spec(
        target=2.0,
        stable_window_s=12.0,
        scale_down_stabilization_s=10.0,
        forecast_period_s=600.0,
        max_replicas=10,
    )


def test_a_day_like_yesterday_is_met_ahead_of_its_rise_and_runs_hotter() -> None:
    # A 600 s "day" (300 ticks): 110 req/s, 330 from 300 s to 400 s. On the first day the
    # rise is met when it comes; on the second, which tracks the first, the forecast asks
    # for the rise's replicas before it (pods start in 4 s here, so one cold start ahead),
    # and between rises the service runs at the forecast's hotter target with fewer
    # replicas than the first day needed, saying why.
    pol = day_policy()
    day = [110.0] * 150 + [330.0] * 50 + [110.0] * 100
    history = steps(day + day, pol)
    rise = [1000.0 + 2.0 * 150, 1000.0 + 600.0 + 2.0 * 150]
    # The forecast covers a rise up to season.SHIFT buckets early: it asks that much sooner.
    ahead = 6.0 + season.SHIFT * 600.0 / season.BUCKETS
    first = [s.result for t, s in history if rise[0] - ahead <= t < rise[0]]
    second = [s.result for t, s in history if rise[1] - ahead <= t < rise[1]]
    assert max(r.desired for r in first) == 3
    assert decide.Reason.FORECAST_SCALE_UP in {r.reason for r in second}
    assert max(r.desired for r in second) >= 5  # 330 req/s x 0.04 s / (2 x 1.4) = 4.7
    quiet = [s.result for t, s in history if rise[1] - 100.0 <= t < rise[1] - ahead]
    assert {r.desired for r in quiet} == {2}
    assert all(r.inputs.forecast is not None for r in quiet)
    assert all(r.inputs.target_factor == pytest.approx(pol.forecast_target_factor) for r in quiet)
    assert "while the demand follows the forecast" in quiet[-1].message
    assert "ahead of the demand the last period had" in next(
        r.message for r in second if r.reason is decide.Reason.FORECAST_SCALE_UP
    )


def test_a_day_unlike_yesterday_drops_the_forecast_within_a_few_buckets() -> None:
    # The second day has no rise: the forecast prepares for yesterday's (its cost), and once
    # today's buckets stop tracking (three of the last 48 off by more than 15 %), the reactive
    # rules are back and the replicas the forecast asked for go. Once today has run at a
    # steady third of yesterday for 48 buckets, that is the forecast's scale.
    pol = day_policy()
    day = [110.0] * 150 + [330.0] * 100 + [110.0] * 50
    history = steps(day + [110.0] * 300, pol)
    rise = 1000.0 + 600.0 + 2.0 * 150

    def results(start: float, end: float) -> list[decide.ScaleResult]:
        return [s.result for t, s in history if rise + start <= t < rise + end]

    assert all(r.inputs.forecast is not None for r in results(-100.0, -10.0))
    assert max(r.desired for r in results(-6.0, 0.0)) >= 5
    # The load stays at 110 req/s: the forecast holds those replicas while it still tracks
    # (a rise up to season.SHIFT buckets late, 12.5 s here, would still be today's).
    assert any(decide.Clamp.FORECAST in r.clamps for r in results(0.0, 6.0))
    assert all(r.inputs.forecast is None for r in results(25.0, 60.0))
    # (The calm target may remain: pods start in 4 s here, and the rise is rare within that.)
    assert all(r.inputs.target_factor < pol.forecast_target_factor for r in results(25.0, 60.0))
    assert {r.desired for r in results(45.0, 60.0)} == {2}  # halved, settled, then 2
    later = [r.inputs.forecast for r in results(140.0, 190.0)]
    assert all(f is not None and f.scale == pytest.approx(1 / 3, rel=0.02) for f in later)


def test_a_forecast_survives_a_restart() -> None:
    # The engine persists the period's history in status with the rest of the step's memory.
    pol = policy.from_spec(
        target=2.0, stable_window_s=12.0, scale_down_stabilization_s=10.0, forecast_period_s=600.0
    )
    day = [110.0] * 150 + [330.0] * 50 + [110.0] * 100
    now, last = steps(day + day[:140], pol)[-1]
    isvc = {"status": {"autoscaler": {"state": autoscaler.persisted_state(last.memory)}}}
    back, _ = autoscaler.restore(isvc, pol)
    before = last.memory.season.forecast(now=now, horizon_s=30.0)
    after = back.season.forecast(now=now, horizon_s=30.0)
    assert before is not None and after is not None
    assert after.demand == pytest.approx(before.demand, rel=1e-3) == 330.0


def test_the_latency_at_the_target_is_learned_only_near_the_forecasts_target() -> None:
    pol = day_policy()  # target 2 in flight per pod, x1.4 while forecast: 2.8
    target = pol.target * pol.forecast_target_factor

    def sample(per_pod: float, rate: float, ready: int = 4) -> signals.TickSample:
        return signals.TickSample(
            time=0.0,
            ready_replicas=ready,
            pods_scraped=ready,
            queue_depth_total=per_pod * ready,
            request_rate_total=rate,
            queue_time_ms=None,
            gpu_utilization=None,
        )

    learn = step._latency_at_target
    assert learn(pol, sample(target, 112.0), None) == pytest.approx(0.1)  # 11.2 / 112
    # Far below the target (pods idle) or above it (queueing) says nothing about it.
    assert learn(pol, sample(target / 4, 112.0), 0.1) == 0.1
    assert learn(pol, sample(target * 3, 112.0), 0.1) == 0.1
    assert learn(pol, None, 0.1) == 0.1
    # A moving average: one tick moves it by its weight.
    moved = learn(pol, sample(target, 56.0), 0.1)
    assert moved == pytest.approx(0.1 + step.LATENCY_WEIGHT * (0.2 - 0.1))
    queue_time = policy.from_spec(target=50.0, metric=api.ScalingMetric.QUEUE_TIME)
    assert learn(queue_time, sample(50.0, 112.0), None) is None
