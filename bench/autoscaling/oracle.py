"""The physical limit: a scaler that knows the future arrivals and the longest cold start.

Owns: the offline provisioning schedule. From the realised arrivals it computes, per second,
the replicas that serve the busiest step within a second either side at 95 % of capacity
(``need``). Each level of that need (replica 1, 2, ...) is an interval set; a replica is
created one (maximum) cold start before each interval so that it is Ready when needed, and
kept across a gap no longer than a cold start (recreating it would cost as much as keeping
it). Summing the levels gives the replica count to ask for at every second. It is bounded by
the cluster's GPUs like everyone else, and it cannot change what is Ready when the run starts.
"""

from __future__ import annotations

import math

import numpy as np
from model import ServiceModel
from sim import View

UTILIZATION = 0.95


def need_per_second(
    arrivals: np.ndarray, *, dt: float, model: ServiceModel, gpus: int
) -> np.ndarray:
    """Replicas each second needs: the busiest step within +-1 s at UTILIZATION x capacity."""
    steps_per_s = round(1.0 / dt)
    n = len(arrivals) // steps_per_s
    peak = (arrivals[: n * steps_per_s] / dt).reshape(n, steps_per_s).max(axis=1)
    padded = np.concatenate(([peak[0]], peak, [peak[-1]]))
    window = np.maximum(np.maximum(padded[:-2], padded[1:-1]), padded[2:])
    need = np.ceil(window / (model.capacity_rps * UTILIZATION)).astype(int)
    return np.asarray(np.clip(need, 1, gpus), dtype=int)


def schedule(need: np.ndarray, *, lead_s: float) -> np.ndarray:
    """Replicas to ask for each second so that ``need`` is Ready in time (levels, see above)."""
    n = len(need)
    lead = math.ceil(lead_s)
    out = np.zeros(n, dtype=int)
    for level in range(1, int(need.max()) + 1):
        on = need >= level
        idx = np.flatnonzero(on)
        if idx.size == 0:
            continue
        # Runs of seconds that need this level.
        breaks = np.flatnonzero(np.diff(idx) > 1)
        starts = np.concatenate(([idx[0]], idx[breaks + 1]))
        ends = np.concatenate((idx[breaks], [idx[-1]])) + 1
        merged: list[list[int]] = []
        for s, e in zip(starts, ends, strict=True):
            if merged and s - merged[-1][1] <= lead:
                merged[-1][1] = int(e)  # keep the replica across a gap shorter than a start
            else:
                merged.append([int(s), int(e)])
        for s, e in merged:
            out[max(0, s - lead) : e] += 1
    return out


class Oracle:
    """Asks each second for what the precomputed schedule says."""

    def __init__(self, *, name: str, desired: np.ndarray) -> None:
        self.name = name
        self.desired = desired

    def tick(self, view: View) -> int | None:
        s = view.second
        if s >= len(self.desired):
            return None
        return int(self.desired[s])
