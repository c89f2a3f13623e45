"""Plan a starting point from a ``kubeinfer-onnx-profile`` report: replicas and batching.

Owns: reading the profile report into typed rows and the sizing arithmetic; the one place that
recommends batching from measurements. Pure: ``planning_cli.py`` reads the file and prints.

The report is what ``kubeinfer-onnx-profile`` writes (extra keys are ignored)::

    {"model": "resnet50.onnx",
     "runs": [{"precision": "fp32",
               "points": [{"batch_size": 1, "p50_ms": 8.6, "p99_ms": 12.9, "throughput": 116.3},
                          {"batch_size": 8, "p50_ms": 12.8, "p99_ms": 19.2, "throughput": 625.0}]},
              {"precision": "int8", "points": [...]}]}

``throughput`` is inferences (rows) per second at that batch size, one batch at a time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

# The share of a replica's measured throughput to plan for, leaving room for bursts and for
# the queueing that grows sharply as a server nears saturation.
DEFAULT_UTILIZATION = 0.7
# Never plan a batching delay longer than this, whatever the budget allows.
MAX_QUEUE_DELAY_US = 100_000


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProfileRow:
    batch: int
    p50_ms: float
    p99_ms: float
    throughput_rps: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    replicas: int
    max_batch_size: int
    max_queue_delay_us: int
    # What one replica sustains at that batch size, and the p99 the profile measured there.
    capacity_rps: float
    p99_ms: float
    # A QueueDepth target (requests queued or executing per replica) at the planned load.
    target_queue_depth: float
    meets_p99: bool


def parse_profile(report: Any, *, precision: str = "fp32") -> list[ProfileRow]:
    """Typed rows of one precision's run, sorted by batch size.

    Raises ValueError naming what is missing, so ``kubeinfer plan`` can say why it cannot plan.
    """
    runs = report.get("runs") if isinstance(report, Mapping) else None
    if not isinstance(runs, list):
        raise ValueError("not a kubeinfer-onnx-profile report: no 'runs' list")
    run = next(
        (r for r in runs if isinstance(r, Mapping) and r.get("precision") == precision), None
    )
    if run is None:
        found = [r.get("precision") for r in runs if isinstance(r, Mapping)]
        raise ValueError(f"the profile has no {precision!r} run (it has {found})")
    rows: list[ProfileRow] = []
    for point in run.get("points") or []:
        try:
            row = ProfileRow(
                batch=int(point["batch_size"]),
                p50_ms=float(point["p50_ms"]),
                p99_ms=float(point["p99_ms"]),
                throughput_rps=float(point["throughput"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"profile point {point!r}: {exc!r}") from exc
        if row.batch < 1 or row.throughput_rps <= 0 or row.p99_ms <= 0:
            raise ValueError(f"profile point {point!r}: batch, p99 and throughput must be > 0")
        rows.append(row)
    if not rows:
        raise ValueError(f"the profile's {precision!r} run has no points")
    return sorted(rows, key=lambda r: r.batch)


def plan(
    *,
    profile: list[ProfileRow],
    target_rps: float,
    p99_target_ms: float,
    utilization: float = DEFAULT_UTILIZATION,
) -> Plan:
    """Replicas and batching for ``target_rps`` within ``p99_target_ms``.

    The batch is the largest whose p99 fits in half the latency target: under dynamic batching
    a request can wait for the batch in flight and then run in its own, so about two batch
    latencies land in its p99. The queue delay is what is left of the budget, capped at the
    time the planned load takes to fill a batch (waiting longer only adds latency).
    """
    if target_rps <= 0 or p99_target_ms <= 0 or not 0 < utilization <= 1:
        raise ValueError("target_rps and p99_target_ms must be > 0, utilization in (0, 1]")
    fitting = [r for r in profile if 2 * r.p99_ms <= p99_target_ms]
    row = max(fitting, key=lambda r: r.batch) if fitting else profile[0]
    replicas = max(1, math.ceil(target_rps / (row.throughput_rps * utilization)))
    per_replica_rps = target_rps / replicas
    fill_ms = (row.batch - 1) / per_replica_rps * 1000.0
    budget_ms = max(0.0, p99_target_ms - 2 * row.p99_ms)
    delay_us = int(min(fill_ms, budget_ms, MAX_QUEUE_DELAY_US / 1000.0) * 1000)
    # Little's law: requests in the server per replica at the planned utilization.
    depth = row.throughput_rps * utilization * row.p50_ms / 1000.0
    return Plan(
        replicas=replicas,
        max_batch_size=row.batch,
        max_queue_delay_us=delay_us,
        capacity_rps=row.throughput_rps,
        p99_ms=row.p99_ms,
        target_queue_depth=max(1.0, round(depth, 1)),
        meets_p99=bool(fitting),
    )
