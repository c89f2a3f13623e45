"""The scaling policy: every knob of the autoscaler, with defaults, in one frozen dataclass.

Owns: the names and defaults of the knobs and their validation. It does not decide anything;
``decide.py`` reads a policy. The InferenceService spec maps onto these fields one to one.
"""

from __future__ import annotations

import dataclasses
import enum


class Metric(enum.StrEnum):
    """Which per-replica signal drives the replica count."""

    # Requests queued or executing per replica: Triton's pending-request gauge plus the requests
    # executing (Little's law on the compute-time counters). Additive across pods, so the desired
    # count is total / target, like Knative's concurrency.
    QUEUE_DEPTH = "QueueDepth"
    # Average time a request waits in the queue, in milliseconds. Not additive: the desired count
    # is proportional (ready * value / target), like the HPA.
    QUEUE_TIME = "QueueTime"
    # Completed requests per second per replica. Additive.
    REQUEST_RATE = "RequestRate"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScalingPolicy:
    """The autoscaler's knobs. Times are seconds; ``target`` is per replica in the metric's unit."""

    min_replicas: int = 1
    max_replicas: int = 10
    metric: Metric = Metric.QUEUE_DEPTH
    # Per replica: requests queued or executing (QueueDepth), milliseconds (QueueTime) or
    # requests per second (RequestRate). `kubeinfer plan` suggests one from a profile.
    target: float = 8.0
    # Relative deviation from the target that is ignored, so noise does not move replicas.
    tolerance: float = 0.1
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    # Enter panic mode when the panic window wants this multiple of the capacity we have.
    panic_threshold: float = 2.0
    # Scale-up limit per decision: max(capacity * rate, capacity + step) replicas.
    scale_up_max_rate: float = 10.0
    scale_up_max_step: int = 4
    # Scale-down limit per decision: at most current / rate replicas remain (2.0 halves).
    scale_down_max_rate: float = 2.0
    # Scale down only to the highest recommendation seen in this many seconds.
    scale_down_stabilization_s: float = 120.0
    # Hysteresis: scale down only when the count would drop by at least this fraction of the
    # current count (always allowed by one replica). A load that falls gradually then moves in a
    # few larger steps instead of one replica per tick.
    scale_down_min_fraction: float = 0.2
    # GPU utilization (0..1) at or above which scale-down is vetoed. Never drives scale-up.
    gpu_veto_utilization: float | None = 0.8
    # Cold start (pod created -> Ready) assumed until one has been measured.
    cold_start_default_s: float = 60.0
    # Scale ahead of a rising trend by the cold-start horizon.
    early_scale_up: bool = True
    # Seconds of history the trend is fitted over, the fit quality it needs (R^2), and the
    # share of that window that must hold data (a fit through three fresh points is no trend).
    trend_window_s: float = 30.0
    trend_min_r2: float = 0.6
    trend_min_coverage: float = 0.5
    # Replicas to hold at least after this many consecutive failed scrapes; None: just hold.
    fallback_replicas: int | None = None
    failures_before_fallback: int = 5
    scrape_interval_s: float = 2.0

    def __post_init__(self) -> None:
        problems = validate(self)
        if problems:
            raise ValueError("invalid scaling policy: " + "; ".join(problems))


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
    if policy.scale_down_stabilization_s < 0:
        problems.append("scale_down_stabilization_s must be >= 0")
    if policy.gpu_veto_utilization is not None and not 0 < policy.gpu_veto_utilization <= 1:
        problems.append("gpu_veto_utilization must be in (0, 1]")
    if policy.cold_start_default_s < 0 or policy.trend_window_s <= 0:
        problems.append("cold_start_default_s must be >= 0 and trend_window_s > 0")
    if policy.fallback_replicas is not None and policy.fallback_replicas < 0:
        problems.append("fallback_replicas must be >= 0")
    if policy.failures_before_fallback < 1:
        problems.append("failures_before_fallback must be >= 1")
    if policy.scrape_interval_s <= 0:
        problems.append("scrape_interval_s must be > 0")
    return problems
