"""kubeinfer in the benchmark: the operator's own scaling step, fed what a scrape would read.

Owns: the ONE adapter between the benchmark and the product (``Engine``), and the scaler that
feeds it from the simulated pods (``Kubeinfer``).

``Engine.step`` does what ``kubeinfer.engines.autoscaler.Autoscaler`` does between its I/O: per
pod, ``metrics.pod_signals`` from two successive scrapes (a pod's first scrape is a baseline,
as in the cluster), then the operator's pure ``core.scaling.step.step(policy, observation,
memory, now)``: the same function, the same code path, nothing copied.

The policy is the shipped one: ``policy.from_spec(api.ScalingSpec(...))`` for a default
InferenceService in which only the per-model target (`kubeinfer plan`'s QueueDepth target for
profile.json), the replica bounds (the same for every scaler in the benchmark) and the
forecast period (the workload's "day": its trace with the warm-up, as a user states that
their demand repeats daily) are set. Nothing else is copied or tuned.

``one_period_earlier`` and ``Kubeinfer.remember`` are how a run starts with a day of history,
as a service that ran yesterday does: runner.py runs the shipped step over the previous day
(the same family on another seed), and what it learned by time of day
(``season.SeasonalHistory``) is moved back one period.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
from sim import COMPLETED, COMPUTE_S, FAILED, QUEUE_S, View

from kubeinfer.core import api, metrics
from kubeinfer.core.scaling import decide, policy, season, state, step, window


def shipped_policy(
    *, target: float, min_replicas: int, max_replicas: int, forecast_period_s: int | None = None
) -> policy.ScalingPolicy:
    """The policy the operator builds for a default InferenceService with this target,
    these bounds and this forecast period (None: the API's default)."""
    period = {} if forecast_period_s is None else {"forecast_period_seconds": forecast_period_s}
    spec = api.ScalingSpec(
        target=target, min_replicas=min_replicas, max_replicas=max_replicas, **period
    )
    return policy.from_spec(spec)


def one_period_earlier(history: season.SeasonalHistory) -> season.SeasonalHistory:
    """``history`` as seen one period later: the day it learned becomes yesterday (bucket
    numbers are absolute, so a day later is ``BUCKETS`` more)."""
    b = season.BUCKETS
    out = history.copy()
    out.means = {k - b: v for k, v in history.means.items()}
    if history.open_bucket is not None and history.open_count:  # the day's last bucket
        out.means[history.open_bucket - b] = history.open_sum / history.open_count
    out.pairs.clear()
    out.open_bucket, out.open_sum, out.open_count = None, 0.0, 0
    return out


@dataclasses.dataclass(frozen=True)
class Census:
    """The engine's pod census, as counts (see kubeinfer.core.census.classify_pods)."""

    current: int  # the Deployment's spec.replicas
    starting: int
    unschedulable: int
    placing: int = 0


class Engine:
    """One InferenceService's autoscaler memory and its per-tick pipeline."""

    def __init__(self, scaling_policy: policy.ScalingPolicy) -> None:
        self.policy = scaling_policy
        self.memory = step.Memory.fresh(scaling_policy)
        self.baselines = metrics.Baselines()

    @property
    def window(self) -> window.SignalWindow:
        return self.memory.window

    @property
    def state(self) -> state.ScalerState:
        return self.memory.state

    def step(
        self,
        *,
        now: float,
        scrapes: Mapping[str, metrics.RawScrape | None],
        census: Census,
        cold_starts: list[tuple[float, float]],
    ) -> decide.ScaleResult:
        """What the operator decides at ``now`` from one scrape of every Ready pod."""
        first = self.baselines.first_scrapes(scrapes)
        pods = self.baselines.signals(scrapes, now)
        observation = step.Observation(
            replicas=decide.Replicas(
                current=census.current,
                ready=len(scrapes),
                starting=census.starting,
                unschedulable=census.unschedulable,
                placing=census.placing,
            ),
            pods=pods,
            first_scrapes=first,
            queued=metrics.queued(scrapes),
            cold_starts=cold_starts,
        )
        out = step.step(self.policy, observation, self.memory, now)
        self.memory = out.memory
        return out.result


class Kubeinfer:
    """The shipped autoscaler: scrapes every Ready pod every 2 s and runs ``Engine.step``."""

    def __init__(self, *, name: str, scaling_policy: policy.ScalingPolicy, seed: int) -> None:
        self.name = name
        self.engine = Engine(scaling_policy)
        self.rng = np.random.default_rng([seed, 17])
        self.interval = round(scaling_policy.scrape_interval_s)
        self.phase = int(self.rng.integers(self.interval))
        self.reasons: dict[str, int] = {}
        self.last: decide.ScaleResult | None = None

    def scrape(self, view: View) -> dict[str, metrics.RawScrape]:
        """Each Ready pod's /metrics now: counters since it became Ready, gauges now."""
        now = view.pp_now()
        backlog, batch = view.pending_hist[-1]
        gpu = view.gpu_utilization()
        pods = view.ready_pods
        draws = self.rng.random(len(pods))
        out: dict[str, metrics.RawScrape] = {}
        for pod, u in zip(pods, draws, strict=True):
            base = pod.snapshot
            queue_us = (now[QUEUE_S] - base[QUEUE_S]) * 1e6
            completed = now[COMPLETED] - base[COMPLETED]
            out[f"pod-{pod.id}"] = metrics.RawScrape(
                # Requests waiting: the backlog plus those gathered during the batch in flight.
                pending_requests=backlog + batch * float(u),
                queue_duration_us=queue_us,
                request_duration_us=queue_us + (now[COMPUTE_S] - base[COMPUTE_S]) * 1e6,
                request_success=completed,
                request_failure=now[FAILED] - base[FAILED],
                gpu_utilization=gpu,
            )
        return out

    def remember(self, yesterday: season.SeasonalHistory) -> None:
        """Start with what the step learned of the previous day (``one_period_earlier``)."""
        self.engine.memory = dataclasses.replace(self.engine.memory, season=yesterday.copy())

    def census(self, view: View) -> Census:
        return Census(current=view.spec, starting=view.starting, unschedulable=view.unschedulable)

    def decide(self, view: View) -> decide.ScaleResult:
        return self.engine.step(
            now=view.now,
            scrapes=self.scrape(view),
            census=self.census(view),
            cold_starts=view.cold_start_pairs(),
        )

    def tick(self, view: View) -> int | None:
        if (view.second - self.phase) % self.interval:
            return None
        result = self.decide(view)
        self.last = result
        self.reasons[result.reason.value] = self.reasons.get(result.reason.value, 0) + 1
        return result.desired
