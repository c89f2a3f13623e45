"""Learn an InferenceService's cold start (pod created -> Ready) from pod timestamps.

Owns: turning (created, ready) timestamp pairs into one look-ahead horizon in seconds. The p90
of the recent starts, not the mean: scaling ahead by a typical start still leaves the slow ones
late, and a too-long horizon only costs a replica a little earlier. Pure; the engine reads the
timestamps from the pods it lists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Starts older than the last RECENT are forgotten: images get cached, nodes change.
RECENT = 20
# A pod that took longer than this was stuck (no GPU, image pull backoff), not cold-starting.
MAX_PLAUSIBLE_S = 1800.0


def durations(pairs: Sequence[tuple[float, float]]) -> list[float]:
    """Start durations in seconds from (created, ready) pairs, dropping implausible ones."""
    return [ready - created for created, ready in pairs if 0 <= ready - created <= MAX_PLAUSIBLE_S]


def learn(*, pairs: Sequence[tuple[float, float]], previous_s: float | None = None) -> float | None:
    """The p90 start time of the most recent ``RECENT`` pairs (in the order given).

    Falls back to ``previous_s`` (the persisted estimate) when no pair is usable.
    """
    starts = durations(pairs)[-RECENT:]
    if not starts:
        return previous_s
    ordered = sorted(starts)
    # Nearest-rank percentile: the smallest value with at least 90 % of the starts at or below.
    rank = max(1, math.ceil(0.9 * len(ordered)))
    return ordered[rank - 1]
