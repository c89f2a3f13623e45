"""The canary verdict: promote a step, hold, or roll back. Pure: no I/O, no clock.

Owns the judgement made once per analysis interval from kubeinfer-router's per-variant
metrics: the canary fails a check when its error rate is above `max_error_rate` or its p99 is
more than `max_p99_ratio` times the stable variant's; `failure_limit` failed checks (counted
over the whole canary, as Flagger counts them, not only consecutive ones) roll it back; a
passed check promotes one step. Too little canary traffic in a window judges nothing (hold).

Also the arithmetic that turns two snapshots of the router's cumulative counters and latency
histogram into a window: per router pod (`delta`, which survives that router's restart), then
summed over the pods (`window_of`), with Prometheus' `histogram_quantile` rule for the p99.

Who owns what: the router measures (its telemetry module names the series and counts every
answer per variant); the operator judges (this module, moved here from the router so the rule
lives once, beside the loop that acts on it: the packages share no code). ``core.canary`` turns
a verdict into the next weight; ``engines.canary`` reads /metrics and writes status.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Sequence


class Verdict(enum.StrEnum):
    PROMOTE_STEP = "promote-step"
    HOLD = "hold"
    ROLLBACK = "rollback"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Window:
    """One variant over one analysis interval."""

    requests: int
    errors: int
    p99_s: float | None  # None: no latency sample in the window

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Criteria:
    max_error_rate: float  # 0..1
    max_p99_ratio: float  # canary p99 / stable p99
    failure_limit: int  # failed checks before rollback
    min_requests: int = 20  # canary requests a window needs before it is judged


@dataclasses.dataclass(frozen=True, kw_only=True)
class Analysis:
    verdict: Verdict
    failures: int  # failed checks so far, this one included
    reasons: tuple[str, ...]  # sentences, for status and Events


def analyze(*, stable: Window, canary: Window, criteria: Criteria, failures: int) -> Analysis:
    """Judge one interval; `failures` is the count of failed checks before this one."""
    if canary.requests < criteria.min_requests:
        return Analysis(
            verdict=Verdict.HOLD,
            failures=failures,
            reasons=(
                f"The canary served {canary.requests} requests in the window; "
                f"{criteria.min_requests} are needed to judge it.",
            ),
        )
    reasons: list[str] = []
    if canary.error_rate > criteria.max_error_rate:
        reasons.append(
            f"Canary error rate {canary.error_rate:.2%} is above {criteria.max_error_rate:.2%}."
        )
    if (
        canary.p99_s is not None
        and stable.p99_s is not None
        and stable.p99_s > 0
        and stable.requests >= criteria.min_requests
    ):
        ratio = canary.p99_s / stable.p99_s
        if ratio > criteria.max_p99_ratio:
            reasons.append(
                f"Canary p99 {canary.p99_s * 1000:.1f} ms is {ratio:.2f}x stable's "
                f"{stable.p99_s * 1000:.1f} ms, above {criteria.max_p99_ratio:g}x."
            )
    if not reasons:
        return Analysis(
            verdict=Verdict.PROMOTE_STEP,
            failures=failures,
            reasons=(
                f"Canary passed: error rate {canary.error_rate:.2%} over {canary.requests} "
                "requests, p99 within bounds.",
            ),
        )
    failures += 1
    if failures >= criteria.failure_limit:
        reasons.append(f"{failures} failed checks reach the limit of {criteria.failure_limit}.")
        return Analysis(verdict=Verdict.ROLLBACK, failures=failures, reasons=tuple(reasons))
    reasons.append(f"{failures} of {criteria.failure_limit} failed checks allowed.")
    return Analysis(verdict=Verdict.HOLD, failures=failures, reasons=tuple(reasons))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Snapshot:
    """Cumulative per-variant counters at one instant, as the router's /metrics exposes them.

    `buckets` are cumulative counts per upper bound (`le`), the last one +Inf.
    """

    successes: float
    errors: float
    bounds: tuple[float, ...]
    buckets: tuple[float, ...]


def quantile(q: float, bounds: Sequence[float], buckets: Sequence[float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative bucket counts (linear in a bucket)."""
    if not buckets or buckets[-1] <= 0:
        return None
    rank = q * buckets[-1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(bounds, buckets, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # the +Inf bucket: the highest finite bound, as Prometheus
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def delta(before: Snapshot, after: Snapshot) -> Snapshot:
    """What one router pod counted between two snapshots; a counter that went down means
    that router restarted, and then everything since its start is the delta."""
    restarted = after.successes < before.successes or after.errors < before.errors
    base = Snapshot(successes=0, errors=0, bounds=after.bounds, buckets=()) if restarted else before
    base_buckets = base.buckets or (0.0,) * len(after.buckets)
    return Snapshot(
        successes=after.successes - base.successes,
        errors=after.errors - base.errors,
        bounds=after.bounds,
        buckets=tuple(a - b for a, b in zip(after.buckets, base_buckets, strict=True)),
    )


def window_of(deltas: Sequence[Snapshot]) -> Window:
    """One variant's window from each router pod's delta: counts and histogram buckets add
    (every router exposes the same bounds), then one p99 over the sum."""
    bounds = next((d.bounds for d in deltas if d.buckets), ())
    buckets = [0.0] * len(bounds)
    for d in deltas:
        if d.buckets:
            buckets = [a + b for a, b in zip(buckets, d.buckets, strict=True)]
    successes = sum(d.successes for d in deltas)
    errors = sum(d.errors for d in deltas)
    return Window(
        requests=round(successes + errors),
        errors=round(errors),
        p99_s=quantile(0.99, bounds, buckets),
    )


def window_between(before: Snapshot, after: Snapshot) -> Window:
    """The window between two snapshots of one router pod."""
    return window_of([delta(before, after)])
