"""Per-pod signals and the per-tick aggregate the windows record.

Owns: the shape of what one scrape of one pod tells the autoscaler (``PodSignals``), the
service-wide sample of one tick (``TickSample``), and how pods are aggregated into it. Turning
Prometheus text into ``PodSignals`` is ``core/metrics.py``'s job; keeping samples over time is
``window.py``'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from kubeinfer.core import api


@dataclasses.dataclass(frozen=True, kw_only=True)
class PodSignals:
    """What one pod's metrics say over one scrape interval."""

    pod: str
    # Requests queued and not yet executing (Triton's gauge), at scrape time.
    pending_requests: float
    # Average queue time per request completed in the interval, microseconds; None if none did.
    queue_time_us: float | None
    # Completed requests per second over the interval.
    request_rate: float
    # Requests executing on average over the interval (Little's law on compute time).
    executing: float
    # GPU utilization 0..1, or None when the pod does not report it.
    gpu_utilization: float | None = None
    # Failed requests per second over the interval.
    failure_rate: float = 0.0

    @property
    def in_flight(self) -> float:
        """Requests queued or executing: the QueueDepth signal."""
        return self.pending_requests + self.executing


@dataclasses.dataclass(frozen=True, kw_only=True)
class RouterSignals:
    """What kubeinfer-router's /metrics say at one scrape (summed over its pods): demand that
    reaches the service even while it has no replica to report it."""

    # Requests the router has answered, every variant and outcome (a counter).
    requests_total: float
    # Requests held now, waiting for a Ready replica (a gauge).
    held: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class TickSample:
    """One tick's service-wide signals, extrapolated from the pods that answered to all ready.

    Totals are extrapolated (mean per scraped pod * ready pods), as Knative does, so a pod that
    timed out does not read as zero load and cause a scale-down.
    """

    time: float
    ready_replicas: int
    pods_scraped: int
    queue_depth_total: float
    request_rate_total: float
    # Failed (rejected included) requests per second: with request_rate_total, the offered
    # demand, which the answered rate alone under-reads once the queue is full.
    failure_rate_total: float = 0.0
    # Request-weighted mean queue time, milliseconds; None when no request completed.
    queue_time_ms: float | None
    gpu_utilization: float | None

    def value(self, metric: api.ScalingMetric) -> float | None:
        """The value the windows keep for a metric: a total, or the mean queue time."""
        if metric is api.ScalingMetric.QUEUE_DEPTH:
            return self.queue_depth_total
        if metric is api.ScalingMetric.REQUEST_RATE:
            return self.request_rate_total
        return self.queue_time_ms

    @property
    def demand(self) -> float:
        """Requests answered plus failed per second (a full queue rejects): what left the
        service this tick. ``offered`` adds what the queues gained, the arrivals."""
        return self.request_rate_total + self.failure_rate_total


def offered(
    sample: TickSample, *, queued: float | None, before: tuple[float, float] | None
) -> float:
    """Requests that arrived per second since the previous tick: answered + failed, plus the
    growth of the requests queued on the Ready pods (``queued`` now, ``before`` = (time,
    queued) at the previous tick that had one; None: count no growth).

    Answered + failed alone reads a backlog when it is answered, not when it arrived: during
    a cold start the queues fill and it under-reads, and once new replicas are Ready they
    drain the backlog at their full capacity and it over-reads (bench/realscale/NOTES.md,
    "the same day twice"). The burst history and the forecast both record this demand, so
    the over-read was kept as headroom for the whole burst history and asked for again by
    the next period's forecast. A 503 that a client retries still counts once per try: only
    the client knows a retry from a new request. Counted service-wide, not per pod: which
    pod holds a queued request (a new one, one about to go) does not change what arrived.
    """
    if queued is None or before is None or sample.time <= before[0]:
        return sample.demand
    # Never below zero: a queue that shrank faster than it was answered lost pods, not load.
    return max(0.0, sample.demand + (queued - before[1]) / (sample.time - before[0]))


def aggregate(
    *, pods: Sequence[PodSignals], ready_replicas: int, now: float, first_scrapes: int = 0
) -> TickSample | None:
    """Combine one tick's pod signals; None when no pod answered (the tick has no data).

    ``first_scrapes``: Ready pods that answered this tick for the first time (a baseline, no
    rates yet). They are not extrapolated onto: a pod just Ready has had almost none of the
    traffic the others report, and the service's totals are what the others report. Only a
    pod that did not answer (slow, perhaps overloaded) is counted at the others' mean. Without
    this, the tick on which new replicas turn Ready read the old ones' load times
    (ready / old): a scale-up from 3 to 8 saw 2.7x the demand, which the burst history and
    the next period's forecast then kept (bench/realscale/NOTES.md).
    """
    if not pods:
        return None
    scale = max(ready_replicas - first_scrapes, len(pods)) / len(pods)
    queue_depth = sum(p.in_flight for p in pods) * scale
    rate = sum(p.request_rate for p in pods) * scale
    failures = sum(p.failure_rate for p in pods) * scale
    timed = [(p.queue_time_us, p.request_rate) for p in pods if p.queue_time_us is not None]
    queue_time_ms: float | None = None
    if timed:
        weight = sum(r for _, r in timed)
        if weight > 0:
            queue_time_ms = sum(q * r for q, r in timed) / weight / 1000.0
        else:
            queue_time_ms = sum(q for q, _ in timed) / len(timed) / 1000.0
    gpus = [p.gpu_utilization for p in pods if p.gpu_utilization is not None]
    return TickSample(
        time=now,
        ready_replicas=ready_replicas,
        pods_scraped=len(pods),
        queue_depth_total=queue_depth,
        request_rate_total=rate,
        failure_rate_total=failures,
        queue_time_ms=queue_time_ms,
        gpu_utilization=sum(gpus) / len(gpus) if gpus else None,
    )
