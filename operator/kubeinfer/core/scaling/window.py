"""Time-bucketed sliding windows over tick samples: averages and a trend for look-ahead.

Owns: keeping the last ``length_s`` seconds of samples in buckets of ``granularity_s``, the
stable and panic averages, the least-squares slope over a recent span, and serialising all of
it so an operator restart keeps its memory. Pure: ``now`` is always passed in, and nothing here
reads a clock. Empty buckets are missing data, never zeros: no data must not read as no load.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from kubeinfer.core import api
from kubeinfer.core.scaling import policy as policy_
from kubeinfer.core.scaling import signals

# The series a window keeps: one per metric, plus GPU utilization for the scale-down veto.
GPU = "GPUUtilization"
SERIES: tuple[str, ...] = (*(m.value for m in api.ScalingMetric), GPU)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Trend:
    """A least-squares line through the bucket averages of one series."""

    slope_per_s: float
    r2: float
    points: int


@dataclasses.dataclass(kw_only=True)
class SignalWindow:
    """Buckets keyed by ``floor(time / granularity_s)``; each keeps per-series (sum, count)."""

    length_s: float
    granularity_s: float
    buckets: dict[int, dict[str, tuple[float, int]]] = dataclasses.field(default_factory=dict)

    @classmethod
    def for_policy(cls, policy: policy_.ScalingPolicy) -> SignalWindow:
        return cls(length_s=policy.stable_window_s, granularity_s=policy.scrape_interval_s)

    def _index(self, time: float) -> int:
        return math.floor(time / self.granularity_s)

    def record(self, *, sample: signals.TickSample) -> None:
        """Add a tick's sample at its own time and forget buckets older than the window."""
        bucket = self.buckets.setdefault(self._index(sample.time), {})
        values = {m.value: sample.value(m) for m in api.ScalingMetric}
        values[GPU] = sample.gpu_utilization
        for name, value in values.items():
            if value is None:
                continue
            total, count = bucket.get(name, (0.0, 0))
            bucket[name] = (total + value, count + 1)
        self.prune(now=sample.time)

    def prune(self, *, now: float) -> None:
        oldest = self._index(now - self.length_s)
        for index in [i for i in self.buckets if i <= oldest]:
            del self.buckets[index]

    def _points(self, *, series: str, now: float, span_s: float) -> list[tuple[float, float]]:
        # Buckets whose index lies in (now - span, now]: the span's worth of most recent buckets.
        newest, oldest = self._index(now), self._index(now - span_s)
        points = []
        for index, bucket in self.buckets.items():
            if oldest < index <= newest and series in bucket:
                total, count = bucket[series]
                points.append((index * self.granularity_s, total / count))
        return sorted(points)

    def average(self, *, series: str, now: float, span_s: float) -> float | None:
        """Mean of the bucket averages in the last ``span_s`` seconds; None without data."""
        points = self._points(series=series, now=now, span_s=span_s)
        if not points:
            return None
        return sum(v for _, v in points) / len(points)

    def covered_s(self, *, series: str, now: float) -> float:
        """How long the window has held ``series``: ``now`` minus its oldest bucket's start
        (0 without data). Just under ``length_s`` once the window is full."""
        starts = [index for index, bucket in self.buckets.items() if series in bucket]
        return max(0.0, now - min(starts) * self.granularity_s) if starts else 0.0

    def latest_time(self) -> float | None:
        """Start time of the newest bucket holding any data."""
        if not self.buckets:
            return None
        return max(self.buckets) * self.granularity_s

    def trend(self, *, series: str, now: float, span_s: float) -> Trend | None:
        """Slope of the series over the last ``span_s`` seconds; None with under 3 points."""
        points = self._points(series=series, now=now, span_s=span_s)
        if len(points) < 3:
            return None
        n = len(points)
        mean_t = sum(t for t, _ in points) / n
        mean_v = sum(v for _, v in points) / n
        var_t = sum((t - mean_t) ** 2 for t, _ in points)
        var_v = sum((v - mean_v) ** 2 for _, v in points)
        cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
        slope = cov / var_t
        # A flat series is perfectly explained by its (zero) slope; call that r2 = 0 so that a
        # constant signal never counts as a confident trend.
        r2 = cov * cov / (var_t * var_v) if var_v > 0 else 0.0
        return Trend(slope_per_s=slope, r2=r2, points=n)

    def copy(self) -> SignalWindow:
        return SignalWindow(
            length_s=self.length_s,
            granularity_s=self.granularity_s,
            buckets={index: dict(bucket) for index, bucket in self.buckets.items()},
        )

    def to_dict(self, *, max_buckets: int | None = None) -> dict[str, Any]:
        """JSON for status. With ``max_buckets``, runs of ``coarse`` consecutive buckets are
        merged so that a long window (an hour of 2 s buckets) still fits in the status field;
        ``from_dict`` spreads each merged bucket's mean back over its run, so averages over a
        span keep weighing time as before."""
        coarse = 1
        if max_buckets is not None and len(self.buckets) > max_buckets:
            span = max(self.buckets) - min(self.buckets) + 1
            coarse = math.ceil(span / max_buckets)
        merged: dict[int, dict[str, tuple[float, int]]] = {}
        for index, bucket in sorted(self.buckets.items()):
            target = merged.setdefault(index - index % coarse, {})
            for name, (total, count) in bucket.items():
                old_total, old_count = target.get(name, (0.0, 0))
                target[name] = (old_total + total, old_count + count)
        return {
            "lengthS": self.length_s,
            "granularityS": self.granularity_s,
            "coarse": coarse,
            "buckets": {
                str(index): {name: [round(total, 4), count] for name, (total, count) in b.items()}
                for index, b in merged.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SignalWindow:
        coarse = int(data.get("coarse", 1))
        buckets: dict[int, dict[str, tuple[float, int]]] = {}
        for index, bucket in data.get("buckets", {}).items():
            means = {str(name): float(pair[0]) / int(pair[1]) for name, pair in bucket.items()}
            for fine in range(int(index), int(index) + coarse):
                buckets[fine] = {name: (mean, 1) for name, mean in means.items()}
        return cls(
            length_s=float(data["lengthS"]),
            granularity_s=float(data["granularityS"]),
            buckets=buckets,
        )
