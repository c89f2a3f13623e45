"""Plan a starting point from a ``kubeinfer profile`` result: replicas and batching settings.

Owns: parsing the profile JSON into typed rows (tolerantly) and the sizing arithmetic. Pure:
``planning_cli.py`` reads the file and prints.

Expected profile shape (extra keys are ignored)::

    {"model": "resnet50",
     "results": [
       {"batch": 1, "latency_ms": {"p50": 8.6, "p99": 12.9}, "throughput_rps": 116.3},
       {"batch": 8, "latency_ms": {"p50": 12.8, "p99": 19.2}, "throughput_rps": 625.0}]}

Also accepted: a bare list of rows; ``batches`` instead of ``results``; ``batch_size`` for
``batch``; flat ``p50_ms``/``p99_ms`` or ``latency_p50_ms``/``latency_p99_ms``; ``throughput``.
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


def _number(row: Mapping[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = row.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def parse_profile(data: Any) -> list[ProfileRow]:
    """Typed rows sorted by batch size. Raises ValueError when no usable row is present."""
    rows_data = data
    if isinstance(data, Mapping):
        rows_data = data.get("results", data.get("batches", []))
    if not isinstance(rows_data, list):
        raise ValueError("profile has no list of results")
    rows: list[ProfileRow] = []
    for raw in rows_data:
        if not isinstance(raw, Mapping):
            continue
        latency = raw.get("latency_ms")
        latency = latency if isinstance(latency, Mapping) else {}
        batch = _number(raw, "batch", "batch_size")
        p50 = _number(latency, "p50") or _number(raw, "p50_ms", "latency_p50_ms")
        p99 = _number(latency, "p99") or _number(raw, "p99_ms", "latency_p99_ms")
        rps = _number(raw, "throughput_rps", "throughput")
        if batch is None or p99 is None or rps is None or batch < 1 or rps <= 0:
            continue
        rows.append(
            ProfileRow(
                batch=int(batch),
                p50_ms=p50 if p50 is not None else p99,
                p99_ms=p99,
                throughput_rps=rps,
            )
        )
    if not rows:
        raise ValueError("profile has no row with batch, p99 latency and throughput")
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
