"""PROTOTYPES, NOT SHIPPED: candidate scaling mechanisms, each measured against the shipped one;
and the shipped step with one of its own mechanisms taken out (ablations).

Owns: alternative scalers built on the shipped pipeline (``engine.Kubeinfer``): each runs the
product's ``Engine.step`` with the shipped policy every 2 s and then applies one mechanism on
top (or changes one policy field per tick). Nothing here is in the product; the lead decides
from the measured effect what to build into operator/kubeinfer/core/scaling.

Every mechanism reads only what the engine can read: the Ready pods' scrapes (request and
failure counters, the pending gauge, queue time), pod states and the learned cold start. The
one planning input they use is the per-replica request rate at the target, which `kubeinfer
plan` derives from the same profile that sets the target (``ServiceModel.rate_at_target``).

- demand-sizing: size from the offered demand (answered + rejected per second) at the
  target's request rate, not only from queue depth, which saturates at the queue bound.
- lookahead: project the demand trend one cold start ahead every tick, also while replicas
  start (the shipped look-ahead stops then and needs R^2 >= 0.6).
- queue-time: also scale on queue time: ready x queue time / budget, the budget being the SLO
  minus a full batch's latency.
Built into the product from earlier rounds of this file (their prototypes are gone; the
ablations measure what each is worth in the shipped step, on the same seeds):

- burst headroom (core/scaling/burst.py, spec.scaling.burstHeadroom): provision the load
  times the 95th percentile of how much the demand grew within one cold start over the last
  15 minutes. Ablation "without burst-headroom".
- cold-start-aware scale-down (policy.scale_down_cold_starts): stabilization of at least two
  learned cold starts. Ablation "without cold-start-scale-down".
- calm target (core/scaling/burst.py calm_target_factor, policy's calm_* knobs, with
  burstHeadroom): a hotter target while the burst history has read calm and pods start
  quickly. Ablation "without calm-target" (the step of the release before it).
- forecast (core/scaling/season.py, spec.scaling.forecastPeriodSeconds): while today's
  demand has tracked the previous day's, provision for the previous day's highest demand
  over the next cold start and run hotter with a short scale-down window (it replaced the
  "seasonal" prototype, a floor from the previous day's trace). Ablation "without forecast".
- "previous release": burst headroom, the cold-start-aware scale-down and the forecast taken
  out (the step as published before those shipped; the calm target goes with burst
  headroom).
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any

import engine
import sim
from model import ServiceModel

from kubeinfer.core import api
from kubeinfer.core.scaling import policy as policy_


class Prototype(engine.Kubeinfer):
    """The shipped pipeline plus a floor on the desired count from one mechanism."""

    uses_demand = True

    def __init__(
        self,
        *,
        name: str,
        scaling_policy: policy_.ScalingPolicy,
        seed: int,
        model: ServiceModel,
    ) -> None:
        super().__init__(name=name, scaling_policy=scaling_policy, seed=seed)
        self.shipped = scaling_policy
        self.model = model
        self.per_replica = model.rate_at_target()
        # (time, offered demand req/s) per tick, from the scrapes' counters.
        self.demand: collections.deque[tuple[float, float]] = collections.deque()
        self._prev: dict[str, tuple[float, float]] = {}
        # Floors are held like recommendations: the highest in the scale-down window, so a
        # floor that moves with noise does not turn into a scale-down on the next tick.
        self._floors: collections.deque[tuple[float, int]] = collections.deque()

    # ---- what the scrapes say about demand
    def _observe_demand(self, now: float, scrapes: dict[str, object]) -> float | None:
        total, pods = 0.0, 0
        seen: dict[str, tuple[float, float]] = {}
        for pod, raw in scrapes.items():
            count = raw.request_success + raw.request_failure  # type: ignore[attr-defined]
            seen[pod] = (count, now)
            prev = self._prev.get(pod)
            if prev is not None and now > prev[1]:
                total += (count - prev[0]) / (now - prev[1])
                pods += 1
        self._prev = seen
        if pods == 0:
            return None
        rate = total * len(scrapes) / pods  # extrapolated to every Ready pod, as aggregate does
        self.demand.append((now, rate))
        while self.demand and self.demand[0][0] < now - 600:
            self.demand.popleft()
        return rate

    def cold_start(self) -> float:
        learned = self.engine.state.cold_start_s
        return learned if learned is not None else self.shipped.cold_start_default_s

    def replicas_for(self, demand: float) -> int:
        return math.ceil(demand / self.per_replica)

    # ---- the tick
    def tick(self, view: sim.View) -> int | None:
        if (view.second - self.phase) % self.interval:
            return None
        scrapes = self.scrape(view)
        demand = self._observe_demand(view.now, scrapes)  # type: ignore[arg-type]
        self.before_step(view)
        result = self.engine.step(
            now=view.now,
            scrapes=scrapes,
            census=self.census(view),
            cold_starts=view.cold_start_pairs(),
        )
        self.last = result
        desired = result.desired
        now = view.now
        new_floor = self.floor(view, demand)
        if new_floor is not None:
            self._floors.append((now, new_floor))
        window = self.engine.policy.scale_down_stabilization_s
        while self._floors and self._floors[0][0] <= now - window:
            self._floors.popleft()
        floor = max(f for _, f in self._floors) if self._floors else None
        reason = result.reason.value
        if floor is not None and floor > desired:
            # Raise to the floor; with pods Pending (no free GPU) only keep what is asked for.
            raised = floor if view.unschedulable == 0 else min(floor, view.spec)
            if raised > desired:
                desired = raised
                reason = f"Prototype:{type(self).__name__}"
        desired = min(max(desired, self.shipped.min_replicas), self.shipped.max_replicas)
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        return desired

    def before_step(self, view: sim.View) -> None:
        """Adjust the policy for this tick (default: the shipped one)."""

    def floor(self, view: sim.View, demand: float | None) -> int | None:
        """At least this many replicas (None: no opinion)."""
        return None


def lookahead_demand(proto: Prototype, demand: float) -> float | None:
    """Demand projected one cold start ahead by a least-squares trend; None unless rising."""
    if len(proto.demand) < 5:
        return None
    horizon = proto.cold_start()
    span = max(30.0, horizon / 2)
    newest = proto.demand[-1][0]
    pts = [(t, v) for t, v in proto.demand if t > newest - span]
    if len(pts) < 5:
        return None
    n = len(pts)
    mean_t = sum(t for t, _ in pts) / n
    mean_v = sum(v for _, v in pts) / n
    var_t = sum((t - mean_t) ** 2 for t, _ in pts)
    if var_t <= 0:
        return None
    slope = sum((t - mean_t) * (v - mean_v) for t, v in pts) / var_t
    if slope <= 0:
        return None
    return demand + slope * horizon


class DemandSizing(Prototype):
    def floor(self, view: sim.View, demand: float | None) -> int | None:
        if demand is None:
            return None
        return self.replicas_for(demand)


class WithoutMechanism(Prototype):
    """The shipped step with some of its knobs changed for the whole run (an ablation)."""

    uses_demand = False
    knobs: dict[str, Any] = {}

    def before_step(self, view: sim.View) -> None:
        if self.engine.policy is self.shipped:
            self.engine.policy = dataclasses.replace(self.shipped, **self.knobs)


class WithoutBurstHeadroom(WithoutMechanism):
    knobs = {"burst_headroom": False}


class WithoutColdStartScaleDown(WithoutMechanism):
    knobs = {"scale_down_cold_starts": 0.0}


class WithoutCalmTarget(WithoutMechanism):
    knobs = {"calm_target_factor": 1.0}


class WithoutForecast(WithoutMechanism):
    knobs = {"forecast_period_s": 0.0}


class PreviousRelease(WithoutMechanism):
    knobs = {"burst_headroom": False, "scale_down_cold_starts": 0.0, "forecast_period_s": 0.0}


class Lookahead(Prototype):
    def floor(self, view: sim.View, demand: float | None) -> int | None:
        if demand is None:
            return None
        ahead = lookahead_demand(self, demand)
        return None if ahead is None else self.replicas_for(ahead)


class QueueTime(Prototype):
    uses_demand = False

    def floor(self, view: sim.View, demand: float | None) -> int | None:
        sample_ms = self._queue_time_ms()
        if sample_ms is None:
            return None
        budget_ms = (self.model.slo_s - 1.5 * self.model.batch_latency(self.model.max_batch)) * 1e3
        ready = max(view.ready, 1)
        if sample_ms <= budget_ms:
            return None
        return math.ceil(ready * sample_ms / budget_ms)

    def _queue_time_ms(self) -> float | None:
        window = self.engine.window
        value = window.average(
            series=api.ScalingMetric.QUEUE_TIME.value,
            now=self.engine.window.latest_time() or 0.0,
            span_s=self.shipped.panic_window_s,
        )
        return value


PROTOTYPES: dict[str, type[Prototype]] = {
    "demand-sizing": DemandSizing,
    "lookahead": Lookahead,
    "queue-time": QueueTime,
    "without burst-headroom": WithoutBurstHeadroom,
    "without cold-start-scale-down": WithoutColdStartScaleDown,
    "without calm-target": WithoutCalmTarget,
    "without forecast": WithoutForecast,
    "previous release": PreviousRelease,
}
