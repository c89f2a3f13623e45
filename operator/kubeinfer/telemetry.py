"""The operator's own Prometheus metrics (prometheus-client), shared by reconcilers and engines.

Owns: metric names and labels. Serving them over HTTP is the handlers' job (``handlers.main``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from prometheus_client import Counter, Gauge, Histogram

RECONCILE_SECONDS = Histogram(
    "kubeinfer_reconcile_duration_seconds",
    "Time to reconcile one InferenceService.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RECONCILE_ERRORS = Counter(
    "kubeinfer_reconcile_errors_total",
    "Reconciles that raised (retried on the next event or resync).",
)
API_WRITES = Counter(
    "kubeinfer_api_writes_total",
    "Writes this operator made to the API server.",
    ["verb", "kind", "namespace"],
)
MANAGED = Gauge("kubeinfer_managed_inferenceservices", "InferenceServices this operator manages.")

SCALER_SIGNAL = Gauge(
    "kubeinfer_autoscaler_signal",
    "Latest aggregated scaling signal.",
    ["namespace", "inferenceservice", "signal"],
)
SCALER_DESIRED = Gauge(
    "kubeinfer_autoscaler_desired_replicas",
    "Replicas the autoscaler wants.",
    ["namespace", "inferenceservice"],
)
SCALER_DECISIONS = Counter(
    "kubeinfer_autoscaler_decisions_total",
    "Decisions by reason.",
    ["namespace", "inferenceservice", "reason"],
)
SCRAPE_FAILURES = Counter(
    "kubeinfer_autoscaler_scrape_failures_total",
    "Pod metric scrapes that failed or timed out.",
    ["namespace", "inferenceservice"],
)

# The series keyed by InferenceService. A gauge keeps its last value until it is removed, so a
# deleted (or no longer autoscaled) service would stay on the dashboard and keep an alert such
# as "waiting for GPU capacity" firing forever.
PER_SERVICE = (SCALER_SIGNAL, SCALER_DESIRED, SCALER_DECISIONS, SCRAPE_FAILURES)


def forget_service(*, namespace: str, name: str) -> None:
    """Drop every series of one InferenceService (the autoscaler stopped tracking it)."""
    for family in PER_SERVICE:
        family.remove_by_labels({"namespace": namespace, "inferenceservice": name})


@contextlib.contextmanager
def reconcile_timer() -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        RECONCILE_SECONDS.observe(time.perf_counter() - started)
