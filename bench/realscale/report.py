"""What one side of the real-cluster comparison measured, and the Markdown table of both.

Pure: samples and load counters in, figures and text out (no cluster, no clock). The figures
are defined once here so the JSON and the table cannot disagree.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any


@dataclasses.dataclass(frozen=True)
class Sample:
    """The Deployment at one instant, ``t`` seconds after the load started."""

    t: float
    replicas: int  # spec.replicas: what the scaler asked for
    ready: int  # status.readyReplicas: capacity actually serving


@dataclasses.dataclass(frozen=True)
class Phases:
    """The step load: ``base`` x capacity for ``pre_s``, ``step`` x for ``step_s``, then
    ``base`` x again for ``post_s``."""

    base: float
    step: float
    pre_s: float
    step_s: float
    post_s: float

    @property
    def total_s(self) -> float:
        return self.pre_s + self.step_s + self.post_s

    def rate(self, t: float, capacity: float) -> float:
        in_step = self.pre_s <= t < self.pre_s + self.step_s
        return (self.step if in_step else self.base) * capacity

    @property
    def replicas_needed(self) -> int:
        """Replicas whose measured capacity covers the step (3x -> 3)."""
        return math.ceil(self.step - 1e-9)


def integral(samples: list[Sample], end: float, value: str) -> float:
    """Sample-and-hold integral of a field over [0, end] (replica-seconds)."""
    total = 0.0
    inside = [s for s in samples if 0 <= s.t <= end]
    for here, after in zip(inside, [*inside[1:], Sample(end, 0, 0)], strict=True):
        total += getattr(here, value) * max(0.0, after.t - here.t)
    return total


def scaling_figures(samples: list[Sample], phases: Phases, min_replicas: int) -> dict[str, Any]:
    """First scale-up after the step, time to enough Ready capacity, peak, replica-seconds and
    the return to the minimum, from the Deployment samples of one side."""
    before = [s for s in samples if s.t < phases.pre_s]
    at_step = before[-1].replicas if before else min_replicas
    after = [s for s in samples if s.t >= phases.pre_s]
    first_up = next((s.t - phases.pre_s for s in after if s.replicas > at_step), None)
    enough = next((s.t - phases.pre_s for s in after if s.ready >= phases.replicas_needed), None)
    step_end = phases.pre_s + phases.step_s
    down = next(
        (s.t - step_end for s in samples if s.t >= step_end and s.replicas <= min_replicas), None
    )
    return {
        "replicas_at_step": at_step,
        "first_scale_up_s": None if first_up is None else round(first_up, 2),
        "enough_capacity_s": None if enough is None else round(enough, 2),
        "peak_replicas": max((s.replicas for s in samples), default=0),
        "replica_seconds": round(integral(samples, phases.total_s, "replicas"), 1),
        "ready_replica_seconds": round(integral(samples, phases.total_s, "ready"), 1),
        "back_to_min_after_step_s": None if down is None else round(down, 2),
    }


def timeline(samples: list[Sample], every_s: float = 1.0) -> list[tuple[float, int, int]]:
    """(t, replicas, ready) once per ``every_s``, for the JSON and a plot."""
    out: list[tuple[float, int, int]] = []
    next_t = 0.0
    for s in samples:
        if s.t >= next_t:
            out.append((round(s.t, 1), s.replicas, s.ready))
            next_t = s.t + every_s
    return out


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "never"
    if isinstance(value, float):
        return f"{value:.1f}{unit}"
    return f"{value}{unit}"


def request_figures(result: Any) -> dict[str, Any]:
    """What the load generator saw (a tests/e2e/load.LoadResult): the request rows of both
    benchmarks' tables. SLO attainment is the share of sent requests answered within 1 s."""
    return {
        "sent": result.sent,
        "ok": result.ok,
        "failed": result.failed,
        "rejected_503": result.rejected_503,
        "p50_ms": round(result.percentile(50) * 1000, 1),
        "p99_ms": round(result.percentile(99) * 1000, 1),
        "within_1s_pct": round(
            100 * sum(1 for x in result.latencies_s if x <= 1.0) / max(1, result.sent), 2
        ),
        "lag_max_ms": round(max(result.lag_s, default=0.0) * 1000, 1),
        "errors": sorted(set(result.errors))[:5],
    }


# The request rows, in both benchmarks' tables: (title, key, unit).
REQUEST_ROWS = (
    ("Requests sent", "sent", ""),
    ("Requests failed (deadline {deadline:g} s)", "failed", ""),
    ("503 answers (retried)", "rejected_503", ""),
    ("p50 latency", "p50_ms", " ms"),
    ("p99 latency", "p99_ms", " ms"),
    ("Answered within 1 s (share of sent)", "within_1s_pct", " %"),
)
LAG_ROW = ("Load generator: max lag behind schedule", "lag_max_ms", " ms")

ROWS = (
    ("First scale-up after the step", "first_scale_up_s", " s"),
    (
        "Time to enough Ready capacity ({needed} replicas)",
        "enough_capacity_s",
        " s",
    ),
    ("Peak replicas", "peak_replicas", ""),
    *REQUEST_ROWS,
    ("Replica-seconds (spec, {total:g} s window)", "replica_seconds", ""),
    ("Ready-replica-seconds", "ready_replica_seconds", ""),
    ("Back to the minimum after the step ended", "back_to_min_after_step_s", " s"),
    LAG_ROW,
)


def table(results: dict[str, Any]) -> list[str]:
    """The one Markdown table: a row per figure, a column per side."""
    sides = results["sides"]
    phases = results["load"]
    names = [side["label"] for side in sides]
    lines = [
        "| | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for title, key, unit in ROWS:
        label = title.format(
            needed=phases["replicas_needed"],
            deadline=phases["deadline_s"],
            total=phases["total_s"],
        )
        cells = [_fmt(side["figures"].get(key), unit) for side in sides]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    """RESULTS.md: what ran, where, and the table (NOTES.md has the set-up and caveats)."""
    ld, versions = results["load"], results["versions"]
    loads = ", ".join(
        f"{side['label']}: {side['loadavg_before'][0]:.1f} before, {side['loadavg_after'][0]:.1f}"
        " after"
        for side in results["sides"]
    )
    lines = [
        "# kubeinfer's autoscaler vs KEDA + the real HPA, on the local cluster",
        "",
        "Generated by `make bench-realscale` (bench/realscale/bench.py); how it is wired and",
        "what to keep in mind reading it: NOTES.md in this folder.",
        "",
        f"- Run {results['started']} on {results['machine']}, Python {results['python']}; "
        f"load average (1 min) {loads}.",
        f"- Versions: kubeinfer {versions['kubeinfer']} ({versions['git']}), Kubernetes "
        f"{versions['kubernetes']} (kube-apiserver, kube-controller-manager's HPA), KEDA "
        f"{versions['keda']}, Prometheus {versions['prometheus']}.",
        f"- Command: `{results['command']}`.",
        f"- Load: open loop, {ld['arrivals']} arrivals; {ld['base']:g}x one replica's measured "
        f"capacity ({ld['capacity_per_replica']:g} requests/s) for {ld['pre_s']:g} s, "
        f"{ld['step']:g}x for {ld['step_s']:g} s, {ld['base']:g}x for {ld['post_s']:g} s. "
        f"A request fails when it is not answered within {ld['deadline_s']:g} s (503s retried).",
        f"- Service: batches of up to {ld['max_batch']} in {ld['device_ms']} ms of emulated "
        f"device time, {ld['cold_start']} emulated model load per pod, 1 to "
        f"{ld['max_replicas']} replicas, target {ld['target_per_replica']:g} requests queued or "
        "executing per replica on both sides.",
        f"- KEDA + HPA: Prometheus scrapes every {ld['prometheus_scrape_s']} s; HPA sync 15 s "
        "(kube-controller-manager's default); scale-up +1000 % or +4 pods per 15 s without "
        f"stabilization; scale-down stabilization {ld['hpa_scale_down_window_s']} s. kubeinfer: "
        "shipped defaults (60 s stable window, 60 s scale-down delay, 2 s scrape).",
        "",
        *table(results),
        "",
    ]
    return "\n".join(lines)
