"""The peers, implemented from their source: Kubernetes HPA, KEDA (an HPA on an external
metric) and Knative's KPA; each with its real knobs, its defaults, and the tuning grid.

Owns: the algorithms and what each one can observe. Sources (anchors.md has the defaults):
- HPA: kubernetes pkg/controller/podautoscaler: replica_calculator.go (pods metric: average
  over pods with metrics; tolerance 0.1; pods without a metric count as 0 on scale-up and as
  the target on scale-down; unready pods count as 0 on scale-up only) and horizontal.go
  (stabilization: the min of recommendations in the scale-up window, the max in the scale-down
  window; rate policies over the period's starting replica count; selectPolicy Max).
- KEDA: the HPA it creates with an External metric, target type AverageValue
  (GetExternalPerPodMetricReplicas: ratio = total / (target x status.replicas); outside the
  tolerance desired = ceil(total / target)). KEDA's metrics server queries Prometheus when
  the HPA asks; pollingInterval only drives 0 <-> 1, which min 1 never needs.
- KPA: knative.dev/serving pkg/autoscaler/scaling/autoscaler.go Scale(): stable and panic
  averages of the observed total concurrency (1 s buckets), dspc/dppc = ceil(value / target)
  clamped to [ready / maxScaleDownRate, ready * maxScaleUpRate], panic when dppc / ready >=
  threshold, never scale down while panicking (max panic pods), leave panic a stable window
  after the last over-threshold tick, scale-down delay = max over the delay window; 2 s tick.

The metric: requests in flight per pod (queued or executing), the same signal kubeinfer scales
on. HPA and KEDA read it through Prometheus: the Triton pending-request gauge at the latest
scrape plus rate(compute duration) over a window of two scrapes (the shortest rate() can use),
so the value the HPA sees is up to one scrape interval old and the executing part is averaged
over two. KPA reads it as Knative's queue-proxy reports it: time-averaged concurrency, scraped
every second from every ready pod.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
from sim import COMPUTE_S, View

# ---------------------------------------------------------------------------- HPA and KEDA

Policy = tuple[str, int, int]  # (Pods | Percent, value, periodSeconds)
UP_DEFAULT: tuple[Policy, ...] = (("Percent", 100, 15), ("Pods", 4, 15))
UP_FAST: tuple[Policy, ...] = (("Percent", 900, 15),)
DOWN_DEFAULT: tuple[Policy, ...] = (("Percent", 100, 15),)


@dataclasses.dataclass(frozen=True)
class HPAConfig:
    # --horizontal-pod-autoscaler-sync-period (kube-controller-manager), seconds.
    sync_s: int = 15
    # Prometheus scrape interval; 30 s is kube-prometheus-stack's default (Prometheus: 60 s).
    scrape_s: int = 30
    # rate() window in the query; a default setup writes [1m].
    rate_window_s: int = 60
    target_factor: float = 1.0  # x the planned target
    tolerance: float = 0.1
    up_stabilization_s: int = 0
    down_stabilization_s: int = 300
    up_policies: tuple[Policy, ...] = UP_DEFAULT
    down_policies: tuple[Policy, ...] = DOWN_DEFAULT

    def label(self) -> str:
        up = "fast" if self.up_policies == UP_FAST else "default"
        return (
            f"sync {self.sync_s}s, scrape {self.scrape_s}s, rate[{self.rate_window_s}s], "
            f"target x{self.target_factor:g}, down window {self.down_stabilization_s}s, "
            f"scale-up {up}"
        )


class PrometheusView:
    """What a PromQL query evaluated at second ``t`` returns for the in-flight metric."""

    def __init__(self, *, scrape_s: int, rate_window_s: int, phase: int) -> None:
        self.scrape_s, self.window_s, self.phase = scrape_s, rate_window_s, phase

    def query(self, view: View, rng: np.random.Generator) -> tuple[float, float, int, int] | None:
        """(pending gauge, executing rate) per pod, pods with both, Ready pods with a gauge only.

        None before two scrapes exist.
        """
        t = view.second
        last = t - ((t - self.phase) % self.scrape_s)
        samples = []
        s = last
        while s > t - self.window_s and s >= 0:
            samples.append(s)
            s -= self.scrape_s
        if len(samples) < 2:
            return None
        first = samples[-1]
        hist = view.pp_hist
        executing = (hist[last][COMPUTE_S] - hist[first][COMPUTE_S]) / (last - first)
        backlog, batch = view.pending_hist[last]
        ready = view.ready_pods
        with_rate = sum(1 for p in ready if p.ready_at <= first)
        gauge_only = sum(1 for p in ready if first < p.ready_at <= last)
        scraped = max(view.ready_hist[last], 1)
        # Each pod's gauge is backlog + (requests gathered during the batch in flight), the
        # latter uniform over the batch: the mean of the scraped pods' gauges.
        pending = backlog + batch * float(rng.random(scraped).mean())
        return pending, executing, with_rate, gauge_only


class HPA:
    """The HPA on a Pods metric (prometheus-adapter), or, with ``external``, KEDA's HPA."""

    def __init__(
        self, *, name: str, config: HPAConfig, target: float, external: bool, seed: int
    ) -> None:
        self.name, self.config, self.external = name, config, external
        self.target = target * config.target_factor
        rng = np.random.default_rng([seed, 11, int(external)])
        self.rng = rng
        # Sync and scrape phases are the cluster's, not ours: seeded, not aligned with anything.
        self.sync_phase = int(rng.integers(config.sync_s))
        self.prom = PrometheusView(
            scrape_s=config.scrape_s,
            rate_window_s=max(config.rate_window_s, 2 * config.scrape_s),
            phase=int(rng.integers(config.scrape_s)),
        )
        self.recommendations: list[tuple[int, int]] = []
        self.up_events: list[tuple[int, int]] = []
        self.down_events: list[tuple[int, int]] = []

    def tick(self, view: View) -> int | None:
        t = view.second
        if (t - self.sync_phase) % self.config.sync_s:
            return None
        seen = self.prom.query(view, self.rng)
        if seen is None:
            return None
        pending, executing, with_rate, gauge_only = seen
        current = view.spec
        rec: int | None
        if self.external:
            # sum() over pod series: a pod without a rate yet adds only its gauge.
            total = (pending + executing) * with_rate + pending * gauge_only
            rec = self._external(total, current)
        else:
            # prometheus-adapter's per-pod query: a pod without a rate has no value (missing).
            rec = self._pods(view, pending + executing, with_rate, current)
        if rec is None:
            return None
        return self._normalize(t, current, rec, view.config.min_replicas, view.config.max_replicas)

    def _pods(self, view: View, value: float, with_metric: int, current: int) -> int | None:
        # replica_calculator.go calcPlainMetricReplicas.
        if with_metric == 0:
            return None  # "did not receive metrics for targeted pods": the HPA does nothing
        tol, target = self.config.tolerance, self.target
        ratio = value / target
        # Starting pods (not Ready, no series yet) and Ready pods without a rate are missing;
        # Pending (unschedulable) pods are unready.
        missing = view.ready + view.starting - with_metric
        unready = view.unschedulable
        up_with_unready = unready > 0 and ratio > 1.0
        if not up_with_unready and missing == 0:
            if abs(ratio - 1.0) <= tol:
                return current
            return math.ceil(ratio * with_metric)
        total, count = value * with_metric, with_metric
        if missing:
            total += target * missing if ratio < 1.0 else 0.0
            count += missing
        if up_with_unready:
            count += unready
        new_ratio = total / (target * count)
        if (
            abs(new_ratio - 1.0) <= tol
            or (ratio < 1.0 and new_ratio > 1.0)
            or (ratio > 1.0 and new_ratio < 1.0)
        ):
            return current
        rec = math.ceil(new_ratio * count)
        if (new_ratio < 1.0 and rec > current) or (new_ratio > 1.0 and rec < current):
            return current
        return rec

    def _external(self, total: float, status_replicas: int) -> int:
        # GetExternalPerPodMetricReplicas (AverageValue).
        replicas = max(status_replicas, 1)
        ratio = total / (self.target * replicas)
        if abs(1.0 - ratio) > self.config.tolerance:
            return math.ceil(total / self.target)
        return status_replicas

    def _normalize(self, t: int, current: int, rec: int, lo: int, hi: int) -> int:
        # horizontal.go normalizeDesiredReplicasWithBehaviors.
        cfg = self.config
        up_cut, down_cut = t - cfg.up_stabilization_s, t - cfg.down_stabilization_s
        up_rec = down_rec = rec
        for when, r in self.recommendations:
            if when > up_cut:
                up_rec = min(up_rec, r)
            if when > down_cut:
                down_rec = max(down_rec, r)
        keep = t - max(cfg.up_stabilization_s, cfg.down_stabilization_s)
        self.recommendations = [(w, r) for w, r in self.recommendations if w > keep]
        self.recommendations.append((t, rec))
        desired = current
        if desired < up_rec:
            desired = up_rec
        if desired > down_rec:
            desired = down_rec
        if desired > current:
            limit = self._limit(t, current, cfg.up_policies, up=True)
            desired = min(desired, max(limit, current), hi)
        elif desired < current:
            limit = self._limit(t, current, cfg.down_policies, up=False)
            desired = max(desired, min(limit, current), lo)
        desired = min(max(desired, lo), hi)
        if desired > current:
            self.up_events.append((t, desired - current))
        elif desired < current:
            self.down_events.append((t, current - desired))
        return desired

    def _limit(self, t: int, current: int, policies: tuple[Policy, ...], *, up: bool) -> int:
        results = []
        for kind, value, period in policies:
            added = sum(n for when, n in self.up_events if when > t - period)
            deleted = sum(n for when, n in self.down_events if when > t - period)
            start = current - added + deleted
            if up:
                proposed = start + value if kind == "Pods" else math.ceil(start * (1 + value / 100))
            else:
                proposed = start - value if kind == "Pods" else int(start * (1 - value / 100))
            results.append(proposed)
        # selectPolicy Max: the largest change.
        return max(results) if up else min(results)


# ---------------------------------------------------------------------------- KPA


@dataclasses.dataclass(frozen=True)
class KPAConfig:
    target_factor: float = 1.0
    stable_s: int = 60
    panic_pct: float = 10.0
    panic_threshold: float = 2.0
    max_up_rate: float = 1000.0
    max_down_rate: float = 2.0
    scale_down_delay_s: int = 0
    tick_s: int = 2

    def label(self) -> str:
        return (
            f"target x{self.target_factor:g}, stable {self.stable_s}s, panic "
            f"{self.panic_pct:g}% ({self.panic_s}s), threshold {self.panic_threshold:g}x, "
            f"scale-down delay {self.scale_down_delay_s}s"
        )

    @property
    def panic_s(self) -> int:
        return max(1, round(self.stable_s * self.panic_pct / 100))


class KPA:
    name = "KPA"

    def __init__(self, *, name: str, config: KPAConfig, target: float, seed: int) -> None:
        self.name, self.config = name, config
        self.target = target * config.target_factor
        rng = np.random.default_rng([seed, 13])
        self.phase = int(rng.integers(config.tick_s))
        self.panic_time: int | None = None
        self.max_panic_pods = 0
        self.delay: list[tuple[int, int]] = []

    def _average(self, view: View, span: int) -> float | None:
        hist = view.inflight_hist
        t = len(hist) - 1
        first = max(0, t - span)
        if t - first < 1:
            return None
        # Mean of the 1 s buckets = total concurrency integral over the span / span.
        return (hist[t] - hist[first]) / (t - first)

    def tick(self, view: View) -> int | None:
        cfg = self.config
        t = view.second
        if (t - self.phase) % cfg.tick_s:
            return None
        stable = self._average(view, cfg.stable_s)
        panic = self._average(view, cfg.panic_s)
        if stable is None or panic is None:
            return None
        ready = float(max(view.ready, 1))
        max_up = math.ceil(cfg.max_up_rate * ready)
        max_down = math.floor(ready / cfg.max_down_rate)
        dspc = math.ceil(stable / self.target)
        dppc = math.ceil(panic / self.target)
        stable_pods = int(min(max(dspc, max_down), max_up))
        panic_pods = int(min(max(dppc, max_down), max_up))
        over = dppc / ready >= cfg.panic_threshold
        if over:
            self.panic_time = t
        elif self.panic_time is not None and t > self.panic_time + cfg.stable_s:
            self.panic_time, self.max_panic_pods = None, 0
        desired = stable_pods
        if self.panic_time is not None:
            desired = max(desired, panic_pods)
            if desired > self.max_panic_pods:
                self.max_panic_pods = desired
            else:
                desired = self.max_panic_pods
        if cfg.scale_down_delay_s > 0:
            self.delay = [(w, d) for w, d in self.delay if w > t - cfg.scale_down_delay_s]
            self.delay.append((t, desired))
            desired = max(d for _, d in self.delay)
        return desired


# ---------------------------------------------------------------------------- defaults, grids

HPA_DEFAULT = HPAConfig()
KPA_DEFAULT = KPAConfig()
TARGET_FACTORS = (0.35, 0.5, 0.7, 1.0)


def hpa_grid() -> list[HPAConfig]:
    """The knobs a careful operator turns (used for the HPA and for KEDA's HPA)."""
    out = []
    for (sync, scrape), factor, down, up in itertools.product(
        ((15, 15), (15, 5), (5, 5)), TARGET_FACTORS, (60, 300), (UP_DEFAULT, UP_FAST)
    ):
        out.append(
            HPAConfig(
                sync_s=sync,
                scrape_s=scrape,
                rate_window_s=2 * scrape,
                target_factor=factor,
                down_stabilization_s=down,
                up_policies=up,
            )
        )
    return out


def kpa_grid() -> list[KPAConfig]:
    out = []
    for factor, stable, threshold, delay in itertools.product(
        TARGET_FACTORS, (30, 60, 180), (1.5, 2.0), (0, 120)
    ):
        out.append(
            KPAConfig(
                target_factor=factor,
                stable_s=stable,
                panic_threshold=threshold,
                scale_down_delay_s=delay,
            )
        )
    return out


def make(
    kind: str, config: HPAConfig | KPAConfig, *, target: float, seed: int, name: str
) -> HPA | KPA:
    """A peer scaler of ``kind`` (HPA, KEDA, KPA) with ``config``."""
    if kind == "KPA":
        assert isinstance(config, KPAConfig)
        return KPA(name=name, config=config, target=target, seed=seed)
    assert isinstance(config, HPAConfig)
    return HPA(name=name, config=config, target=target, external=kind == "KEDA", seed=seed)
