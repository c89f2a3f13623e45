"""bench/realscale/sim_check: the simulation run on the real cluster's step, side by side with
what the cluster measured."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys
from typing import Any

_DIR = pathlib.Path(__file__).resolve().parents[3] / "bench" / "realscale"


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("realscale_sim_check", _DIR / "sim_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["realscale_sim_check"] = module
    spec.loader.exec_module(module)
    return module


sim_check = _load()
CLUSTER = json.loads((_DIR / "results.json").read_text())


def test_the_trace_is_the_clusters_step_in_the_simulated_replicas_capacity() -> None:
    load = {"base": 0.5, "step": 3.0, "pre_s": 20.0, "step_s": 60.0, "total_s": 170.0}
    rows = sim_check.trace_rows(load, 900.0)
    assert rows[0] == (0.0, 450.0) and rows[-1] == (170.0, 450.0)
    during = [v for t, v in rows if 20.0 < t <= 80.0]
    assert during and all(v == 2700.0 for v in during)
    after = [v for t, v in rows if t > 80.0]
    assert after and all(v == 450.0 for v in after)


def test_direction_reads_a_ratio_near_one_as_even() -> None:
    assert sim_check.direction(0.5) == -1
    assert sim_check.direction(1.3) == 1
    assert sim_check.direction(1.04) == 0 and sim_check.direction(0.96) == 0


def test_the_simulated_sides_are_measured_as_the_cluster_ones_are() -> None:
    """One seed: both sides scale after the step and have the step's replicas Ready; the
    figures come from report.scaling_figures, the cluster's own definitions."""
    sim = sim_check.run(CLUSTER, seeds=1)
    for label in ("kubeinfer", "KEDA + HPA"):
        (row,) = sim["perSeed"][label]
        assert row["firstScaleUpS"] is not None and row["firstScaleUpS"] >= 0
        assert row["enoughCapacityS"] is not None
        assert row["enoughCapacityS"] >= row["firstScaleUpS"]
        assert row["replicaSeconds"] > 0
    # The cluster's HPA syncs every 15 s: it cannot scale before its first sync after the
    # step, while kubeinfer's 2 s tick can.
    assert sim["perSeed"]["kubeinfer"][0]["firstScaleUpS"] < 15.0


def test_the_committed_check_is_of_the_committed_cluster_run() -> None:
    doc = json.loads((_DIR / "sim_check.json").read_text())
    assert doc["cluster"]["started"] == CLUSTER["started"], (
        "bench/realscale/results.json changed: re-run .venv/bin/python bench/realscale/sim_check.py"
    )
    assert (_DIR / "SIMCHECK.md").read_text() == sim_check.markdown(doc)
    assert doc["comparison"] == sim_check.compare(CLUSTER, doc["sim"])


def test_readme_quotes_the_committed_check() -> None:
    doc = json.loads((_DIR / "sim_check.json").read_text())
    rows = {row["figure"]: row for row in doc["comparison"]}
    judged = [row for row in doc["comparison"] if row["sameDirection"] is not None]
    agree = sum(1 for row in judged if row["sameDirection"])
    missed, cost = rows["requests missed"], rows["replica-seconds"]
    expected = (
        f"points the same way on {agree} of {len(judged)} figures: "
        f"{missed['simRatio']:.2f}x the HPA's misses at {cost['simRatio']:.2f}x its "
        f"replica-seconds (the cluster: {missed['clusterRatio']:.2f}x at "
        f"{cost['clusterRatio']:.2f}x)"
    )
    readme = (_DIR.parents[1] / "README.md").read_text()
    assert expected in " ".join(readme.split())
