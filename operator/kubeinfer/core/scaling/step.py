"""One autoscaler tick, pure: what was observed + what is remembered -> a decision + memory.

Owns the order of a tick's thinking: aggregate the pods that answered into the tick's sample,
keep it in the window, learn the cold start from pod timestamps, record the demand's
burstiness (``burst``) and read from it the headroom and whether the load is calm enough to
run hotter (``burst.calm_target_factor``), record it by time of period (``season``) and read
the forecast when today tracks the last period (then it replaces the burst headroom and
runs hotter still), then ``decide``, then the
scale-to-zero hand-off with the router (``zero``). The operator's
engine calls ``step`` between gathering (the store and the scrape) and acting (the scale
subresource, status, Events); bench/autoscaling's simulator calls the same ``step`` with the
same policy defaults, so the published numbers are what the operator does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from kubeinfer.core import api
from kubeinfer.core.scaling import (
    burst,
    cold_start,
    decide,
    policy,
    season,
    signals,
    state,
    window,
    zero,
)

# Depth per pod, as a share of the forecast's target, on which the latency at the target is
# learned, and each such tick's weight in its moving average.
LATENCY_BAND = (0.8, 1.25)
LATENCY_WEIGHT = 0.1


@dataclasses.dataclass(frozen=True, kw_only=True)
class Observation:
    """What the engine saw this tick."""

    replicas: decide.Replicas
    # One entry per Ready pod whose metrics answered; pods that failed are left out.
    pods: Sequence[signals.PodSignals]
    # Ready pods that answered for the first time (a baseline, not in ``pods``): not counted
    # at the others' mean (signals.aggregate).
    first_scrapes: int = 0
    # Requests queued on the Ready pods now, first scrapes included (``metrics.queued``);
    # None when none answered. Its growth between ticks counts as arrivals (signals.offered).
    queued: float | None = None
    # (created, ready) timestamps of Ready pods, oldest first: the cold starts to learn from.
    cold_starts: Sequence[tuple[float, float]] = ()
    # kubeinfer-router's counters (spec.router.enabled), None when it is off or did not answer.
    router: signals.RouterSignals | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Memory:
    """What the autoscaler carries from tick to tick (and persists across restarts)."""

    state: state.ScalerState
    window: window.SignalWindow
    # Demand and its growth within a cold start (its closed moments persist: see burst.py).
    burst: burst.BurstHistory = dataclasses.field(default_factory=burst.BurstHistory)
    # Demand by time of period and how today tracks it (persists: see season.py).
    season: season.SeasonalHistory = dataclasses.field(default_factory=season.SeasonalHistory)
    # (time, Observation.queued) of the last tick that had it, for the arrivals. Not
    # persisted: after a restart the first tick counts no growth.
    queued: tuple[float, float] | None = None

    @classmethod
    def fresh(cls, pol: policy.ScalingPolicy) -> Memory:
        return cls(state=state.ScalerState(), window=window.SignalWindow.for_policy(pol))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Step:
    result: decide.ScaleResult
    memory: Memory
    # The tick's service-wide sample, None when no pod answered.
    sample: signals.TickSample | None


def step(pol: policy.ScalingPolicy, observation: Observation, memory: Memory, now: float) -> Step:
    """Decide at ``now``; the input memory is left as it was."""
    sample = signals.aggregate(
        pods=observation.pods,
        ready_replicas=observation.replicas.ready,
        now=now,
        first_scrapes=observation.first_scrapes,
    )
    win = memory.window.copy()
    if sample is not None:
        win.record(sample=sample)
    win.prune(now=now)
    learned = cold_start.learn(pairs=observation.cold_starts, previous_s=memory.state.cold_start_s)
    cold = learned if learned is not None else pol.cold_start_default_s
    demand = (
        signals.offered(sample, queued=observation.queued, before=memory.queued)
        if sample is not None
        else None
    )
    bursts = memory.burst.copy()
    if pol.burst_headroom and demand is not None:
        bursts.record(now=now, demand=demand, horizon_s=cold)
    seasons = (
        memory.season.copy()
        if memory.season.period_s == pol.forecast_period_s
        else season.SeasonalHistory(period_s=pol.forecast_period_s)  # a new period: relearn
    )
    if demand is not None:
        seasons.record(now=now, demand=demand)
    forecast = _forecast(pol, seasons, now, cold)
    calm = burst.calm_target_factor(pol, bursts, cold_start_s=cold)
    result = decide.decide(
        policy=zero.floor(pol),
        window=win,
        state=dataclasses.replace(
            memory.state,
            cold_start_s=learned,
            latency_at_target_s=_latency_at_target(pol, sample, memory.state.latency_at_target_s),
        ),
        now=now,
        replicas=observation.replicas,
        scraped=sample is not None,
        # The forecast covers the bursts the headroom would keep room for, and more.
        headroom=1.0 if forecast else _headroom(pol, bursts, win, now),
        target_factor=max(calm, pol.forecast_target_factor) if forecast else calm,
        forecast=forecast,
    )
    result = zero.hand_off(
        pol=pol,
        result=result,
        before=memory.state,
        sample=sample,
        router=observation.router,
        now=now,
    )
    return Step(
        result=result,
        memory=Memory(
            state=result.state,
            window=win,
            burst=bursts,
            season=seasons,
            queued=None if observation.queued is None else (now, observation.queued),
        ),
        sample=sample,
    )


def _forecast(
    pol: policy.ScalingPolicy, seasons: season.SeasonalHistory, now: float, cold_s: float
) -> season.Forecast | None:
    """The forecast to act on this tick: one whose error is within the policy's; None
    otherwise, and always for QueueTime (a latency target is the SLO's, not a utilization
    to run hotter than)."""
    if pol.metric is api.ScalingMetric.QUEUE_TIME:
        return None
    forecast = seasons.forecast(now=now, horizon_s=cold_s * pol.forecast_horizon_cold_starts)
    if forecast is None or forecast.error > pol.forecast_max_error:
        return None
    return forecast


def _headroom(
    pol: policy.ScalingPolicy, bursts: burst.BurstHistory, win: window.SignalWindow, now: float
) -> float:
    """The burst-headroom factor for this tick; 1 when it is off. ``decide`` multiplies the
    stable window's load by it, so the bound on room (the highest recent demand) is read
    against the stable window's request rate."""
    if not pol.burst_headroom:
        return 1.0
    rate = win.average(
        series=api.ScalingMetric.REQUEST_RATE.value, now=now, span_s=pol.stable_window_s
    )
    return bursts.headroom(rate or 0.0)


def nothing_to_record(result: decide.ScaleResult, *, recorded: bool, unanswered: int) -> bool:
    """Whether a decision is too early to be the first one recorded: a hold at the current
    count for want of data, while no replica failed to answer (none is Ready yet, or the
    Ready ones gave their first scrape, a baseline that counter deltas start from). What a
    new service's first ticks decide: status's Ready condition says it (ReplicasNotReady),
    and no metric is missing yet. ``recorded``: a decision is in status already (every later
    one is judged by ``state.is_news``); ``unanswered``: Ready replicas whose scrape failed.
    """
    return (
        not recorded
        and result.reason is decide.Reason.NO_DATA
        and not result.changed
        and unanswered == 0
    )


def _latency_at_target(
    pol: policy.ScalingPolicy, sample: signals.TickSample | None, before: float | None
) -> float | None:
    """The moving average of a request's time in a pod (depth / rate, Little's law) over the
    ticks on which the pods ran near the forecast's target depth.

    The forecast floor turns a demand in requests/s into queue depth. At the latency of the
    moment that under-reads it whenever the pods run below the target, as they do just after
    a scale-up ahead of a rise: a batching server's latency grows with its load, so the floor
    gave back replicas it had just asked for and the rise met too few (bench/autoscaling).
    """
    if pol.metric is not api.ScalingMetric.QUEUE_DEPTH or sample is None:
        return before
    ready, rate = sample.ready_replicas, sample.request_rate_total
    if ready <= 0 or rate <= 0:
        return before
    per_pod = sample.queue_depth_total / ready
    target = pol.target * pol.forecast_target_factor
    if not LATENCY_BAND[0] * target <= per_pod <= LATENCY_BAND[1] * target:
        return before
    latency = sample.queue_depth_total / rate
    return latency if before is None else before + LATENCY_WEIGHT * (latency - before)
