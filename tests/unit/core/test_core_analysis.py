"""analysis: the canary verdict table, and windows from two snapshots of the router's metrics."""

from __future__ import annotations

import math

import pytest

from kubeinfer.core import analysis

V = analysis.Verdict
CRITERIA = analysis.Criteria(max_error_rate=0.01, max_p99_ratio=1.5, failure_limit=3)


def window(requests: int, errors: int = 0, p99_ms: float | None = 10.0) -> analysis.Window:
    return analysis.Window(
        requests=requests, errors=errors, p99_s=None if p99_ms is None else p99_ms / 1000
    )


@pytest.mark.parametrize(
    ("stable", "canary", "failures", "verdict", "after"),
    [
        (window(1000), window(100), 0, V.PROMOTE_STEP, 0),
        (window(1000), window(100, errors=1), 0, V.PROMOTE_STEP, 0),  # 1 % is not above 1 %
        (window(1000), window(100, errors=5), 0, V.HOLD, 1),  # 5 % errors: a failed check
        (window(1000), window(100, errors=5), 1, V.HOLD, 2),
        (window(1000), window(100, errors=5), 2, V.ROLLBACK, 3),  # the third failed check
        (window(1000), window(100, p99_ms=16.0), 0, V.HOLD, 1),  # 1.6x stable's p99
        (window(1000), window(100, p99_ms=15.0), 0, V.PROMOTE_STEP, 0),  # 1.5x is allowed
        (window(1000), window(10, errors=10), 2, V.HOLD, 2),  # too few requests to judge
        (window(5, p99_ms=1.0), window(100, p99_ms=50.0), 0, V.PROMOTE_STEP, 0),  # stable thin
        (window(1000, p99_ms=None), window(100, p99_ms=50.0), 0, V.PROMOTE_STEP, 0),
        (window(1000), window(100, errors=3, p99_ms=30.0), 2, V.ROLLBACK, 3),
    ],
)
def test_verdicts(
    stable: analysis.Window, canary: analysis.Window, failures: int, verdict: V, after: int
) -> None:
    result = analysis.analyze(stable=stable, canary=canary, criteria=CRITERIA, failures=failures)
    assert (result.verdict, result.failures) == (verdict, after), result.reasons
    assert result.reasons and all(r.endswith(".") for r in result.reasons)


def test_a_canary_with_5_percent_errors_is_rolled_back_after_failure_limit_intervals() -> None:
    failures, verdicts = 0, []
    for _ in range(5):
        result = analysis.analyze(
            stable=window(900), canary=window(100, errors=5), criteria=CRITERIA, failures=failures
        )
        failures = result.failures
        verdicts.append(result.verdict)
        if result.verdict is V.ROLLBACK:
            break
    assert verdicts == [V.HOLD, V.HOLD, V.ROLLBACK]


BOUNDS = (0.01, 0.02, 0.05, math.inf)


@pytest.mark.parametrize(
    ("buckets", "q", "expected"),
    [
        ((0, 0, 0, 0), 0.99, None),
        ((100, 100, 100, 100), 0.5, 0.005),  # all in the first bucket: linear from 0
        ((50, 100, 100, 100), 0.75, 0.015),
        ((0, 0, 100, 100), 0.99, 0.0497),
        ((0, 0, 0, 10), 0.99, 0.05),  # only +Inf: the highest finite bound, as Prometheus does
    ],
)
def test_quantile_follows_histogram_quantile(
    buckets: tuple[float, ...], q: float, expected: float | None
) -> None:
    got = analysis.quantile(q, BOUNDS, buckets)
    assert got == (None if expected is None else pytest.approx(expected))


def test_window_between_snapshots_and_across_a_router_restart() -> None:
    before = analysis.Snapshot(successes=100, errors=2, bounds=BOUNDS, buckets=(90, 100, 102, 102))
    after = analysis.Snapshot(successes=300, errors=12, bounds=BOUNDS, buckets=(90, 290, 312, 312))
    w = analysis.window_between(before, after)
    assert (w.requests, w.errors) == (210, 10)
    assert w.p99_s == pytest.approx(0.02 + 0.03 * (0.99 * 210 - 190) / 20)
    restarted = analysis.Snapshot(successes=50, errors=0, bounds=BOUNDS, buckets=(50, 50, 50, 50))
    w = analysis.window_between(after, restarted)
    assert (w.requests, w.errors) == (50, 0)


def test_a_window_over_two_routers_one_restarted_and_one_new() -> None:
    # Router a counted 210 (10 errors) since the last check; router b restarted and counted
    # 50 since; router c is new and counted 40 (all slow). The sum is the window, never the
    # whole history of a router that restarted while the other kept counting.
    a0 = analysis.Snapshot(successes=100, errors=2, bounds=BOUNDS, buckets=(90, 100, 102, 102))
    a1 = analysis.Snapshot(successes=300, errors=12, bounds=BOUNDS, buckets=(90, 290, 312, 312))
    b0 = analysis.Snapshot(successes=9000, errors=900, bounds=BOUNDS, buckets=(0, 0, 0, 9900))
    b1 = analysis.Snapshot(successes=50, errors=0, bounds=BOUNDS, buckets=(50, 50, 50, 50))
    c1 = analysis.Snapshot(successes=40, errors=0, bounds=BOUNDS, buckets=(0, 0, 0, 40))
    empty = analysis.Snapshot(successes=0, errors=0, bounds=(), buckets=())
    w = analysis.window_of(
        [analysis.delta(a0, a1), analysis.delta(b0, b1), analysis.delta(empty, c1)]
    )
    assert (w.requests, w.errors) == (300, 10)
    # Buckets add (a: 0/190/210/210, b: 50 each, c: 40 in +Inf); c's slow 40 put the p99
    # above the last finite bound.
    assert w.p99_s == analysis.quantile(0.99, BOUNDS, (50, 240, 260, 300)) == BOUNDS[-2]
    assert analysis.window_of([]) == analysis.Window(requests=0, errors=0, p99_s=None)
