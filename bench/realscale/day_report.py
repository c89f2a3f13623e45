"""What the forecast's real-cluster run measured, day by day, and its Markdown.

Pure: Deployment samples, autoscaler decisions and load counters in; figures and text out (no
cluster, no clock). The figures are defined once here so day.json and DAY.md cannot disagree.
Times are seconds from the start of the load; a day is one forecast period.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from report import LAG_ROW, REQUEST_ROWS, Sample, integral


@dataclasses.dataclass(frozen=True)
class Day:
    """One period's load: ``base`` x one replica's capacity, ``rise`` x from ``rise_at_s`` for
    ``rise_s`` seconds, the same every period."""

    period_s: float
    base: float
    rise: float
    rise_at_s: float
    rise_s: float

    def rate(self, t: float, capacity: float) -> float:
        """Requests per second ``t`` seconds into a day."""
        t = t % self.period_s
        inside = self.rise_at_s <= t < self.rise_at_s + self.rise_s
        return (self.rise if inside else self.base) * capacity

    @property
    def replicas_needed(self) -> int:
        """Replicas whose measured capacity covers the rise (4x -> 4)."""
        return math.ceil(self.rise - 1e-9)


@dataclasses.dataclass(frozen=True)
class Decision:
    """One autoscaler decision from status, ``t`` seconds after the load started."""

    t: float
    desired: int
    current: int
    reason: str
    forecast_demand: float | None
    forecast_error: float | None


def day_figures(
    samples: list[Sample], decisions: list[Decision], day: Day, index: int
) -> dict[str, Any]:
    """Day ``index``'s (0: the first) scaling figures; times relative to its rise (negative:
    before the rise). What happens around the rise is read from a quarter of a period before
    it to its end."""
    start = index * day.period_s
    rise, end = start + day.rise_at_s, start + day.rise_at_s + day.rise_s
    lead = rise - day.period_s / 4
    inside = [
        dataclasses.replace(s, t=s.t - start)
        for s in samples
        if start <= s.t < start + day.period_s
    ]
    at_rise = [s for s in samples if start <= s.t <= rise]
    # From when on Ready capacity covered the rise to its end (the last sample short of it,
    # plus one); a quarter of a period before the rise when it never fell short.
    around = [s for s in samples if lead <= s.t < end]
    short = [i for i, s in enumerate(around) if s.ready < day.replicas_needed]
    if not short:
        enough: float | None = lead - rise
    elif short[-1] + 1 < len(around):
        enough = around[short[-1] + 1].t - rise
    else:
        enough = None
    todays = [d for d in decisions if start <= d.t < start + day.period_s]
    ups = [d for d in todays if lead <= d.t <= end and d.desired > d.current]
    forecast = [d for d in todays if d.reason == "ForecastScaleUp"]
    acted = [d for d in todays if d.forecast_demand is not None]
    return {
        "ready_at_rise": at_rise[-1].ready if at_rise else None,
        "first_scale_up_s": round(ups[0].t - rise, 1) if ups else None,
        "enough_capacity_s": None if enough is None else round(enough, 1),
        "peak_replicas": max((s.replicas for s in inside), default=0),
        "replica_seconds": round(integral(inside, day.period_s, "replicas"), 1),
        "ready_replica_seconds": round(integral(inside, day.period_s, "ready"), 1),
        "forecast_scale_ups": len(forecast),
        "first_forecast_scale_up_s": round(forecast[0].t - rise, 1) if forecast else None,
        "decisions_with_forecast": len(acted),
        "forecast_error_max": max(d.forecast_error or 0.0 for d in acted) if acted else None,
        "forecast_demand_max": max(d.forecast_demand or 0.0 for d in acted) if acted else None,
        "decisions": [dataclasses.asdict(d) | {"t": round(d.t - start, 1)} for d in todays],
    }


def refigure(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` (day.json) with each day's scaling figures computed again from its
    timeline and decisions (the request counters are kept as measured)."""
    ld = results["load"]
    day = Day(ld["period_s"], ld["base"], ld["rise"], ld["rise_at_s"], ld["rise_s"])
    samples = [Sample(t, replicas, ready) for t, replicas, ready in results["timeline"]]
    decisions = decisions_of(results["days"], day.period_s)
    days = []
    for index, old in enumerate(results["days"]):
        figures = dict(old["figures"])
        figures.update(day_figures(samples, decisions, day, index))
        days.append(old | {"figures": figures})
    return results | {"days": days}


def readme_sentence(results: dict[str, Any]) -> str:
    """The README's figures for this run, word for word (a unit test holds the README to it)."""
    one, two = (day["figures"] for day in results["days"])
    offered = results["load"]["rise"] * results["load"]["capacity_per_replica"]
    ahead = -two["first_forecast_scale_up_s"]
    return (
        f"on day 2 the forecast scaled up {ahead:.0f} s before the rise (day 1, reactive: "
        f"{one['first_scale_up_s']:.0f} s after it), and p99 fell from "
        f"{one['p99_ms'] / 1000:.2f} s to {two['p99_ms'] / 1000:.2f} s, requests answered "
        f"within 1 s from {one['within_1s_pct']:.1f} % to {two['within_1s_pct']:.1f} %, 503s "
        f"from {one['rejected_503']:,} to {two['rejected_503']:,}, at "
        f"{two['replica_seconds'] / one['replica_seconds']:.2f}x day 1's replica-seconds. "
        "Caveat: day 1's 503s, retried by the clients and arriving again once capacity "
        "came, counted as demand, so day 2's forecast asked for "
        f"{two['forecast_demand_max'] / offered:.1f}x the demand the rise offered."
    )


def decisions_of(days: list[dict[str, Any]], period_s: float) -> list[Decision]:
    """The decisions day.json keeps per day, back on one clock (from the start of day 1)."""
    return [
        Decision(**(d | {"t": d["t"] + index * period_s}))
        for index, day in enumerate(days)
        for d in day["figures"]["decisions"]
    ]


ROWS = (
    ("Ready replicas when the rise began", "ready_at_rise", ""),
    ("First scale-up for the rise, from the rise", "first_scale_up_s", " s"),
    (
        "Enough Ready replicas ({needed}) from then to the rise's end, from the rise",
        "enough_capacity_s",
        " s",
    ),
    ("Scale-ups for the forecast (ForecastScaleUp)", "forecast_scale_ups", ""),
    ("First of them, from the rise", "first_forecast_scale_up_s", " s"),
    ("Decisions made with the forecast in force", "decisions_with_forecast", ""),
    ("The forecast's highest demand (requests/s)", "forecast_demand_max", ""),
    ("Peak replicas", "peak_replicas", ""),
    *REQUEST_ROWS,
    ("Replica-seconds (spec)", "replica_seconds", ""),
    ("Ready-replica-seconds", "ready_replica_seconds", ""),
    LAG_ROW,
)


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:+.1f}{unit}" if unit == " s" else f"{value:.1f}{unit}"
    return f"{value}{unit}"


def markdown(results: dict[str, Any]) -> str:
    """DAY.md: what ran, where, and a column per day."""
    ld, versions, days = results["load"], results["versions"], results["days"]
    lines = [
        "# The forecast on the real cluster: the same day twice",
        "",
        "Generated by `make bench-realscale-day` (bench/realscale/day.py); the set-up and what to",
        "keep in mind reading it: NOTES.md in this folder.",
        "",
        f"- Run {results['started']} on {results['machine']}, Python {results['python']}; "
        f"load average (1 min) {days[0]['loadavg_before'][0]:.1f} before, "
        f"{days[-1]['loadavg_after'][0]:.1f} after.",
        f"- Versions: kubeinfer {versions['kubeinfer']} ({versions['git']}), Kubernetes "
        f"{versions['kubernetes']}.",
        f"- Command: `{results['command']}`.",
        f"- The service: `scaling.forecastPeriodSeconds: {ld['period_s']:g}` (the "
        f'{ld["period_s"]:g} s "day"), otherwise the shipped defaults but the target and '
        "bounds: target "
        f"{ld['target_per_replica']:g} requests queued or executing per replica, 1 to "
        f"{ld['max_replicas']} replicas; batches of up to {ld['max_batch']} in "
        f"{ld['device_ms']:g} ms of emulated device time, {ld['cold_start']} emulated model load "
        "per pod.",
        f"- Load, each day: open loop, {ld['arrivals']} arrivals; {ld['base']:g}x one replica's "
        f"measured capacity ({ld['capacity_per_replica']:g} requests/s), {ld['rise']:g}x from "
        f"{ld['rise_at_s']:g} s for {ld['rise_s']:g} s. A request fails when it is not "
        f"answered within {ld['deadline_s']:g} s (503s retried). Before day 1, "
        f"{ld['warmup_s']:g} s from nothing to the base load, on the replicas the base needs; "
        "day 2 starts exactly one period after day 1.",
        "- Day 1 has no yesterday: the reactive rules alone. Day 2 has day 1 as its yesterday.",
        "",
        "| | " + " | ".join(f"day {i + 1}" for i in range(len(days))) + " |",
        "|---|" + "---:|" * len(days),
    ]
    for title, key, unit in ROWS:
        label = title.format(needed=ld["replicas_needed"], deadline=ld["deadline_s"])
        cells = [_fmt(day["figures"].get(key), unit) for day in days]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    errors = [d["figures"]["forecast_error_max"] for d in days]
    lines += [
        "",
        "Largest forecast error among the decisions made with the forecast (season.py: the "
        "95th percentile of today's buckets against yesterday's; the step acts below "
        "0.15): " + ", ".join("none" if e is None else f"{e:.3f}" for e in errors) + ".",
        f"The rise offered {ld['rise'] * ld['capacity_per_replica']:.0f} requests/s. Demand "
        "is what arrived: requests answered + rejected per second plus the growth of the "
        "requests queued on the Ready pods (core/scaling/signals.py `offered`); a 503 that "
        "the client retries still counts once per try (and the tries held back while it had "
        "no capacity all arrive once it has), so a rise met late reads as more than it "
        "offered, and the next day's forecast carries that (NOTES.md).",
        "",
    ]
    return "\n".join(lines)
