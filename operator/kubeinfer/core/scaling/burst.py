"""Headroom sized from how bursty the demand has been: the burst-headroom floor's memory.

Owns: the record of offered demand (requests arriving per second, service-wide: signals.offered) and
of how much it grew within one cold start, and the headroom that follows from it: the
``QUANTILE`` of (highest demand within one cold start after a moment) / (demand at that moment)
over the last ``HISTORY_S`` seconds, bounded so that it never asks for room beyond the highest
demand of that history. ``decide`` provisions the current load times this factor.

Why: a replica asked for when a burst starts is Ready one cold start later; everything the
burst brings before then has to fit in the replicas already running. A static low target buys
that headroom all day (it is what the best-tuned HPA/KEDA/KPA configurations in
bench/autoscaling do); this buys it only while the load has recently been bursty over the
cold-start horizon, and as much as it has been. On a smooth load the ratios sit near 1 and
the floor is the plain recommendation.

Demand counts rejected requests: when the queue is full the answered rate is the capacity,
not the load. The closed moments survive an operator restart (``to_dict``/``from_dict``, in
status with the rest of the step's memory), rounded so that the restored history never reads
less bursty than the one persisted: a restart must neither drop the headroom a bursty load
earned nor end a calm spell (``calm_target_factor`` needs ``calm_span_s`` of history, ten
minutes by default). The open moments (the last cold start) are not kept: they close into
ratios only with the demand that follows them, which a restart did not see.
Pure: ``now`` is passed in.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
from typing import TYPE_CHECKING, Any

from kubeinfer.core import api

if TYPE_CHECKING:
    # policy.py reads HISTORY_S from here to validate calm_span_s.
    from kubeinfer.core.scaling import policy

# How far back the burstiness is read, and which share of the moments it must cover.
HISTORY_S = 900.0
QUANTILE = 0.95
# Fewer closed moments than this read as no evidence: headroom 1.
MIN_RATIOS = 10
# Closed moments are persisted in runs of this many seconds (60 runs over HISTORY_S), their
# growth rounded up to a power of 1 + PERSIST_STEP (coarser when the JSON would exceed
# PERSIST_BUDGET characters: status.autoscaler.state holds the signal window too, in 20 KiB).
PERSIST_RUN_S = 15.0
PERSIST_STEP = 0.01
PERSIST_BUDGET = 4000


@dataclasses.dataclass(kw_only=True)
class BurstHistory:
    """Moments whose cold-start horizon is still open, and the growth ratios of closed ones."""

    # (time, demand) of the moments within the last cold start, oldest first.
    open: collections.deque[tuple[float, float]] = dataclasses.field(
        default_factory=collections.deque
    )
    # (time, highest demand within one cold start / demand then, that highest demand) of
    # closed moments.
    ratios: collections.deque[tuple[float, float, float]] = dataclasses.field(
        default_factory=collections.deque
    )

    def copy(self) -> BurstHistory:
        return BurstHistory(
            open=collections.deque(self.open), ratios=collections.deque(self.ratios)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON for status: the closed moments in runs of ``PERSIST_RUN_S`` seconds, each as
        [seconds before the newest moment, highest peak, k, moments, k, moments, ...], where a
        moment's growth is rounded up to the next power (1 + ``step``)^k: ``step`` is
        ``PERSIST_STEP`` (1 %), doubled while the JSON exceeds ``PERSIST_BUDGET`` characters.
        Rounded up, so the history ``from_dict`` rebuilds reads at least the growth and room
        this one reads, and at most one step more: a restart errs towards replicas, never
        towards misses."""
        if not self.ratios:
            return {"end": None, "step": PERSIST_STEP, "runs": []}
        end, step = self.ratios[-1][0], PERSIST_STEP
        while True:
            runs: dict[int, tuple[float, float, collections.Counter[int]]] = {}
            for then, ratio, peak in self.ratios:
                age = end - then
                key = int(age // PERSIST_RUN_S)
                youngest, highest, counts = runs.get(key, (age, peak, collections.Counter()))
                counts[math.ceil(math.log(ratio) / math.log1p(step) - 1e-9)] += 1
                runs[key] = (min(youngest, age), max(highest, peak), counts)
            doc = {
                "end": end,
                "step": step,
                "runs": [
                    [round(age, 1), math.ceil(peak * 100.0) / 100.0]
                    + [x for k in sorted(counts) for x in (k, counts[k])]
                    for age, peak, counts in runs.values()
                ],
            }
            # Terminates: once (1 + step) exceeds every growth, a run holds two powers at most.
            if len(json.dumps(doc, separators=(",", ":"))) <= PERSIST_BUDGET:
                return doc
            step *= 2.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BurstHistory:
        """The history ``to_dict`` wrote: each run's moments come back one for one (so
        ``MIN_RATIOS`` holds) at its newest moment's time and highest peak."""
        end, ratios = data.get("end"), collections.deque[tuple[float, float, float]]()
        if end is not None:
            base = 1.0 + float(data.get("step", PERSIST_STEP))
            for run in sorted(data.get("runs", []), key=lambda run: -float(run[0])):
                then, peak = float(end) - float(run[0]), float(run[1])
                for k, count in zip(run[2::2], run[3::2], strict=True):
                    ratios.extend([(then, base ** int(k), peak)] * int(count))
        return cls(ratios=ratios)

    def record(self, *, now: float, demand: float, horizon_s: float) -> None:
        """Add this tick's demand; close the moments that are one cold start old."""
        while self.open and self.open[0][0] + horizon_s <= now:
            then, value = self.open.popleft()
            if value > 0:
                peak = max([v for _, v in self.open] + [demand, value])
                self.ratios.append((then, peak / value, peak))
        self.open.append((now, demand))
        while self.ratios and self.ratios[0][0] < now - HISTORY_S:
            self.ratios.popleft()

    def span_s(self) -> float:
        """Seconds between the oldest and the newest closed moment: how much history the
        headroom reads (0 with fewer than ``MIN_RATIOS``, which read as no evidence)."""
        if len(self.ratios) < MIN_RATIOS:
            return 0.0
        return self.ratios[-1][0] - self.ratios[0][0]

    def growth(self) -> float:
        """The QUANTILE of the recent growth ratios (nearest rank), at least 1; 1 without
        evidence (fewer than ``MIN_RATIOS``). How bursty the load has been, whatever it is now.
        """
        if len(self.ratios) < MIN_RATIOS:
            return 1.0
        ordered = sorted(r for _, r, _ in self.ratios)
        rank = max(1, math.ceil(QUANTILE * len(ordered)))
        return max(1.0, ordered[rank - 1])

    def headroom(self, demand: float) -> float:
        """``growth``, but never room for more than the highest demand of the history at
        ``demand`` (the load the factor will multiply; 0: unknown, no bound).

        The bound matters after quiet spells: growth from a trickle reads as a ratio of
        hundreds (an idle service in the morning), and room for a hundred times today's load
        would be replicas no recent load has needed.
        """
        factor = self.growth()  # 1 without evidence, and the bound never raises it
        if demand > 0 and self.ratios:
            highest = max([peak for _, _, peak in self.ratios] + [v for _, v in self.open])
            factor = min(factor, highest / demand)
        return max(1.0, factor)


def calm_target_factor(
    pol: policy.ScalingPolicy, history: BurstHistory, *, cold_start_s: float
) -> float:
    """How much hotter than its target the service runs this tick (1: not at all).

    Why: the planned target leaves room for bursts (planning.DEFAULT_UTILIZATION), and the
    burst headroom adds more when the load has been bursty. When the history says the load
    has been calm for a while, that room is idle and ``calm_target_factor`` spends it. Calm
    is read on ``growth``, not on ``headroom``: the headroom's bound reads 1 at the top of
    any burst, which is no sign of calm. The hazard is a rise that starts after the calm
    spell: it has to fit in the thinner room until the replicas it calls for are Ready, so
    the factor fades out as the cold start grows (policy.py's calm knobs).
    """
    if (
        not pol.burst_headroom
        or pol.metric is api.ScalingMetric.QUEUE_TIME
        or history.span_s() < pol.calm_span_s
        or history.growth() > pol.calm_headroom
    ):
        return 1.0
    full, none = pol.calm_full_cold_start_s, pol.calm_max_cold_start_s
    share = min(1.0, max(0.0, (none - cold_start_s) / (none - full)))
    return 1.0 + (pol.calm_target_factor - 1.0) * share
