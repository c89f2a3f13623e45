"""The scaling policy: every knob of the autoscaler in one frozen dataclass.

Owns: the engine's own knobs (windows, rates, trend fitting) with their defaults, and their
validation. The knobs an InferenceService sets (bounds, metric, target, windows, veto,
fallback) have no default here: ``from_spec`` takes them from ``api.ScalingSpec``, whose
defaults are the ones the CRD publishes, so the operator, the simulator and the tests all run
what a default InferenceService gets. It decides nothing; ``decide.py`` reads a policy.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kubeinfer.core import api
from kubeinfer.core.scaling import burst


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScalingPolicy:
    """The autoscaler's knobs. Times are seconds; ``target`` is per replica in the metric's unit."""

    # From spec.scaling (api.ScalingSpec); see ``from_spec``.
    min_replicas: int
    max_replicas: int
    # QueueDepth: requests queued or executing per replica, additive across pods (the desired
    # count is total / target, like Knative's concurrency). QueueTime: mean milliseconds a
    # request waits, not additive (ready * value / target, like the HPA). RequestRate:
    # completed requests per second per replica, additive.
    metric: api.ScalingMetric
    target: float
    stable_window_s: float
    # Scale down only to the highest recommendation seen in this many seconds.
    scale_down_stabilization_s: float
    # GPU utilization (0..1) at or above which scale-down is vetoed. Never drives scale-up.
    gpu_veto_utilization: float | None
    # Replicas to hold at least after this many consecutive failed scrapes; None: just hold.
    fallback_replicas: int | None
    # With min_replicas 0: seconds without demand before the last replica goes (zero.py).
    scale_to_zero_after_s: float
    # Provision the current load times how much the demand recently grew within one cold
    # start (burst.py); False: the recommendation alone.
    burst_headroom: bool

    # The engine's own knobs.
    # Relative deviation from the target that is ignored, so noise does not move replicas.
    tolerance: float = 0.1
    panic_window_s: float = 6.0
    # Enter panic mode when the panic window wants this multiple of the capacity we have.
    panic_threshold: float = 2.0
    # Scale-up limit per decision: max(capacity * rate, capacity + step) replicas.
    scale_up_max_rate: float = 10.0
    scale_up_max_step: int = 4
    # Scale-down limit per decision: at most current / rate replicas remain (2.0 halves).
    scale_down_max_rate: float = 2.0
    # Hysteresis: scale down only when the count would drop by at least this fraction of the
    # current count (always allowed by one replica). A load that falls gradually then moves in a
    # few larger steps instead of one replica per tick.
    scale_down_min_fraction: float = 0.2
    # Cold start (pod created -> Ready) assumed until one has been measured.
    cold_start_default_s: float = 60.0
    # Scale-down stabilization lasts at least this many (learned) cold starts: a replica given
    # back for a dip shorter than that could not be Ready again when the load returns.
    scale_down_cold_starts: float = 2.0
    # Scale ahead of a rising trend by the cold-start horizon.
    early_scale_up: bool = True
    # Seconds of history the trend is fitted over, the fit quality it needs (R^2), and the
    # share of that window that must hold data (a fit through three fresh points is no trend).
    trend_window_s: float = 30.0
    trend_min_r2: float = 0.6
    trend_min_coverage: float = 0.5
    # Calm target (with burst_headroom; burst.calm_target_factor): while the demand has been
    # calm, the target is raised by ``calm_target_factor``, spending the room the planned
    # target keeps for bursts. Calm: at least ``calm_span_s`` of burst history whose growth
    # within one cold start (its 95th percentile) is at most ``calm_headroom``. 1.2 = about
    # the room the raised target still leaves at the planned utilization (1 / (0.7 x 1.2)), so
    # growth like the recent one still fits. Only for a short cold start: in full up to
    # ``calm_full_cold_start_s``, fading to none at ``calm_max_cold_start_s``, because a rise
    # that ends a calm spell must fit in the thinner room until new replicas are Ready
    # (bench/autoscaling/analysis.md: the sweep these values come from). Not for QueueTime: a
    # latency target is the SLO's, not a utilization.
    calm_target_factor: float = 1.2
    calm_headroom: float = 1.2
    calm_span_s: float = 600.0
    calm_full_cold_start_s: float = 60.0
    calm_max_cold_start_s: float = 90.0
    # While the calm target is in force, replicas are given back after this scale-down window
    # (at most the policy's own), without the cold-start floor above and without hysteresis:
    # those guard against a load that comes back within a cold start, and a calm history with
    # a short cold start says it will not, or not faster than the raised target's room covers.
    # 30 s: bench/autoscaling/analysis.md (2-8 % fewer replica-seconds on the smooth families
    # at 10-60 s cold starts, no more misses; the sweep these values come from).
    calm_scale_down_s: float = 30.0
    # Forecast (season.py): the demand's period in seconds (0: off). While the last period's
    # demand has forecast today's within ``forecast_max_error`` (season.QUANTILE of the
    # per-bucket errors), the replicas its highest demand over the next
    # ``forecast_horizon_cold_starts`` cold starts needs are a floor, the target is raised by
    # ``forecast_target_factor`` (the room for bursts the forecast now covers), and the
    # burst headroom is off; the calm target's scale-down rules apply (decide.py: no
    # hysteresis, a stable window after a scale-down beyond the tolerance) with a window of
    # its own (``forecast_scale_down_s``, shorter by default). Not for QueueTime.
    # 0.15: bench/autoscaling/analysis.md ("the forecast shipped"); 1.4 (1.3 until the floor
    # read the latency at the target, step._latency_at_target, which made it dearer at 1.3 on
    # the smooth families: analysis.md "a day a few minutes off"); 1.1 cold starts: a pod may
    # start some 10 % slower than the learned cold start.
    forecast_period_s: float = 0.0
    forecast_max_error: float = 0.15
    forecast_target_factor: float = 1.4
    forecast_horizon_cold_starts: float = 1.1
    # While the forecast is in force, replicas are given back after this scale-down window
    # rather than ``calm_scale_down_s``: the floor already keeps what the load will need
    # within the next cold start, so the window only has to ride out the noise the last
    # period's range does not cover. 15 s: bench/autoscaling/analysis.md (0.2-3.5 % fewer
    # replica-seconds on every family the forecast acts on; noisy's median misses 29-7.7 k
    # where 30 s missed 0-7.8 k, and 10-32 k at 0 s).
    forecast_scale_down_s: float = 15.0
    failures_before_fallback: int = 5
    scrape_interval_s: float = 2.0

    def __post_init__(self) -> None:
        problems = validate(self)
        if problems:
            raise ValueError("invalid scaling policy: " + "; ".join(problems))


def from_spec(spec: api.ScalingSpec | None = None, **overrides: Any) -> ScalingPolicy:
    """The policy an InferenceService's ``spec.scaling`` asks for (a default one when None);
    ``overrides`` replace any knob (benchmarks and tests)."""
    spec = spec if spec is not None else api.ScalingSpec()
    knobs: dict[str, Any] = {
        "min_replicas": spec.min_replicas,
        "max_replicas": spec.max_replicas,
        "metric": spec.metric,
        "target": spec.target,
        "stable_window_s": float(spec.stable_window_seconds),
        "scale_down_stabilization_s": float(spec.scale_down_delay_seconds),
        "gpu_veto_utilization": spec.gpu_utilization_veto,
        "fallback_replicas": spec.fallback_replicas,
        "scale_to_zero_after_s": float(spec.scale_to_zero_after_seconds),
        "burst_headroom": spec.burst_headroom,
        "forecast_period_s": float(spec.forecast_period_seconds),
    }
    return ScalingPolicy(**{**knobs, **overrides})


def validate(policy: ScalingPolicy) -> list[str]:
    """Return every problem with the policy as a sentence fragment; empty when valid."""
    problems: list[str] = []
    if policy.min_replicas < 0:
        problems.append("min_replicas must be >= 0")
    if policy.max_replicas < max(policy.min_replicas, 1):
        problems.append("max_replicas must be >= min_replicas and >= 1")
    if policy.target <= 0:
        problems.append("target must be > 0")
    if not 0 <= policy.tolerance < 1:
        problems.append("tolerance must be in [0, 1)")
    if policy.panic_window_s <= 0 or policy.stable_window_s < policy.panic_window_s:
        problems.append("need 0 < panic_window_s <= stable_window_s")
    if policy.panic_threshold <= 1:
        problems.append("panic_threshold must be > 1")
    if policy.scale_up_max_rate < 1 or policy.scale_up_max_step < 1:
        problems.append("scale_up_max_rate must be >= 1 and scale_up_max_step >= 1")
    if policy.scale_down_max_rate < 1:
        problems.append("scale_down_max_rate must be >= 1")
    if not 0 <= policy.scale_down_min_fraction < 1:
        problems.append("scale_down_min_fraction must be in [0, 1)")
    if not 0 <= policy.trend_min_coverage <= 1:
        problems.append("trend_min_coverage must be in [0, 1]")
    if policy.scale_down_stabilization_s < 0 or policy.scale_down_cold_starts < 0:
        problems.append("scale_down_stabilization_s and scale_down_cold_starts must be >= 0")
    if policy.gpu_veto_utilization is not None and not 0 < policy.gpu_veto_utilization <= 1:
        problems.append("gpu_veto_utilization must be in (0, 1]")
    if policy.cold_start_default_s < 0 or policy.trend_window_s <= 0:
        problems.append("cold_start_default_s must be >= 0 and trend_window_s > 0")
    if policy.fallback_replicas is not None and policy.fallback_replicas < 0:
        problems.append("fallback_replicas must be >= 0")
    if policy.calm_target_factor < 1 or policy.calm_headroom < 1:
        problems.append("calm_target_factor and calm_headroom must be >= 1")
    if not 0 <= policy.calm_span_s < burst.HISTORY_S:
        problems.append(f"calm_span_s must be in [0, {burst.HISTORY_S:g}) (the burst history)")
    if not 0 <= policy.calm_full_cold_start_s < policy.calm_max_cold_start_s:
        problems.append("need 0 <= calm_full_cold_start_s < calm_max_cold_start_s")
    if policy.calm_scale_down_s < 0 or policy.forecast_scale_down_s < 0:
        problems.append("calm_scale_down_s and forecast_scale_down_s must be >= 0")
    if policy.forecast_period_s < 0 or policy.forecast_max_error < 0:
        problems.append("forecast_period_s and forecast_max_error must be >= 0")
    if policy.forecast_target_factor < 1 or policy.forecast_horizon_cold_starts < 1:
        problems.append("forecast_target_factor and forecast_horizon_cold_starts must be >= 1")
    if policy.failures_before_fallback < 1:
        problems.append("failures_before_fallback must be >= 1")
    if policy.scale_to_zero_after_s <= 0:
        problems.append("scale_to_zero_after_s must be > 0")
    if policy.scrape_interval_s <= 0:
        problems.append("scrape_interval_s must be > 0")
    return problems
