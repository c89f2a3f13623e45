"""The runtime benchmark's verdicts: a point meets the goal only with both throughput and p99."""

from __future__ import annotations

import importlib.util
import json
import pathlib
from typing import Any

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[3] / "bench" / "runtime" / "report.py"
_SPEC = importlib.util.spec_from_file_location("runtime_bench_report", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
report: Any = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(report)


def point(ours: tuple[float, float], triton: tuple[float, float]) -> dict[str, Any]:
    def side(throughput: float, p99: float) -> dict[str, float]:
        return {"throughput": throughput, "p50_ms": p99 / 2, "p99_ms": p99}

    return {
        "model": "mlp",
        "protocol": "http",
        "concurrency": 8,
        "ours": side(*ours),
        "triton": side(*triton),
    }


@pytest.mark.parametrize(
    ("ours", "triton", "expected"),
    [
        ((1000, 5.0), (1000, 5.0), "met"),
        ((1200, 4.0), (1000, 5.0), "met"),
        ((900, 4.0), (1000, 5.0), "missed: throughput 0.90x"),
        ((1100, 6.0), (1000, 5.0), "missed: p99 1.20x"),
        ((500, 10.0), (1000, 5.0), "missed: throughput 0.50x, p99 2.00x"),
    ],
)
def test_verdict(ours: tuple[float, float], triton: tuple[float, float], expected: str) -> None:
    assert report.verdict(point(ours, triton)) == expected


def test_a_failed_measurement_is_no_verdict() -> None:
    failed = point((1, 1), (1, 1)) | {"ours": {"error": "unstable"}}
    assert report.verdict(failed).startswith("no measurement")


def test_readme_quotes_the_committed_results() -> None:
    """The README's runtime figures are report.readme_figures(results.json), word for word."""
    root = _PATH.parents[2]
    result = json.loads((root / "bench" / "runtime" / "results.json").read_text())
    assert report.readme_figures(result) in (root / "README.md").read_text()


def test_results_say_how_fast_the_host_was_when_the_run_recorded_it() -> None:
    root = pathlib.Path(__file__).resolve().parents[3]
    result = json.loads((root / "bench" / "runtime" / "results.json").read_text())
    result.pop("python_loop_s_before", None)
    result.pop("python_loop_s_after", None)
    assert "Host speed" not in report.render(result)  # a run from before it was recorded
    result |= {"python_loop_s_before": 0.251, "python_loop_s_after": 0.43}
    assert "Python loop took 0.25 s before and 0.43 s after" in report.render(result)
