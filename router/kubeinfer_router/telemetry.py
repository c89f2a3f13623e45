"""The router's own Prometheus metrics, on its own registry, served at the router's /metrics.

Owns the metric names and labels an analysis loop and dashboards read:
- kubeinfer_router_requests_total{variant,outcome}: outcome `success` (< 500) or `error`
  (a 5xx from the pod, or the router's 502/504 after it chose that variant), per variant;
- kubeinfer_router_request_duration_seconds{variant}: arrival to answer, held time included;
- kubeinfer_router_upstream_duration_seconds{variant,pod}: the pod's part, per pod;
- kubeinfer_router_overhead_seconds: the router's own part (total - upstream - held);
- kubeinfer_router_decisions_total{reason}: why each request went where it went;
- kubeinfer_router_held_requests and kubeinfer_router_hold_duration_seconds{outcome};
- kubeinfer_router_wake_calls_total{outcome}, kubeinfer_router_wake_seconds (first held
  request to the hook's successful return), kubeinfer_router_in_flight_requests;
- per endpoint, read at scrape time: kubeinfer_router_endpoint_{in_flight,queued,
  service_seconds,routable}{variant,pod}.
Label children are cached on the endpoint and per variant: a `labels()` lookup costs more
than the observation itself, and this runs once per proxied request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import prometheus_client
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kubeinfer_router import picking

# Seconds: 0.5 ms (a tiny model next door) to 2 min (a held request through a cold start).
DURATION_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5,
    1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
)  # fmt: skip
OVERHEAD_BUCKETS = (
    0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.002, 0.005, 0.01, 0.05,
)  # fmt: skip


class VariantStats:
    __slots__ = ("duration", "errors", "successes")

    def __init__(self, duration: Any, successes: Any, errors: Any) -> None:
        self.duration = duration
        self.successes = successes
        self.errors = errors


class _EndpointCollector(Collector):
    def __init__(self, endpoints: Callable[[], list[picking.Endpoint]]) -> None:
        self._endpoints = endpoints

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["variant", "pod"]
        families = {
            "in_flight": GaugeMetricFamily(
                "kubeinfer_router_endpoint_in_flight",
                "Requests this router has at the pod.",
                labels=labels,
            ),
            "queued": GaugeMetricFamily(
                "kubeinfer_router_endpoint_queued",
                "Requests queued at the pod for other clients (last scrape).",
                labels=labels,
            ),
            "service": GaugeMetricFamily(
                "kubeinfer_router_endpoint_service_seconds",
                "Estimated service time: median latency per place in the pod's queue.",
                labels=labels,
            ),
            "routable": GaugeMetricFamily(
                "kubeinfer_router_endpoint_routable",
                "1 when the pod is ready and not draining.",
                labels=labels,
            ),
        }
        for ep in self._endpoints():
            key = [ep.variant, ep.key]
            families["in_flight"].add_metric(key, ep.in_flight)
            families["queued"].add_metric(key, ep.external_queued)
            if ep.service_s is not None:
                families["service"].add_metric(key, ep.service_s)
            families["routable"].add_metric(key, 1.0 if ep.routable else 0.0)
        yield from families.values()


class Telemetry:
    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = prometheus_client.Counter(
            "kubeinfer_router_requests",
            "Requests answered after a variant was chosen, by outcome (error: 5xx).",
            ["variant", "outcome"],
            registry=r,
        )
        self.duration = prometheus_client.Histogram(
            "kubeinfer_router_request_duration_seconds",
            "Arrival at the router to the answer, held time included.",
            ["variant"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.upstream = prometheus_client.Histogram(
            "kubeinfer_router_upstream_duration_seconds",
            "Request sent to the pod until its answer was read.",
            ["variant", "pod"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.overhead = prometheus_client.Histogram(
            "kubeinfer_router_overhead_seconds",
            "The router's own time per proxied request (total - upstream - held).",
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.decisions = prometheus_client.Counter(
            "kubeinfer_router_decisions",
            "Routing decisions by reason.",
            ["reason"],
            registry=r,
        )
        self.held = prometheus_client.Gauge(
            "kubeinfer_router_held_requests",
            "Requests held because no endpoint is ready.",
            registry=r,
        )
        self.hold_duration = prometheus_client.Histogram(
            "kubeinfer_router_hold_duration_seconds",
            "Time requests spent held, by how the hold ended.",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.wakes = prometheus_client.Counter(
            "kubeinfer_router_wake_calls",
            "Calls of the wake hook (scale 0 -> 1), by outcome.",
            ["outcome"],
            registry=r,
        )
        self.wake_latency = prometheus_client.Histogram(
            "kubeinfer_router_wake_seconds",
            "From the first held request of an episode to the wake hook's successful return.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.in_flight = prometheus_client.Gauge(
            "kubeinfer_router_in_flight_requests",
            "Requests being proxied (held ones not included).",
            registry=r,
        )
        self._variants: dict[str, VariantStats] = {}
        self._decisions: dict[str, Any] = {}

    def watch_endpoints(self, endpoints: Callable[[], list[picking.Endpoint]]) -> None:
        self.registry.register(_EndpointCollector(endpoints))

    def variant(self, name: str) -> VariantStats:
        stats = self._variants.get(name)
        if stats is None:
            stats = VariantStats(
                self.duration.labels(name),
                self.requests.labels(name, "success"),
                self.requests.labels(name, "error"),
            )
            self._variants[name] = stats
        return stats

    def upstream_for(self, ep: picking.Endpoint) -> Any:
        if ep.stats is None:
            ep.stats = self.upstream.labels(ep.variant, ep.key)
        return ep.stats

    def decision(self, reason: str) -> None:
        child = self._decisions.get(reason)
        if child is None:
            child = self._decisions[reason] = self.decisions.labels(reason)
        child.inc()

    def render(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)
