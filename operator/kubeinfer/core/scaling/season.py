"""Demand that repeats with a period (a day by default): the forecast's memory and the forecast.

Owns: the mean offered demand (requests arriving per second, service-wide: signals.offered) per
bucket of the period (``BUCKETS`` of them) as last seen, how today's latest buckets compare
with the buckets near them one period earlier (``SHIFT``: a day may run a little early or
late), and the forecast that follows: the highest demand the last period saw near the next
cold start, times how today runs against it (``scale``), plus its error. ``step`` acts on it
only while that error is small (``policy.forecast_max_error``).

Why: a reactive scaler pays for not knowing the future twice. It keeps room for a rise it
cannot see coming (the planned target's slack, the burst headroom), and it keeps replicas for
a cold start or two after the load falls in case the load comes back. Most services' demand
repeats daily, so yesterday at this hour is a forecast of the next cold start; while today
has tracked yesterday closely, that forecast buys both: pre-scaling for the rise yesterday
had, and a hotter target with a short scale-down window (decide.py's forecast floor and
``policy.forecast_target_factor``). The moment today stops tracking (a burst yesterday did not
have, a quiet holiday), the error grows and the reactive rules are back in full.

The bucket means and the last ``FIT_BUCKETS`` comparisons survive an operator restart
(``to_dict``/``from_dict``, in status with the rest of the step's memory); the bucket in
progress does not. Pure: ``now`` is passed in.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import statistics
from typing import Any

# Buckets per period: 5 minutes of a day.
BUCKETS = 288
# Today's latest closed buckets compared with the same buckets one period earlier (four hours
# of a day), and how many of them must have both to read a forecast at all (three hours).
# Hours, not minutes: a stretch of flat load matches any other flat stretch, and is little
# evidence that the rises will match too (bench/autoscaling/analysis.md: with 24 and 18 the
# benchmark's flat 5-minute warm-up alone made the forecast confident on the noisy family,
# which then met its noise at the forecast's hotter target).
FIT_BUCKETS = 48
FIT_MIN = 36
# The error is this quantile of the per-bucket relative errors (nearest rank: the third
# largest of 48): a few buckets may be off (a step a minute earlier than yesterday's), a
# noisy day's many may not. 0.9 let the noisy family's errors pass now and then, and a
# forecast that flickers on and off gives back replicas the reactive rules were holding.
QUANTILE = 0.95
# Buckets today's demand may run early or late against the last period's (half an hour
# of a day): a morning rise or a batch job rarely starts at the same minute two days running.
# Each bucket is compared with the range the last period had within SHIFT buckets of it, and
# the forecast provisions for the highest demand within SHIFT buckets either side of the
# horizon. Without it a rise a few minutes off yesterday's read as an error of 100 % or more
# for that bucket, turned the forecast off for the next FIT_BUCKETS, and the reactive rules
# held the burst headroom for the whole time (bench/autoscaling/analysis.md).
SHIFT = 6
# Significant digits of a persisted mean.
PERSIST_DIGITS = 4


@dataclasses.dataclass(frozen=True, kw_only=True)
class Forecast:
    """What the last period says about the next cold start."""

    # Requests per second to provision for: the last period's highest bucket within SHIFT
    # buckets of the horizon x ``scale`` x (1 + ``error``).
    demand: float
    # Today's demand / the last period's: the median of the latest closed buckets' ratios.
    scale: float
    # QUANTILE of the per-bucket relative distance of today / ``scale`` from the range the last
    # period had within SHIFT buckets (0 inside it): how closely today tracks.
    error: float


def _sig(value: float) -> float | int:
    """``value`` to PERSIST_DIGITS significant digits; an int when that is whole (shorter
    JSON: a day's 288 means sit in status beside the window)."""
    rounded = float(f"{value:.{PERSIST_DIGITS}g}")
    return int(rounded) if rounded.is_integer() else rounded


# (bucket, today's mean, the last period's mean, its lowest and highest within SHIFT buckets).
Pair = tuple[int, float, float, float, float]


def _off(value: float, low: float, high: float) -> float:
    """How far ``value`` lies outside ``[low, high]``, relative to the bound it passed."""
    if value > high:
        return value / high - 1.0 if high > 0 else math.inf
    if value < low:
        return 1.0 - value / low
    return 0.0


@dataclasses.dataclass(kw_only=True)
class SeasonalHistory:
    """Bucket means of the last period, and today's latest buckets against them."""

    # Seconds per period; 0: off (records nothing, forecasts nothing).
    period_s: float = 0.0
    # Absolute bucket number (time // bucket width) -> mean demand, for the last
    # BUCKETS + SHIFT closed buckets.
    means: dict[int, float] = dataclasses.field(default_factory=dict)
    # The latest closed buckets against the last period: (bucket, today's mean, the mean one
    # period earlier, the lowest and the highest mean within SHIFT buckets of that one).
    pairs: collections.deque[Pair] = dataclasses.field(default_factory=collections.deque)
    # The bucket in progress: its number, and the sum and count of its samples.
    open_bucket: int | None = None
    open_sum: float = 0.0
    open_count: int = 0

    @property
    def width_s(self) -> float:
        return self.period_s / BUCKETS

    def bucket(self, t: float) -> int:
        return math.floor(t / self.width_s)

    def copy(self) -> SeasonalHistory:
        return dataclasses.replace(
            self, means=dict(self.means), pairs=collections.deque(self.pairs)
        )

    def record(self, *, now: float, demand: float) -> None:
        """Add this tick's demand; close the bucket in progress when ``now`` is past it."""
        if self.period_s <= 0:
            return
        n = self.bucket(now)
        if self.open_bucket is not None and n != self.open_bucket:
            self._close()
        if self.open_bucket != n:
            self.open_bucket, self.open_sum, self.open_count = n, 0.0, 0
        self.open_sum += demand
        self.open_count += 1

    def _close(self) -> None:
        k = self.open_bucket
        assert k is not None
        self.open_bucket = None
        if self.open_count == 0:
            return
        mean = self.open_sum / self.open_count
        earlier = self.means.get(k - BUCKETS)
        if earlier is not None:
            near = [
                v
                for j in range(k - BUCKETS - SHIFT, k - BUCKETS + SHIFT + 1)
                if (v := self.means.get(j)) is not None
            ]
            self.pairs.append((k, mean, earlier, min(near), max(near)))
        self.means[k] = mean
        for old in [b for b in self.means if b <= k - BUCKETS - SHIFT]:
            del self.means[old]
        while self.pairs and self.pairs[0][0] <= k - FIT_BUCKETS:
            self.pairs.popleft()

    def forecast(self, *, now: float, horizon_s: float) -> Forecast | None:
        """The forecast for ``[now, now + horizon_s]``; None without a period's history of
        those buckets or ``FIT_MIN`` comparisons among the latest ``FIT_BUCKETS``."""
        if self.period_s <= 0:
            return None
        n = self.bucket(now)
        pairs = [p[1:] for p in self.pairs if p[0] >= n - FIT_BUCKETS]
        ratios = [today / then for today, then, _, _ in pairs if then > 0]
        if len(pairs) < FIT_MIN or not ratios:
            return None
        # The median, not the ratio of the sums: a rise a few buckets off yesterday's makes a
        # few ratios far from the rest, and must not move the scale the other buckets read.
        scale = statistics.median(ratios)
        if scale <= 0:
            return None
        errors = sorted(_off(today / scale, low, high) for today, _, low, high in pairs)
        error = errors[max(1, math.ceil(QUANTILE * len(errors))) - 1]
        last = self.bucket(now + horizon_s)
        ahead = [self._seen(k - BUCKETS) for k in range(n - SHIFT, last + SHIFT + 1)]
        if not ahead or any(v is None for v in ahead):
            return None
        highest = max(v for v in ahead if v is not None)
        return Forecast(demand=highest * scale * (1.0 + error), scale=scale, error=error)

    def _seen(self, k: int) -> float | None:
        """Bucket ``k``'s mean; a lone empty bucket reads as the larger of its neighbours.
        At the shortest period a bucket is about one 2-second scrape wide and a late tick
        leaves one empty now and then; two or more in a row are a stretch not seen."""
        mean = self.means.get(k)
        if mean is not None:
            return mean
        before, after = self.means.get(k - 1), self.means.get(k + 1)
        return None if before is None or after is None else max(before, after)

    def to_dict(self) -> dict[str, Any]:
        """JSON for status: the period, the newest closed bucket, the means of the
        BUCKETS + SHIFT buckets up to it (null where none was seen), and the comparisons as
        [buckets before the newest, today, earlier, earlier's low, earlier's high]; numbers to
        ``PERSIST_DIGITS`` significant digits."""
        if not self.means:
            return {"period": self.period_s, "newest": None, "means": [], "pairs": []}
        newest = max(self.means)
        means = self.means
        return {
            "period": self.period_s,
            "newest": newest,
            "means": [
                None if (v := means.get(k)) is None else _sig(v)
                for k in range(newest - BUCKETS - SHIFT + 1, newest + 1)
            ],
            "pairs": [[newest - k, *(_sig(v) for v in values)] for k, *values in self.pairs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SeasonalHistory:
        period = float(data.get("period") or 0.0)
        newest = data.get("newest")
        out = cls(period_s=period)
        if newest is None:
            return out
        newest = int(newest)
        values = list(data.get("means") or [])
        first = newest - len(values) + 1
        out.means = {first + i: float(v) for i, v in enumerate(values) if v is not None}
        out.pairs = collections.deque(_pair(newest, saved) for saved in data.get("pairs") or [])
        return out


def _pair(newest: int, saved: list[Any]) -> Pair:
    """A persisted comparison; one saved before SHIFT (no range) reads its range as "then"."""
    age, today, then = int(saved[0]), float(saved[1]), float(saved[2])
    low, high = (float(saved[3]), float(saved[4])) if len(saved) >= 5 else (then, then)
    return (newest - age, today, then, low, high)
