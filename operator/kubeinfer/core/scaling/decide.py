"""decide(): the desired replica count from a policy, a signal window, state and ``now``.

Owns the scaling rules and nothing else: no clock, no API, no scraping. The engine calls it
every tick and acts on (or, in Recommend mode, only reports) the returned ``ScaleResult``,
then persists ``result.state``. The rules read the policy's target times ``target_factor``
(above 1 only while the load is calm, burst.calm_target_factor, or follows the forecast,
season.py). The rules, in order:

1. Metrics missing for ``failures_before_fallback`` ticks -> at least ``fallback_replicas``.
   No data in the stable window -> hold. A failed scrape never lets the count go down.
2. Stable recommendation: the stable-window average against the target; panic mode
   (Knative-like) when the panic window wants ``panic_threshold`` x the capacity we have,
   where starting replicas count as capacity; in panic, never scale down.
3. Look-ahead: a confident rising trend projected one cold start ahead. It scales up early
   (not while replicas are starting) and it is a floor for scale-down: replicas given back
   during a rise could not come back within a cold start. For QueueDepth the trend is fitted
   to the request rate (counter deltas, far less noisy than the pending gauge) and turned
   into queue depth by Little's law (depth per request/s in the stable window).
4. Burst headroom (``headroom`` > 1, burst.py): at least the current load times how much
   the demand recently grew within one cold start, so the next burst like the recent ones
   finds its replicas running. It scales up (beyond the tolerance) and holds replicas.
5. Forecast (``forecast``, season.py; the step passes one only while today tracks the last
   period closely, and then no burst headroom): at least the replicas the forecast demand
   needs, converted like the look-ahead. It scales up ahead of a rise the last period had
   and holds replicas the load will need again within a cold start; a forecast no higher
   than today's load holds within the tolerance, as it scales up.
6. Tolerance, scale-up rate limit (only the additive step while the cluster was full within
   the stable window), capacity block (pods waiting for GPUs, or pods the
   scheduler has not answered for yet: adding more before it has would pile pending pods
   onto a full cluster faster than the scheduler can say so), scale-down
   stabilization (the highest recommendation in the window, which lasts at least
   ``scale_down_cold_starts`` learned cold starts; while calm only ``calm_scale_down_s``,
   while forecast ``forecast_scale_down_s``, and then a step it chooses within the tolerance
   waits for it to expire), scale-down rate limit, settling (while calm or forecast, a
   stable window after the last scale-down beyond the tolerance), the trend floor,
   scale-down hysteresis (not while calm or forecast), the GPU veto on scale-down, then
   min/max.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
from typing import Any

from kubeinfer.core import api
from kubeinfer.core.scaling import policy as policy_
from kubeinfer.core.scaling import season as season_
from kubeinfer.core.scaling import state as state_
from kubeinfer.core.scaling import window as window_


class Reason(enum.StrEnum):
    """Why the desired count is what it is: one CamelCase word each."""

    SCALE_UP = "ScaleUp"
    PANIC_SCALE_UP = "PanicScaleUp"
    EARLY_SCALE_UP = "EarlyScaleUp"
    # Spare replicas for bursts like the recent ones (burst.py).
    BURST_HEADROOM = "BurstHeadroom"
    # Ahead of the demand the last period had within the next cold start (season.py).
    FORECAST_SCALE_UP = "ForecastScaleUp"
    SCALE_DOWN = "ScaleDown"
    HOLD = "Hold"
    NO_DATA = "NoData"
    FALLBACK = "Fallback"
    BLOCKED_BY_CAPACITY = "BlockedByCapacity"
    AWAITING_PLACEMENT = "AwaitingPlacement"
    GPU_VETO = "GPUVeto"
    STABILIZING = "Stabilizing"
    # Too little history for a scale-down yet (a new service, or the window lost).
    WARMING_UP = "WarmingUp"
    AT_MAX = "AtMax"
    AT_MIN = "AtMin"
    # Scale to zero (zero.py): the autoscaler's last replica goes; it holds at zero; the
    # router's wake (0 -> 1, its write) is seen.
    SCALED_TO_ZERO = "ScaledToZero"
    AT_ZERO = "AtZero"
    WOKEN_BY_ROUTER = "WokenByRouter"


class Clamp(enum.StrEnum):
    """A limit that changed the recommendation on its way to the desired count."""

    TOLERANCE = "Tolerance"
    SCALE_UP_RATE = "ScaleUpRate"
    SCALE_DOWN_RATE = "ScaleDownRate"
    STABILIZATION = "Stabilization"
    GPU_VETO = "GPUVeto"
    CAPACITY = "Capacity"
    NO_DATA = "NoData"
    MIN_REPLICAS = "MinReplicas"
    MAX_REPLICAS = "MaxReplicas"
    # A confident rising trend kept replicas that the current load alone would give back.
    TREND = "Trend"
    # The scale-down was smaller than scale_down_min_fraction of the current count.
    HYSTERESIS = "Hysteresis"
    # The window holds under WARM_FRACTION of a stable window of samples.
    WARMING_UP = "WarmingUp"
    # The burst-headroom floor kept replicas that the current load alone would give back.
    BURST_HEADROOM = "BurstHeadroom"
    # The forecast floor kept replicas that the current load alone would give back.
    FORECAST = "Forecast"
    # While calm or forecast: the stable window has not seen the count of the last
    # scale-down beyond the tolerance.
    SETTLING = "Settling"


# A scale-down needs this share of a stable window of samples. Right after a start (a new
# service, an operator away for longer than the window) the window holds a sample or two, and a
# pod's first scrape is its pending gauge alone (executing needs two counter readings), so the
# load reads as about half of what it is: the simulator saw 5 -> 2 on the first tick and a
# panic to 30 two seconds later. Scaling up needs no history: a burst is evidence enough.
WARM_FRACTION = 0.5


def _noticed(policy: policy_.ScalingPolicy, current: int, fewer: int) -> bool:
    """Whether a scale-down from ``current`` to ``fewer`` is beyond the tolerance. Settling
    (_scale_down) waits for the stable window to see such a step; a smaller one changes what
    each replica carries by less than the rules notice."""
    return fewer < current * (1 - policy.tolerance)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Replicas:
    """The replica counts the engine observed this tick."""

    # The Deployment's spec.replicas now: the count the decision moves from.
    current: int
    ready: int
    # Created and scheduled, not Ready yet: capacity on its way.
    starting: int = 0
    # Pending because no node has a free GPU (WaitingForGPUCapacity).
    unschedulable: int = 0
    # Asked for (spec.replicas) but not placed yet: not created by the Deployment controller
    # or not answered by the scheduler. Capacity on its way, unless the cluster is full.
    placing: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inputs:
    """What a decision was made from, for the status history."""

    metric: api.ScalingMetric
    target: float
    stable: float | None
    panic: float | None
    gpu_utilization: float | None
    trend_per_s: float | None
    cold_start_s: float
    # The burst-headroom factor this tick (1: none), burst.py.
    headroom: float
    current: int
    ready: int
    starting: int
    unschedulable: int
    placing: int
    recommended: int
    panicking: bool
    scraped: bool
    # Seconds of samples the window holds (for the WarmingUp message; not in the history).
    covered_s: float = 0.0
    # The target the rules read is ``target`` (the spec's) times this (1: none): the calm
    # target, burst.calm_target_factor, or the forecast's, policy.forecast_target_factor.
    target_factor: float = 1.0
    # The forecast acted on (season.py), None when none was.
    forecast: season_.Forecast | None = None

    def to_dict(self) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {
            "metric": self.metric.value,
            "target": self.target,
            "stable": rounded(self.stable),
            "panic": rounded(self.panic),
            "gpuUtilization": rounded(self.gpu_utilization),
            "trendPerSecond": rounded(self.trend_per_s),
            "coldStartSeconds": rounded(self.cold_start_s),
            "burstHeadroom": rounded(self.headroom),
            "calmTargetFactor": rounded(self.target_factor),
            "forecastDemand": rounded(self.forecast.demand) if self.forecast else None,
            "forecastError": rounded(self.forecast.error) if self.forecast else None,
            "current": self.current,
            "ready": self.ready,
            "starting": self.starting,
            "unschedulable": self.unschedulable,
            "placing": self.placing,
            "recommended": self.recommended,
            "panicking": self.panicking,
            "scraped": self.scraped,
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScaleResult:
    desired: int
    reason: Reason
    clamps: tuple[Clamp, ...]
    inputs: Inputs
    message: str
    # The state to persist and pass to the next decide().
    state: state_.ScalerState

    @property
    def changed(self) -> bool:
        return self.desired != self.inputs.current

    def record(self, *, now: float) -> api.DecisionRecord:
        """The decision as status shows it (numeric inputs only: the CRD's schema)."""
        return api.DecisionRecord(
            time=iso(now),
            current=self.inputs.current,
            desired=self.desired,
            reason=self.reason.value,
            clamps=[c.value for c in self.clamps],
            inputs=numeric(self.inputs.to_dict()),
            message=self.message,
        )


def iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def numeric(inputs: dict[str, Any]) -> dict[str, float]:
    """The numbers among a decision's inputs (booleans as 0/1), for status and metrics."""
    out: dict[str, float] = {}
    for key, value in inputs.items():
        if isinstance(value, bool):
            out[key] = 1.0 if value else 0.0
        elif isinstance(value, int | float):
            out[key] = float(value)
    return out


_UP = (
    Reason.SCALE_UP,
    Reason.PANIC_SCALE_UP,
    Reason.EARLY_SCALE_UP,
    Reason.BURST_HEADROOM,
    Reason.FORECAST_SCALE_UP,
    Reason.FALLBACK,
)


def _wanted(*, policy: policy_.ScalingPolicy, value: float, ready: int) -> float:
    """Replicas (fractional) the metric value asks for."""
    if policy.metric is api.ScalingMetric.QUEUE_TIME:
        # Queue time does not add up across pods: scale the ready count proportionally.
        return max(ready, 1) * value / policy.target
    return value / policy.target


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Slope:
    """A trend in the policy metric's units per second, and whether it may be acted on."""

    per_s: float
    confident: bool


def _depth_per_request_rate(
    *, policy: policy_.ScalingPolicy, window: window_.SignalWindow, now: float, stable: float
) -> float | None:
    """Queue depth per request/s over the stable window (Little's law: depth = rate x
    latency), to turn a request rate into the QueueDepth metric; None without a rate."""
    rate = window.average(
        series=api.ScalingMetric.REQUEST_RATE.value, now=now, span_s=policy.stable_window_s
    )
    return stable / rate if rate is not None and rate > 0 else None


def _rising_trend(
    *,
    policy: policy_.ScalingPolicy,
    window: window_.SignalWindow,
    now: float,
    stable: float,
) -> _Slope | None:
    """The metric's trend over the trend window, None without enough points to fit one.

    QueueDepth is fitted on the request rate and converted with the stable window's depth per
    request/s (Little's law: depth = rate x latency), because the pending gauge is sampled at
    one instant while the rate is a counter delta over the interval.
    """
    span = policy.trend_window_s
    # Coverage of what the window can hold: a stable window shorter than the trend window
    # keeps fewer buckets.
    held = min(span, window.length_s)
    need = max(3, math.ceil(policy.trend_min_coverage * held / window.granularity_s))
    scale = 1.0
    series = policy.metric.value
    if policy.metric is api.ScalingMetric.QUEUE_DEPTH:
        per_rps = _depth_per_request_rate(policy=policy, window=window, now=now, stable=stable)
        if per_rps is not None:
            series, scale = api.ScalingMetric.REQUEST_RATE.value, per_rps
    trend = window.trend(series=series, now=now, span_s=span)
    if trend is None or trend.points < need:
        return None
    per_s = trend.slope_per_s * scale
    return _Slope(per_s=per_s, confident=per_s > 0 and trend.r2 >= policy.trend_min_r2)


@dataclasses.dataclass(kw_only=True)
class _Tick:
    """What one decision reads and accumulates on its way to a result."""

    policy: policy_.ScalingPolicy
    state: state_.ScalerState
    now: float
    replicas: Replicas
    scraped: bool
    failures: int
    cold_start_s: float
    stable: float | None
    panic: float | None
    gpu: float | None
    panic_until: float | None
    # When pods last waited for capacity, this tick included.
    full_at: float | None
    # Seconds of samples the window holds for the policy's metric.
    covered_s: float = 0.0
    headroom: float = 1.0
    # The calm or forecast target's factor; ``policy.target`` is already raised by it,
    # ``spec_target`` not.
    target_factor: float = 1.0
    spec_target: float = 0.0
    forecast: season_.Forecast | None = None
    trend_per_s: float | None = None
    clamps: list[Clamp] = dataclasses.field(default_factory=list)

    @property
    def current(self) -> int:
        return self.replicas.current

    @property
    def recently_full(self) -> bool:
        """The cluster could not place pods within the last stable window."""
        return self.full_at is not None and self.now - self.full_at < self.policy.stable_window_s

    @property
    def calm(self) -> bool:
        """The calm target (burst.calm_target_factor) or the forecast (season.py) is in
        force: either says the load will not outrun the replicas within a cold start."""
        return self.target_factor > 1.0 or self.forecast is not None

    @property
    def kept_s(self) -> float:
        """Scale-down stabilization outside a calm spell: the policy's, and at least
        ``scale_down_cold_starts`` cold starts. The recommendations are kept this long, so the
        window is whole again the moment a calm spell ends."""
        policy = self.policy
        return max(
            policy.scale_down_stabilization_s, policy.scale_down_cold_starts * self.cold_start_s
        )

    @property
    def down_window_s(self) -> float:
        """Scale-down stabilization this tick: ``kept_s``; while calm the shorter
        ``calm_scale_down_s``, and while forecast ``forecast_scale_down_s`` (shorter still by
        default; policy.py says why)."""
        policy = self.policy
        if self.forecast is not None:
            return min(policy.forecast_scale_down_s, policy.scale_down_stabilization_s)
        if self.calm:
            return min(policy.calm_scale_down_s, policy.scale_down_stabilization_s)
        return self.kept_s


def _read(
    *,
    spec_target: float,
    policy: policy_.ScalingPolicy,
    window: window_.SignalWindow,
    state: state_.ScalerState,
    now: float,
    replicas: Replicas,
    scraped: bool,
    headroom: float,
    target_factor: float,
    forecast: season_.Forecast | None,
) -> _Tick:
    series = policy.metric.value
    panic_until = state.panic_until
    if panic_until is not None and now >= panic_until:
        panic_until = None
    return _Tick(
        policy=policy,
        state=state,
        now=now,
        replicas=replicas,
        scraped=scraped,
        failures=0 if scraped else state.consecutive_failures + 1,
        cold_start_s=(
            state.cold_start_s if state.cold_start_s is not None else policy.cold_start_default_s
        ),
        stable=window.average(series=series, now=now, span_s=policy.stable_window_s),
        panic=window.average(series=series, now=now, span_s=policy.panic_window_s),
        gpu=window.average(series=window_.GPU, now=now, span_s=policy.panic_window_s),
        panic_until=panic_until,
        full_at=now if replicas.unschedulable > 0 else state.last_unschedulable_time,
        covered_s=window.covered_s(series=series, now=now),
        headroom=headroom,
        target_factor=target_factor,
        spec_target=spec_target,
        forecast=forecast,
    )


def _finish(tick: _Tick, desired: int, reason: Reason, recommended: int) -> ScaleResult:
    """Apply min/max, name the reason, and build the result with the state to persist."""
    policy, current = tick.policy, tick.current
    bounded = min(max(desired, policy.min_replicas), policy.max_replicas)
    if bounded != desired:
        tick.clamps.append(Clamp.MIN_REPLICAS if bounded > desired else Clamp.MAX_REPLICAS)
        # Keep the reason when the bound only trimmed a move; name the bound when it stopped
        # the move or turned it around.
        if bounded == current:
            reason = Reason.AT_MAX if desired > bounded else Reason.AT_MIN
        elif bounded > current and reason not in _UP:
            reason = Reason.SCALE_UP
        elif bounded < current:
            reason = Reason.SCALE_DOWN
    horizon = tick.now - tick.kept_s
    history = [(t, r) for t, r in tick.state.recommendations if t > horizon]
    if reason not in (Reason.NO_DATA, Reason.FALLBACK):
        # Stabilization reads only the highest recommendation since a time, so one that a
        # later, higher or equal one outranks can go: the list stays a short staircase however
        # long the window (it is persisted in status), and every such maximum is exact.
        while history and history[-1][1] <= recommended:
            history.pop()
        history.append((tick.now, recommended))
    next_state = dataclasses.replace(
        tick.state,
        last_scale_time=tick.now if bounded != current else tick.state.last_scale_time,
        last_scale_down_time=(
            tick.now if _noticed(policy, current, bounded) else tick.state.last_scale_down_time
        ),
        recommendations=tuple(history),
        consecutive_failures=tick.failures,
        panic_until=tick.panic_until,
        last_unschedulable_time=tick.full_at,
    )
    r = tick.replicas
    inputs = Inputs(
        metric=policy.metric,
        # The spec's target: dashboards compare the signals with it; the factor is its own input.
        target=tick.spec_target,
        stable=tick.stable,
        panic=tick.panic,
        gpu_utilization=tick.gpu,
        trend_per_s=tick.trend_per_s,
        cold_start_s=tick.cold_start_s,
        headroom=tick.headroom,
        target_factor=tick.target_factor,
        forecast=tick.forecast,
        current=current,
        ready=r.ready,
        starting=r.starting,
        unschedulable=r.unschedulable,
        placing=r.placing,
        recommended=recommended,
        panicking=tick.panic_until is not None,
        scraped=tick.scraped,
        covered_s=tick.covered_s,
    )
    return ScaleResult(
        desired=bounded,
        reason=reason,
        clamps=tuple(tick.clamps),
        inputs=inputs,
        message=_message(reason=reason, current=current, desired=bounded, inputs=inputs),
        state=next_state,
    )


def _recommend(tick: _Tick, stable: float, panic: float) -> tuple[int, Reason]:
    """Stable and panic recommendations (Knative-like); panic mode never scales down."""
    policy, current = tick.policy, tick.current
    capacity = max(tick.replicas.ready + tick.replicas.starting + tick.replicas.placing, 1)
    wanted_stable = _wanted(policy=policy, value=stable, ready=tick.replicas.ready)
    wanted_panic = _wanted(policy=policy, value=panic, ready=tick.replicas.ready)
    # Panic is judged on the spec's target: a rise that ends a calm spell is exactly what the
    # thinner room of a calm target cannot absorb, so it must not take longer to trigger.
    if wanted_panic * tick.target_factor >= policy.panic_threshold * capacity:
        tick.panic_until = tick.now + policy.stable_window_s
    if tick.panic_until is not None:
        return max(math.ceil(wanted_panic), current), Reason.PANIC_SCALE_UP
    if current > 0 and abs(wanted_stable / current - 1) <= policy.tolerance:
        tick.clamps.append(Clamp.TOLERANCE)
        return current, Reason.SCALE_UP
    return math.ceil(wanted_stable), Reason.SCALE_UP


def _look_ahead(
    tick: _Tick, window: window_.SignalWindow, stable: float, panic: float
) -> tuple[int, bool] | None:
    """(replicas a confident rising trend asks for one cold start ahead, whether that is a
    rise beyond the tolerance); None without a confident trend."""
    policy = tick.policy
    if not policy.early_scale_up:
        return None
    slope = _rising_trend(policy=policy, window=window, now=tick.now, stable=stable)
    if slope is None:
        return None
    tick.trend_per_s = slope.per_s
    if not slope.confident:
        return None
    projected = _wanted(
        policy=policy, value=panic + slope.per_s * tick.cold_start_s, ready=tick.replicas.ready
    )
    # The tolerance applies to the look-ahead too: a trend projecting a few percent more than
    # we have is noise on a flat load.
    current = tick.current
    rise = current == 0 or projected / current - 1 > policy.tolerance
    return math.ceil(projected), rise


def _burst_floor(
    tick: _Tick, stable: float, recommended: int, reason: Reason
) -> tuple[int, Reason]:
    """The recommendation raised to the load times the burst headroom: a scale-up (beyond
    the tolerance) or replicas kept that the load alone would give back. The load is the
    stable window's: the headroom multiplies noise too, and the panic window reacts to a
    burst by itself."""
    if tick.headroom <= 1.0:
        return recommended, reason
    wanted = _wanted(policy=tick.policy, value=stable * tick.headroom, ready=tick.replicas.ready)
    return _raise_to(
        tick, wanted, recommended, reason, up=Reason.BURST_HEADROOM, clamp=Clamp.BURST_HEADROOM
    )


def _forecast_floor(
    tick: _Tick, window: window_.SignalWindow, stable: float, recommended: int, reason: Reason
) -> tuple[int, Reason]:
    """The recommendation raised to the replicas the forecast demand needs: a scale-up
    ahead of the last period's rise, or replicas kept that the load will need again within
    a cold start. QueueDepth converts requests/s with the stable window's depth per
    request/s (Little's law, as the look-ahead does)."""
    if tick.forecast is None:
        return recommended, reason
    policy = tick.policy
    value = tick.forecast.demand
    if policy.metric is api.ScalingMetric.QUEUE_DEPTH:
        per_rps = _depth_per_request_rate(policy=policy, window=window, now=tick.now, stable=stable)
        if per_rps is None:
            return recommended, reason
        # Not below the latency the pods had at the target (step._latency_at_target).
        value *= max(per_rps, tick.state.latency_at_target_s or 0.0)
    wanted = _wanted(policy=policy, value=value, ready=tick.replicas.ready)
    # A forecast no higher than today's load (within the tolerance) is that load at the
    # learned latency: the tolerance that stops the floor adding a replica then also lets it
    # give one back, or a floor of 4.1 replicas holds 5 that it would never have added to 4
    # (spike: a fifth replica for the 1,500 s between and after the spikes, where the oracle
    # runs 4). A forecast above today's load holds its replica: that is what it is for.
    # Today's load is the answered rate, the forecast counts arrivals: while requests are
    # refused the two differ the safe way (not flat); while a backlog drains, the answered
    # rate runs above arrivals for about a stable window.
    rate = window.average(
        series=api.ScalingMetric.REQUEST_RATE.value, now=tick.now, span_s=policy.stable_window_s
    )
    flat = rate is not None and tick.forecast.demand <= rate * (1 + policy.tolerance)
    return _raise_to(
        tick,
        wanted,
        recommended,
        reason,
        up=Reason.FORECAST_SCALE_UP,
        clamp=Clamp.FORECAST,
        keep_within_tolerance=flat,
    )


def _raise_to(
    tick: _Tick,
    wanted: float,
    recommended: int,
    reason: Reason,
    *,
    up: Reason,
    clamp: Clamp,
    keep_within_tolerance: bool = False,
) -> tuple[int, Reason]:
    """A floor of ``wanted`` (fractional) replicas: a scale-up named ``up`` beyond the
    tolerance, else the replicas it keeps (named by ``clamp``). ``keep_within_tolerance``:
    keep only the fewest replicas it would not scale up from."""
    floor = math.ceil(wanted)
    if floor <= recommended:
        return recommended, reason
    current = tick.current
    # Spare replicas are not worth pods that wait for GPUs: on a cluster that was full within
    # the stable window a floor only keeps what runs.
    if floor > current:
        # The tolerance on the unrounded count: a floor a hair over an integer would
        # otherwise add a replica, and the next scale-down take it back.
        if not tick.recently_full and (
            current == 0 or wanted / current - 1 > tick.policy.tolerance
        ):
            return floor, up
        floor = current
    elif keep_within_tolerance:
        # The fewest n the scale-up test above would not leave (wanted / n - 1 <= tolerance),
        # by the same expression, so the two agree on the boundary in floating point too.
        floor = max(math.floor(wanted / (1 + tick.policy.tolerance)), 1)
        while wanted / floor - 1 > tick.policy.tolerance:
            floor += 1
        if floor <= recommended:
            return recommended, reason
    tick.clamps.append(clamp)
    return floor, reason


def _scale_up(tick: _Tick, desired: int, reason: Reason, recommended: int) -> ScaleResult:
    """Rate limits (tighter while the cluster was recently full), then the capacity blocks."""
    policy, current, r = tick.policy, tick.current, tick.replicas
    limit = max(math.ceil(current * policy.scale_up_max_rate), current + policy.scale_up_max_step)
    # The cluster could not place pods within the last stable window: capacity freed since
    # (a pod that left) is probably small, so a step from here is bounded by the additive
    # step rather than the multiplicative rate, and pending pods never pile up by the dozen.
    if tick.recently_full and desired > current + policy.scale_up_max_step:
        desired = current + policy.scale_up_max_step
        tick.clamps.append(Clamp.CAPACITY)
    if desired > limit:
        desired = limit
        tick.clamps.append(Clamp.SCALE_UP_RATE)
    if r.unschedulable > 0 and current >= policy.min_replicas:
        tick.clamps.append(Clamp.CAPACITY)
        return _finish(tick, current, Reason.BLOCKED_BY_CAPACITY, recommended)
    if r.placing > 0 and current >= policy.min_replicas:
        tick.clamps.append(Clamp.CAPACITY)
        return _finish(tick, current, Reason.AWAITING_PLACEMENT, recommended)
    if desired > policy.max_replicas and current >= policy.max_replicas:
        tick.clamps.append(Clamp.MAX_REPLICAS)
        return _finish(tick, current, Reason.AT_MAX, recommended)
    return _finish(tick, desired, reason, recommended)


def _scale_down(tick: _Tick, desired: int, ahead: int | None, recommended: int) -> ScaleResult:
    """Stabilization, rate limit, trend floor, hysteresis; never on a failed scrape, never
    while the GPUs are busy."""
    policy, current = tick.policy, tick.current
    horizon = tick.now - tick.down_window_s
    highest = max([r for t, r in tick.state.recommendations if t > horizon] + [recommended])
    if highest > desired:
        desired = min(highest, current)
        tick.clamps.append(Clamp.STABILIZATION)
        # While calm or forecast, a step that stabilization chose and the tolerance would not
        # notice waits for the window's highest recommendation to expire. Such steps start
        # no settling period (below), so taken as the window's recommendations expire one by
        # one they would walk the count down (17 -> 16 -> 15 ...) while the stable window
        # still reads the load spread over the first count: the under-read settling is for.
        if tick.calm and not _noticed(policy, current, desired):
            desired = current
    floor = math.floor(current / policy.scale_down_max_rate)
    if desired < floor:
        desired = floor
        tick.clamps.append(Clamp.SCALE_DOWN_RATE)
    # While calm or forecast (short window, no hysteresis), a scale-down waits until the
    # stable window has seen the count the last scale-down beyond the tolerance made
    # (_noticed). Until then its average reads the load spread over more replicas, whose
    # in-flight count per replica (short batches) under-reads what fewer replicas will
    # carry, and the rate limit alone would halve the count on every tick: 17 -> 8 -> 4 -> 3
    # replicas in 4 s at 3,000 req/s, one cold start of misses after (analysis.md).
    last = tick.state.last_scale_down_time
    settling = last is not None and tick.now - last < policy.stable_window_s
    if desired < current and tick.calm and settling:
        desired = current
        tick.clamps.append(Clamp.SETTLING)
    # Replicas given back during a rise could not come back within a cold start.
    if ahead is not None and desired < min(ahead, current):
        desired = min(ahead, current)
        tick.clamps.append(Clamp.TREND)
    small = current - desired < max(1.0, policy.scale_down_min_fraction * current)
    if desired < current and small and not tick.calm:
        desired = current
        tick.clamps.append(Clamp.HYSTERESIS)
    if desired < current and desired < policy.min_replicas and current <= policy.min_replicas:
        tick.clamps.append(Clamp.MIN_REPLICAS)
        return _finish(tick, current, Reason.AT_MIN, recommended)
    if desired < current and not tick.scraped:
        tick.clamps.append(Clamp.NO_DATA)
        return _finish(tick, current, Reason.NO_DATA, recommended)
    if desired < current and tick.covered_s < WARM_FRACTION * policy.stable_window_s:
        tick.clamps.append(Clamp.WARMING_UP)
        return _finish(tick, current, Reason.WARMING_UP, recommended)
    veto = policy.gpu_veto_utilization
    if desired < current and veto is not None and tick.gpu is not None and tick.gpu >= veto:
        tick.clamps.append(Clamp.GPU_VETO)
        return _finish(tick, current, Reason.GPU_VETO, recommended)
    if desired == current:
        others = {
            Clamp.TREND,
            Clamp.HYSTERESIS,
            Clamp.BURST_HEADROOM,
            Clamp.FORECAST,
            Clamp.SETTLING,
        }
        held = Clamp.STABILIZATION in tick.clamps and not others & set(tick.clamps)
        return _finish(tick, current, Reason.STABILIZING if held else Reason.HOLD, recommended)
    return _finish(tick, desired, Reason.SCALE_DOWN, recommended)


def decide(
    *,
    policy: policy_.ScalingPolicy,
    window: window_.SignalWindow,
    state: state_.ScalerState,
    now: float,
    replicas: Replicas,
    scraped: bool = True,
    headroom: float = 1.0,
    target_factor: float = 1.0,
    forecast: season_.Forecast | None = None,
) -> ScaleResult:
    """Decide the desired replica count at ``now``; pure, the engine acts on the result.

    ``scraped`` is False when this tick's scrape produced no sample (every pod failed or none
    was Ready); the window then holds only older data. ``headroom``: the burst-headroom
    factor (burst.py), 1 for none. ``target_factor``: the calm target's factor
    (burst.calm_target_factor) or the forecast's, 1 for none; the rules read the raised
    target, except the panic trigger (below). ``forecast``: the forecast to act on
    (season.py), None for none.
    """
    spec_target = policy.target
    if target_factor != 1.0:
        policy = dataclasses.replace(policy, target=policy.target * target_factor)
    tick = _read(
        spec_target=spec_target,
        policy=policy,
        window=window,
        state=state,
        now=now,
        replicas=replicas,
        scraped=scraped,
        headroom=headroom,
        target_factor=target_factor,
        forecast=forecast,
    )
    current = replicas.current
    # 1. Missing data: fall back after N failures, otherwise hold.
    if tick.failures >= policy.failures_before_fallback and policy.fallback_replicas is not None:
        # A dead metrics endpoint is no evidence of low load: fallback only ever raises.
        target = max(current, policy.fallback_replicas)
        return _finish(tick, target, Reason.FALLBACK, target)
    stable = tick.stable
    if stable is None:
        tick.clamps.append(Clamp.NO_DATA)
        return _finish(tick, current, Reason.NO_DATA, current)
    panic = stable if tick.panic is None else tick.panic
    tick.panic = panic
    # 2. Stable and panic recommendations.
    recommended, reason = _recommend(tick, stable, panic)
    # 3. Look-ahead: not while replicas are starting (they are the capacity the trend asked
    # for, and the backlog that builds while they start would extrapolate into an overshoot).
    look = _look_ahead(tick, window, stable, panic)
    ahead = look[0] if look is not None else None
    on_the_way = replicas.starting + replicas.placing
    if look is not None and look[1] and on_the_way == 0 and look[0] > max(recommended, current):
        recommended, reason = look[0], Reason.EARLY_SCALE_UP
    # 4. Burst headroom: room now for growth like the recent bursts within one cold start.
    recommended, reason = _burst_floor(tick, stable, recommended, reason)
    # 5. Forecast: the replicas the last period's demand over the next cold start needs.
    recommended, reason = _forecast_floor(tick, window, stable, recommended, reason)
    # 6. Limits on the way to the desired count.
    if recommended > current:
        return _scale_up(tick, recommended, reason, recommended)
    if recommended < current:
        return _scale_down(tick, recommended, ahead, recommended)
    return _finish(tick, current, Reason.HOLD, recommended)


_UNITS = {
    api.ScalingMetric.QUEUE_DEPTH: "requests queued or executing",
    api.ScalingMetric.QUEUE_TIME: "ms queue time",
    api.ScalingMetric.REQUEST_RATE: "requests per second",
}


def _message(*, reason: Reason, current: int, desired: int, inputs: Inputs) -> str:
    """One sentence for status and Events."""
    unit = _UNITS[inputs.metric]
    seen = "no data" if inputs.stable is None else f"{inputs.stable:.1f} {unit} (stable window)"
    per = f"target {inputs.target:g} per replica"
    if inputs.target_factor > 1.0:
        why = "follows the forecast" if inputs.forecast else "is calm"
        per = (
            f"target {inputs.target * inputs.target_factor:.4g} per replica "
            f"({inputs.target_factor:.2f}x the spec's {inputs.target:g} while the demand {why})"
        )
    fc = inputs.forecast
    move = f"from {current} to {desired}"
    texts = {
        Reason.SCALE_UP: f"Scaling up {move}: {seen}, {per}.",
        Reason.PANIC_SCALE_UP: (
            f"Scaling up {move} in panic mode: the panic window saw "
            f"{(inputs.panic or 0):.1f} {unit}, {per}."
        ),
        Reason.EARLY_SCALE_UP: (
            f"Scaling up {move} ahead of a rising trend ({(inputs.trend_per_s or 0):.2f} {unit} "
            f"per second) over the {inputs.cold_start_s:.0f} s cold start."
        ),
        Reason.BURST_HEADROOM: (
            f"Scaling up {move} for bursts: demand recently grew up to {inputs.headroom:.2f}x "
            f"within one {inputs.cold_start_s:.0f} s cold start; {seen}, {per}."
        ),
        Reason.FORECAST_SCALE_UP: (
            f"Scaling up {move} ahead of the demand the last period had within the next "
            f"{inputs.cold_start_s:.0f} s cold start: {(fc.demand if fc else 0):.4g} requests/s "
            f"(today at {(fc.scale if fc else 0):.2f}x it, error {(fc.error if fc else 0):.0%}); "
            f"{per}."
        ),
        Reason.SCALE_DOWN: f"Scaling down {move}: {seen}, {per}.",
        Reason.HOLD: f"Holding {current} replicas: {seen}, {per}.",
        Reason.NO_DATA: f"Holding {current} replicas: metrics are missing, so no scale-down.",
        Reason.FALLBACK: (
            f"Metrics failed repeatedly; holding at least the fallback count: {desired} replicas."
        ),
        Reason.BLOCKED_BY_CAPACITY: (
            f"Holding {current} replicas although {inputs.recommended} are wanted: "
            f"{inputs.unschedulable} pods are waiting for GPU capacity."
        ),
        Reason.AWAITING_PLACEMENT: (
            f"Holding {current} replicas although {inputs.recommended} are wanted: "
            f"{inputs.placing} pods are not placed by the scheduler yet."
        ),
        Reason.GPU_VETO: (
            f"Holding {current} replicas: GPU utilization {(inputs.gpu_utilization or 0):.0%} "
            f"vetoes scaling down to {inputs.recommended}."
        ),
        Reason.STABILIZING: (
            f"Holding {current} replicas: a higher recommendation within the scale-down "
            f"stabilization window keeps them ({seen})."
        ),
        Reason.WARMING_UP: (
            f"Holding {current} replicas: {inputs.covered_s:.0f} s of metrics so far, too "
            f"little to scale down to {inputs.recommended} ({seen})."
        ),
        Reason.AT_MAX: f"Holding {current} replicas at the maximum; {inputs.recommended} wanted.",
        Reason.AT_MIN: f"Holding {current} replicas at the minimum; {inputs.recommended} wanted.",
    }
    return texts[reason]
