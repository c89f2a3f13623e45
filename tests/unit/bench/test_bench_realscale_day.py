"""bench/realscale/day_report: the forecast's real-cluster figures, day by day, and the README."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys
from typing import Any

import pytest

_DIR = pathlib.Path(__file__).resolve().parents[3] / "bench" / "realscale"


def _load(name: str, alias: str) -> Any:
    spec = importlib.util.spec_from_file_location(alias, _DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


# day_report imports the side-by-side's report module by its script name, which
# bench/autoscaling has a module of too: lend it the right one while it loads.
realscale_report = _load("report", "realscale_report")
_saved = sys.modules.get("report")
sys.modules["report"] = realscale_report
try:
    day_report = _load("day_report", "realscale_day_report")
finally:
    if _saved is None:
        del sys.modules["report"]
    else:
        sys.modules["report"] = _saved

DAY = day_report.Day(period_s=600.0, base=1.5, rise=4.0, rise_at_s=240.0, rise_s=90.0)


def samples(ready_from: dict[int, float]) -> list[Any]:
    """Two days at 0.5 s: 2 replicas, 8 asked for and Ready from ``ready_from[day]`` (seconds
    into the day) to the end of the rise."""
    out = []
    for index, start in ready_from.items():
        for k in range(1200):
            t = k / 2
            ready = 8 if start <= t < DAY.rise_at_s + DAY.rise_s else 2
            out.append(realscale_report.Sample(t + index * DAY.period_s, ready, ready))
    return out


def test_a_day_met_ahead_reads_negative_and_a_reactive_one_positive() -> None:
    series = samples({0: 265.0, 1: 238.0})
    decisions = [
        day_report.Decision(242.0, 8, 2, "PanicScaleUp", None, None),
        day_report.Decision(600.0 + 90.0, 2, 2, "Hold", 75.0, 0.04),
        day_report.Decision(600.0 + 216.0, 8, 2, "ForecastScaleUp", 200.0, 0.05),
    ]
    one = day_report.day_figures(series, decisions, DAY, 0)
    two = day_report.day_figures(series, decisions, DAY, 1)
    assert one["first_scale_up_s"] == pytest.approx(2.0)
    assert one["enough_capacity_s"] == pytest.approx(25.0)
    assert one["ready_at_rise"] == 2 and one["forecast_scale_ups"] == 0
    assert one["forecast_error_max"] is None
    assert two["first_scale_up_s"] == pytest.approx(-24.0)
    assert two["first_forecast_scale_up_s"] == pytest.approx(-24.0)
    assert two["enough_capacity_s"] == pytest.approx(-2.0)
    assert two["ready_at_rise"] == 8
    assert two["decisions_with_forecast"] == 2 and two["forecast_error_max"] == 0.05
    assert two["forecast_demand_max"] == 200.0
    # A day's decisions are kept on its own clock and come back on the run's.
    assert [d["t"] for d in two["decisions"]] == [90.0, 216.0]
    saved = [{"figures": one}, {"figures": two}]
    assert day_report.decisions_of(saved, DAY.period_s) == decisions
    # More replicas than the first day, for fewer seconds: the integral says which.
    assert one["replica_seconds"] < two["replica_seconds"]


def test_readme_quotes_the_committed_run() -> None:
    results = json.loads((_DIR / "day.json").read_text())
    readme = (_DIR.parents[1] / "README.md").read_text()
    assert day_report.readme_sentence(results) in readme
    # The committed figures are the ones its timeline and decisions give.
    assert day_report.refigure(results)["days"] == results["days"]
