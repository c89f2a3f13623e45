"""decide(): the desired replica count from a policy, a signal window, state and ``now``.

Owns the scaling rules and nothing else: no clock, no API, no scraping. The engine calls it
every tick and acts on (or, in Recommend mode, only reports) the returned ``ScaleResult``,
then persists ``result.state``. The rules, in order:

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
4. Tolerance, scale-up rate limit (only the additive step while the cluster was full within
   the stable window), capacity block (pods waiting for GPUs, or pods the
   scheduler has not answered for yet: adding more before it has would pile pending pods
   onto a full cluster faster than the scheduler can say so), scale-down
   stabilization (the highest recommendation in the window), scale-down rate limit, the
   trend floor, scale-down hysteresis, the GPU veto on scale-down, then min/max.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

from kubeinfer.core.scaling import policy as policy_
from kubeinfer.core.scaling import state as state_
from kubeinfer.core.scaling import window as window_


class Reason(enum.StrEnum):
    """Why the desired count is what it is: one CamelCase word each."""

    SCALE_UP = "ScaleUp"
    PANIC_SCALE_UP = "PanicScaleUp"
    EARLY_SCALE_UP = "EarlyScaleUp"
    SCALE_DOWN = "ScaleDown"
    HOLD = "Hold"
    NO_DATA = "NoData"
    FALLBACK = "Fallback"
    BLOCKED_BY_CAPACITY = "BlockedByCapacity"
    AWAITING_PLACEMENT = "AwaitingPlacement"
    GPU_VETO = "GPUVeto"
    STABILIZING = "Stabilizing"
    AT_MAX = "AtMax"
    AT_MIN = "AtMin"


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

    metric: policy_.Metric
    target: float
    stable: float | None
    panic: float | None
    gpu_utilization: float | None
    trend_per_s: float | None
    cold_start_s: float
    current: int
    ready: int
    starting: int
    unschedulable: int
    placing: int
    recommended: int
    panicking: bool
    scraped: bool

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

    def record(self, *, now: float) -> state_.DecisionRecord:
        return state_.DecisionRecord(
            time=now,
            current=self.inputs.current,
            desired=self.desired,
            reason=self.reason.value,
            clamps=tuple(c.value for c in self.clamps),
            inputs=self.inputs.to_dict(),
            message=self.message,
        )


_UP = (Reason.SCALE_UP, Reason.PANIC_SCALE_UP, Reason.EARLY_SCALE_UP, Reason.FALLBACK)


def _wanted(*, policy: policy_.ScalingPolicy, value: float, ready: int) -> float:
    """Replicas (fractional) the metric value asks for."""
    if policy.metric is policy_.Metric.QUEUE_TIME:
        # Queue time does not add up across pods: scale the ready count proportionally.
        return max(ready, 1) * value / policy.target
    return value / policy.target


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Slope:
    """A trend in the policy metric's units per second, and whether it may be acted on."""

    per_s: float
    confident: bool


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
    if policy.metric is policy_.Metric.QUEUE_DEPTH:
        rate = window.average(
            series=policy_.Metric.REQUEST_RATE.value, now=now, span_s=policy.stable_window_s
        )
        if rate is not None and rate > 0:
            series, scale = policy_.Metric.REQUEST_RATE.value, stable / rate
    trend = window.trend(series=series, now=now, span_s=span)
    if trend is None or trend.points < need:
        return None
    per_s = trend.slope_per_s * scale
    return _Slope(per_s=per_s, confident=per_s > 0 and trend.r2 >= policy.trend_min_r2)


def decide(
    *,
    policy: policy_.ScalingPolicy,
    window: window_.SignalWindow,
    state: state_.ScalerState,
    now: float,
    replicas: Replicas,
    scraped: bool = True,
) -> ScaleResult:
    """Decide the desired replica count at ``now``; pure, the engine acts on the result.

    ``scraped`` is False when this tick's scrape produced no sample (every pod failed or none
    was Ready); the window then holds only older data.
    """
    current = replicas.current
    failures = 0 if scraped else state.consecutive_failures + 1
    cold_start = (
        state.cold_start_s if state.cold_start_s is not None else (policy.cold_start_default_s)
    )
    series = policy.metric.value
    stable = window.average(series=series, now=now, span_s=policy.stable_window_s)
    panic = window.average(series=series, now=now, span_s=policy.panic_window_s)
    gpu = window.average(series=window_.GPU, now=now, span_s=policy.panic_window_s)
    on_the_way = replicas.starting + replicas.placing
    capacity = max(replicas.ready + on_the_way, 1)
    clamps: list[Clamp] = []
    trend_per_s: float | None = None
    panic_until = state.panic_until
    if panic_until is not None and now >= panic_until:
        panic_until = None
    full_at = now if replicas.unschedulable > 0 else state.last_unschedulable_time
    # The cluster could not place pods within the last stable window: capacity freed since
    # (a pod that left) is probably small, so a step from here is bounded by the additive step
    # rather than the multiplicative rate, and pending pods never pile up by the dozen.
    recently_full = full_at is not None and now - full_at < policy.stable_window_s

    def finish(desired: int, reason: Reason, recommended: int) -> ScaleResult:
        bounded = min(max(desired, policy.min_replicas), policy.max_replicas)
        if bounded != desired:
            clamps.append(Clamp.MIN_REPLICAS if bounded > desired else Clamp.MAX_REPLICAS)
            # Keep the reason when the bound only trimmed a move; name the bound when it
            # stopped the move or turned it around.
            if bounded == current:
                reason = Reason.AT_MAX if desired > bounded else Reason.AT_MIN
            elif bounded > current and reason not in _UP:
                reason = Reason.SCALE_UP
            elif bounded < current:
                reason = Reason.SCALE_DOWN
        horizon = now - policy.scale_down_stabilization_s
        history = tuple((t, r) for t, r in state.recommendations if t > horizon)
        if reason not in (Reason.NO_DATA, Reason.FALLBACK):
            history = (*history, (now, recommended))
        next_state = dataclasses.replace(
            state,
            last_scale_time=now if bounded != current else state.last_scale_time,
            recommendations=history,
            consecutive_failures=failures,
            cold_start_s=state.cold_start_s,
            panic_until=panic_until,
            last_unschedulable_time=full_at,
        )
        inputs = Inputs(
            metric=policy.metric,
            target=policy.target,
            stable=stable,
            panic=panic,
            gpu_utilization=gpu,
            trend_per_s=trend_per_s,
            cold_start_s=cold_start,
            current=current,
            ready=replicas.ready,
            starting=replicas.starting,
            unschedulable=replicas.unschedulable,
            placing=replicas.placing,
            recommended=recommended,
            panicking=panic_until is not None,
            scraped=scraped,
        )
        return ScaleResult(
            desired=bounded,
            reason=reason,
            clamps=tuple(clamps),
            inputs=inputs,
            message=_message(reason=reason, current=current, desired=bounded, inputs=inputs),
            state=next_state,
        )

    # 1. Missing data: fall back after N failures, otherwise hold.
    if failures >= policy.failures_before_fallback and policy.fallback_replicas is not None:
        # A dead metrics endpoint is no evidence of low load: fallback only ever raises.
        target = max(current, policy.fallback_replicas)
        return finish(target, Reason.FALLBACK, target)
    if stable is None:
        clamps.append(Clamp.NO_DATA)
        return finish(current, Reason.NO_DATA, current)
    if panic is None:
        panic = stable

    # 2. Stable and panic recommendations.
    wanted_stable = _wanted(policy=policy, value=stable, ready=replicas.ready)
    wanted_panic = _wanted(policy=policy, value=panic, ready=replicas.ready)
    if wanted_panic >= policy.panic_threshold * capacity:
        panic_until = now + policy.stable_window_s
    panicking = panic_until is not None
    reason = Reason.SCALE_UP
    if panicking:
        recommended = max(math.ceil(wanted_panic), current)
        reason = Reason.PANIC_SCALE_UP
    elif current > 0 and abs(wanted_stable / current - 1) <= policy.tolerance:
        recommended = current
        clamps.append(Clamp.TOLERANCE)
    else:
        recommended = math.ceil(wanted_stable)

    # 3. Look-ahead: project a confident rising trend one cold start ahead.
    ahead: int | None = None
    if policy.early_scale_up:
        slope = _rising_trend(policy=policy, window=window, now=now, stable=stable)
        if slope is not None:
            trend_per_s = slope.per_s
            if slope.confident:
                projected = _wanted(
                    policy=policy, value=panic + slope.per_s * cold_start, ready=replicas.ready
                )
                ahead = math.ceil(projected)
                # Early scale-up, not while replicas are starting: they are the capacity the
                # trend asked for, and the backlog that builds while they start would otherwise
                # extrapolate into an overshoot. The tolerance applies to the look-ahead too: a
                # trend projecting a few percent more than we have is noise on a flat load.
                rise = current == 0 or projected / current - 1 > policy.tolerance
                if on_the_way == 0 and rise and ahead > max(recommended, current):
                    recommended = ahead
                    reason = Reason.EARLY_SCALE_UP

    desired = recommended
    # 4a. Scale-up: rate limit, then the capacity block.
    if desired > current:
        limit = max(
            math.ceil(current * policy.scale_up_max_rate), current + policy.scale_up_max_step
        )
        if recently_full and desired > current + policy.scale_up_max_step:
            desired = current + policy.scale_up_max_step
            clamps.append(Clamp.CAPACITY)
        if desired > limit:
            desired = limit
            clamps.append(Clamp.SCALE_UP_RATE)
        if replicas.unschedulable > 0 and current >= policy.min_replicas:
            clamps.append(Clamp.CAPACITY)
            return finish(current, Reason.BLOCKED_BY_CAPACITY, recommended)
        if replicas.placing > 0 and current >= policy.min_replicas:
            clamps.append(Clamp.CAPACITY)
            return finish(current, Reason.AWAITING_PLACEMENT, recommended)
        if desired > policy.max_replicas and current >= policy.max_replicas:
            clamps.append(Clamp.MAX_REPLICAS)
            return finish(current, Reason.AT_MAX, recommended)
        return finish(desired, reason, recommended)

    # 4b. Scale-down: stabilization, rate limit, GPU veto, never on a failed scrape.
    if desired < current:
        horizon = now - policy.scale_down_stabilization_s
        highest = max([r for t, r in state.recommendations if t > horizon] + [recommended])
        if highest > desired:
            desired = min(highest, current)
            clamps.append(Clamp.STABILIZATION)
        floor = math.floor(current / policy.scale_down_max_rate)
        if desired < floor:
            desired = floor
            clamps.append(Clamp.SCALE_DOWN_RATE)
        if ahead is not None and desired < min(ahead, current):
            desired = min(ahead, current)
            clamps.append(Clamp.TREND)
        if desired < current and current - desired < max(
            1.0, policy.scale_down_min_fraction * current
        ):
            desired = current
            clamps.append(Clamp.HYSTERESIS)
        if desired < current and desired < policy.min_replicas and current <= policy.min_replicas:
            clamps.append(Clamp.MIN_REPLICAS)
            return finish(current, Reason.AT_MIN, recommended)
        if desired < current and not scraped:
            clamps.append(Clamp.NO_DATA)
            return finish(current, Reason.NO_DATA, recommended)
        veto = policy.gpu_veto_utilization
        if desired < current and veto is not None and gpu is not None and gpu >= veto:
            clamps.append(Clamp.GPU_VETO)
            return finish(current, Reason.GPU_VETO, recommended)
        if desired == current:
            held = Clamp.STABILIZATION in clamps and not {Clamp.TREND, Clamp.HYSTERESIS} & set(
                clamps
            )
            return finish(current, Reason.STABILIZING if held else Reason.HOLD, recommended)
        return finish(desired, Reason.SCALE_DOWN, recommended)
    return finish(current, Reason.HOLD, recommended)


_UNITS = {
    policy_.Metric.QUEUE_DEPTH: "requests queued or executing",
    policy_.Metric.QUEUE_TIME: "ms queue time",
    policy_.Metric.REQUEST_RATE: "requests per second",
}


def _message(*, reason: Reason, current: int, desired: int, inputs: Inputs) -> str:
    """One sentence for status and Events."""
    unit = _UNITS[inputs.metric]
    seen = "no data" if inputs.stable is None else f"{inputs.stable:.1f} {unit} (stable window)"
    per = f"target {inputs.target:g} per replica"
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
        Reason.AT_MAX: f"Holding {current} replicas at the maximum; {inputs.recommended} wanted.",
        Reason.AT_MIN: f"Holding {current} replicas at the minimum; {inputs.recommended} wanted.",
    }
    return texts[reason]
