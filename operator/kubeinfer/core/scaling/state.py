"""What the autoscaler remembers between decisions, and which decisions status keeps.

Owns: ``ScalerState`` (persisted by the engine so an operator restart causes no scale-down;
plain JSON via ``to_dict``/``from_dict`` with camelCase keys, matching the status conventions)
and the rule for the bounded history of decisions in status (``api.DecisionRecord``, the type
the CRD publishes, is the one record type).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kubeinfer.core import api


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScalerState:
    """The decider's memory. Immutable: ``decide`` returns the next state in its result."""

    last_scale_time: float | None = None
    # When the count last went down by more than the tolerance (decide's settling rule while
    # calm or forecast; a smaller step changes what each replica carries too little to wait).
    last_scale_down_time: float | None = None
    # (time, recommended replicas) over the scale-down stabilization window, oldest first.
    recommendations: tuple[tuple[float, int], ...] = ()
    consecutive_failures: int = 0
    # Learned cold start in seconds (cold_start.learn); None until a pod has been seen start.
    cold_start_s: float | None = None
    # Panic mode lasts until this time; None when not panicking.
    panic_until: float | None = None
    # When pods last waited for capacity (the scheduler could not place them): a cluster that
    # was full a moment ago is probably nearly full now, so scale-up then adds small steps.
    last_unschedulable_time: float | None = None
    # Scale to zero (zero.py): when demand was last seen (pods busy, requests reaching the
    # router, or a wake), the router's request counter at the last scrape, and the replica
    # count the last tick saw (0 then more: the router woke the service).
    last_demand_time: float | None = None
    router_requests: float | None = None
    previous_replicas: int | None = None
    # QueueDepth: seconds a request spent in a pod (depth / rate) on ticks when the pods ran
    # near the forecast's target, a moving average (step.py); None until seen.
    latency_at_target_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "lastScaleTime": self.last_scale_time,
            "lastScaleDownTime": self.last_scale_down_time,
            "recommendations": [[t, r] for t, r in self.recommendations],
            "consecutiveFailures": self.consecutive_failures,
            "coldStartSeconds": self.cold_start_s,
            "panicUntil": self.panic_until,
            "lastUnschedulableTime": self.last_unschedulable_time,
            "lastDemandTime": self.last_demand_time,
            "routerRequests": self.router_requests,
            "previousReplicas": self.previous_replicas,
            "latencyAtTargetSeconds": self.latency_at_target_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScalerState:
        return cls(
            last_scale_time=_opt_float(data.get("lastScaleTime")),
            last_scale_down_time=_opt_float(data.get("lastScaleDownTime")),
            recommendations=tuple((float(t), int(r)) for t, r in data.get("recommendations", [])),
            consecutive_failures=int(data.get("consecutiveFailures", 0)),
            cold_start_s=_opt_float(data.get("coldStartSeconds")),
            panic_until=_opt_float(data.get("panicUntil")),
            last_unschedulable_time=_opt_float(data.get("lastUnschedulableTime")),
            last_demand_time=_opt_float(data.get("lastDemandTime")),
            router_requests=_opt_float(data.get("routerRequests")),
            previous_replicas=(
                None if data.get("previousReplicas") is None else int(data["previousReplicas"])
            ),
            latency_at_target_s=_opt_float(data.get("latencyAtTargetSeconds")),
        )


def append_history(
    history: tuple[api.DecisionRecord, ...],
    record: api.DecisionRecord,
    *,
    limit: int = api.DECISION_HISTORY,
) -> tuple[api.DecisionRecord, ...]:
    """The history with ``record`` appended, keeping the newest ``limit`` records."""
    return (*history, record)[-limit:] if limit > 0 else ()


def is_news(history: tuple[api.DecisionRecord, ...], record: api.DecisionRecord) -> bool:
    """Whether a record belongs in the history: a scale, or a reason unlike the last one.

    Steady holds every tick would push the decisions that explain the replica count out of a
    ten-entry history within twenty seconds.
    """
    if record.desired != record.current or not history:
        return True
    return history[-1].reason != record.reason
