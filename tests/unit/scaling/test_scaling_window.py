"""Window math: bucketing, averages over spans, pruning, trends, serialisation, aggregation."""

from __future__ import annotations

import json

import pytest

from kubeinfer.core import api
from kubeinfer.core.scaling import signals, window

DEPTH = api.ScalingMetric.QUEUE_DEPTH.value


def sample(t: float, depth: float, *, gpu: float | None = None) -> signals.TickSample:
    return signals.TickSample(
        time=t,
        ready_replicas=2,
        pods_scraped=2,
        queue_depth_total=depth,
        request_rate_total=depth * 10,
        queue_time_ms=None,
        gpu_utilization=gpu,
    )


def filled(values: list[float], *, step: float = 2.0) -> window.SignalWindow:
    w = window.SignalWindow(length_s=60, granularity_s=2)
    for i, v in enumerate(values):
        w.record(sample=sample(i * step, v))
    return w


def test_stable_and_panic_averages() -> None:
    w = filled([10.0] * 27 + [40.0] * 3)  # t = 0..58; the last 3 buckets at 40
    assert w.average(series=DEPTH, now=58, span_s=6) == pytest.approx(40.0)
    assert w.average(series=DEPTH, now=58, span_s=60) == pytest.approx((27 * 10 + 3 * 40) / 30)
    assert w.average(series=api.ScalingMetric.REQUEST_RATE.value, now=58, span_s=6) == 400.0


def test_samples_in_one_bucket_are_averaged() -> None:
    w = window.SignalWindow(length_s=60, granularity_s=2)
    w.record(sample=sample(10.0, 4.0))
    w.record(sample=sample(11.0, 8.0))
    assert w.average(series=DEPTH, now=11, span_s=2) == 6.0


def test_old_buckets_are_pruned_and_missing_is_none() -> None:
    w = filled([5.0] * 10)  # t = 0..18
    w.record(sample=sample(100.0, 7.0))
    assert sorted(w.buckets) == [50]
    assert w.average(series=DEPTH, now=200, span_s=60) is None
    assert w.average(series=window.GPU, now=100, span_s=60) is None  # never recorded


def test_trend_slope_and_fit() -> None:
    w = filled([float(i) for i in range(15)])  # +1 per 2 s
    trend = w.trend(series=DEPTH, now=28, span_s=30)
    assert trend is not None
    assert trend.slope_per_s == pytest.approx(0.5)
    assert trend.r2 == pytest.approx(1.0)
    assert trend.points == 15


def test_flat_or_short_series_is_no_confident_trend() -> None:
    flat = filled([3.0] * 10).trend(series=DEPTH, now=18, span_s=30)
    assert flat is not None and flat.slope_per_s == 0 and flat.r2 == 0
    assert filled([1.0, 2.0]).trend(series=DEPTH, now=2, span_s=30) is None


def test_round_trip_through_json() -> None:
    w = filled([1.0, 2.0, 3.0])
    w.record(sample=sample(6.0, 9.0, gpu=0.5))
    again = window.SignalWindow.from_dict(json.loads(json.dumps(w.to_dict())))
    assert again == w
    assert again.average(series=window.GPU, now=6, span_s=6) == 0.5


def test_aggregate_extrapolates_to_ready_pods() -> None:
    pods = [
        signals.PodSignals(
            pod="a",
            pending_requests=4,
            queue_time_us=1000,
            request_rate=100,
            executing=2,
            gpu_utilization=0.5,
        ),
        signals.PodSignals(
            pod="b",
            pending_requests=2,
            queue_time_us=4000,
            request_rate=300,
            executing=0,
            gpu_utilization=None,
        ),
    ]
    tick = signals.aggregate(pods=pods, ready_replicas=4, now=10)
    assert tick is not None
    assert tick.queue_depth_total == pytest.approx(16.0)  # 8 over 2 pods, 4 ready
    assert tick.request_rate_total == pytest.approx(800.0)
    assert tick.queue_time_ms == pytest.approx(3.25)  # rate-weighted (100*1 + 300*4) / 400
    assert tick.gpu_utilization == 0.5
    assert signals.aggregate(pods=[], ready_replicas=4, now=10) is None
    # Two of the four Ready pods just turned Ready (their first scrape, a baseline): the
    # service's load is what the two others report, not their mean times four.
    fresh = signals.aggregate(pods=pods, ready_replicas=4, now=10, first_scrapes=2)
    assert fresh is not None
    assert fresh.request_rate_total == pytest.approx(400.0)
    assert fresh.queue_depth_total == pytest.approx(8.0)
    # One just Ready, one that did not answer: the silent one is counted at the mean.
    one = signals.aggregate(pods=pods, ready_replicas=4, now=10, first_scrapes=1)
    assert one is not None and one.request_rate_total == pytest.approx(600.0)


def test_offered_adds_the_queues_growth_to_what_was_answered_and_rejected() -> None:
    tick = signals.TickSample(
        time=12.0,
        ready_replicas=2,
        pods_scraped=2,
        queue_depth_total=0.0,
        request_rate_total=100.0,
        failure_rate_total=20.0,
        queue_time_ms=None,
        gpu_utilization=None,
    )
    assert tick.demand == 120.0
    # 40 more queued over the 2 s since the previous tick: 20/s arrived and waits.
    assert signals.offered(tick, queued=50.0, before=(10.0, 10.0)) == pytest.approx(140.0)
    # A backlog drained: answered, but it arrived before.
    assert signals.offered(tick, queued=10.0, before=(10.0, 50.0)) == pytest.approx(100.0)
    # No previous count (a restart, a tick nobody answered): no growth counted.
    assert signals.offered(tick, queued=10.0, before=None) == 120.0
    assert signals.offered(tick, queued=None, before=(10.0, 50.0)) == 120.0
    # Queues that vanished faster than they were answered (pods gone): never below zero.
    assert signals.offered(tick, queued=0.0, before=(10.0, 1000.0)) == 0.0
