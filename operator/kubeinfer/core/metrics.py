"""Parse a serving pod's Prometheus text into raw counters, and two scrapes into PodSignals.

Owns: reading a runtime's metric families (their names come from the runtime catalogue,
``api.RuntimeMetricNames``, Triton's by default), summing across models and versions, and the
counter arithmetic (deltas over the interval, counter resets). Also where each pod's models
compute (the execution provider gauge), kept per pod and summarised for status. No I/O: the
scraping client hands the text in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from prometheus_client import parser

from kubeinfer.core import analysis, api, router
from kubeinfer.core.scaling import signals


@dataclasses.dataclass(frozen=True, kw_only=True)
class RawScrape:
    """One pod's counters and gauges at one instant, summed across models and versions."""

    pending_requests: float = 0.0
    queue_duration_us: float = 0.0
    request_duration_us: float = 0.0
    request_success: float = 0.0
    request_failure: float = 0.0
    # Mean over the pod's GPUs, 0..1; None when the pod exports no GPU metric.
    gpu_utilization: float | None = None
    # The execution provider the pod's models run on (CPU if any model runs there); None when
    # the runtime does not say.
    execution_provider: str | None = None


def _family_name(name: str) -> str:
    # prometheus_client strips `_total` from counter family names; compare on the stripped form.
    return name.removesuffix("_total")


TRITON = api.RuntimeMetricNames()
# onnxruntime's CPU provider: a model on it computes on CPU whatever the pod was given.
CPU_PROVIDER = "CPUExecutionProvider"


def parse_metrics(text: str, *, names: api.RuntimeMetricNames = TRITON) -> RawScrape:
    """Parse Prometheus text exposition with a runtime's metric names; absent metrics read as
    zero (GPU: None).

    Raises ValueError on text the Prometheus parser rejects.
    """
    wanted = {
        _family_name(names.queue_depth): "pending_requests",
        _family_name(names.queue_time): "queue_duration_us",
        _family_name(names.request_duration): "request_duration_us",
        _family_name(names.request_count): "request_success",
        _family_name(names.request_failure): "request_failure",
    }
    gpu_family = _family_name(names.gpu_utilization)
    provider_family = _family_name(names.execution_provider) if names.execution_provider else None
    sums: dict[str, float] = dict.fromkeys(wanted.values(), 0.0)
    gpu_values: list[float] = []
    providers: set[str] = set()
    for family in parser.text_string_to_metric_families(text):
        if family.name == provider_family:
            providers |= {
                s.labels["provider"] for s in family.samples if s.value and s.labels.get("provider")
            }
            continue
        field = wanted.get(family.name)
        if field is None and family.name != gpu_family:
            continue
        for sample in family.samples:
            # Skip the `_created` timestamps the client synthesises for counters.
            if sample.name not in (family.name, family.name + "_total"):
                continue
            if field is not None:
                sums[field] += float(sample.value)
            else:
                gpu_values.append(float(sample.value) * names.gpu_utilization_scale)
    gpu = min(1.0, max(0.0, sum(gpu_values) / len(gpu_values))) if gpu_values else None
    # One model on CPU is enough to make the pod a CPU pod for the GPUInUse condition.
    provider = CPU_PROVIDER if CPU_PROVIDER in providers else min(providers) if providers else None
    return RawScrape(gpu_utilization=gpu, execution_provider=provider, **sums)


# kubeinfer-router's families (core/router.py names them), as the parser names them.
_ROUTER_FAMILIES = {
    _family_name(router.REQUESTS_METRIC): "requests_total",
    _family_name(router.HELD_METRIC): "held",
}


def parse_router_metrics(texts: list[str]) -> signals.RouterSignals:
    """The router's request counter and held gauge, summed over its pods' pages.

    Raises ValueError on text the Prometheus parser rejects.
    """
    sums = dict.fromkeys(_ROUTER_FAMILIES.values(), 0.0)
    for text in texts:
        for family in parser.text_string_to_metric_families(text):
            field = _ROUTER_FAMILIES.get(family.name)
            if field is None:
                continue
            for sample in family.samples:
                if sample.name in (family.name, family.name + "_total"):
                    sums[field] += float(sample.value)
    return signals.RouterSignals(**sums)


def parse_router_variants(texts: list[str]) -> dict[str, analysis.Snapshot]:
    """Per variant: the router's cumulative answers (success, error) and latency histogram,
    summed over the pages given (the canary engine gives one router pod's page at a time, so
    that a window is taken per router: ``analysis.delta``).

    Raises ValueError on text the Prometheus parser rejects.
    """
    requests = _family_name(router.REQUESTS_METRIC)
    duration = _family_name(router.DURATION_METRIC)
    counts: dict[str, dict[str, float]] = {}
    buckets: dict[str, dict[float, float]] = {}
    for text in texts:
        for family in parser.text_string_to_metric_families(text):
            if family.name == requests:
                for sample in family.samples:
                    if sample.name in (family.name, family.name + "_total"):
                        by_outcome = counts.setdefault(sample.labels.get("variant", ""), {})
                        outcome = sample.labels.get("outcome", "")
                        by_outcome[outcome] = by_outcome.get(outcome, 0.0) + float(sample.value)
            elif family.name == duration:
                for sample in family.samples:
                    if sample.name == family.name + "_bucket":
                        le = float(sample.labels["le"])
                        per = buckets.setdefault(sample.labels.get("variant", ""), {})
                        per[le] = per.get(le, 0.0) + float(sample.value)
    out: dict[str, analysis.Snapshot] = {}
    for variant in set(counts) | set(buckets):
        bounds = tuple(sorted(buckets.get(variant, {})))
        outcomes = counts.get(variant, {})
        out[variant] = analysis.Snapshot(
            successes=outcomes.get("success", 0.0),
            errors=outcomes.get("error", 0.0),
            bounds=bounds,
            buckets=tuple(buckets[variant][b] for b in bounds) if bounds else (),
        )
    return out


def pod_providers(
    previous: Mapping[str, str], scrapes: Mapping[str, RawScrape | None]
) -> dict[str, str]:
    """Each scraped pod's execution provider: a pod whose scrape failed keeps its last one,
    a pod no longer scraped (gone or not Ready) is dropped."""
    out: dict[str, str] = {}
    for pod, raw in scrapes.items():
        if raw is None:
            if pod in previous:
                out[pod] = previous[pod]
        elif raw.execution_provider is not None:
            out[pod] = raw.execution_provider
    return out


def provider_use(providers: Mapping[str, str]) -> list[api.ProviderUse]:
    """The per-pod providers summarised for status: pods per provider, one pod named each.

    A summary rather than a pod map keeps status small at any replica count, and a list is
    replaced whole by a merge patch, so a provider no pod uses any more disappears.
    """
    pods: dict[str, list[str]] = {}
    for pod, provider in providers.items():
        pods.setdefault(provider, []).append(pod)
    return [
        api.ProviderUse(provider=provider, pods=len(names), example=min(names))
        for provider, names in sorted(pods.items())
    ]


def _delta(current: float, previous: float) -> float:
    # A counter that went down was reset (the server restarted): it counts from zero again.
    return current - previous if current >= previous else current


def pod_signals(
    *,
    pod: str,
    previous: RawScrape | None,
    previous_time: float | None,
    current: RawScrape,
    current_time: float,
) -> signals.PodSignals | None:
    """Turn two successive scrapes of one pod into its signals over the interval between them.

    A pod's first scrape (no previous one) is only a baseline: None. Its gauges alone would
    read as a pod executing nothing, and the first tick after an operator start (every pod's
    first scrape) would then see the service idle and halve it.
    """
    interval = current_time - previous_time if previous_time is not None else 0.0
    if previous is None or interval <= 0:
        return None
    completed = _delta(current.request_success, previous.request_success)
    failed = _delta(current.request_failure, previous.request_failure)
    queue_us = _delta(current.queue_duration_us, previous.queue_duration_us)
    request_us = _delta(current.request_duration_us, previous.request_duration_us)
    queue_time_us = queue_us / completed if completed > 0 else None
    # Little's law on the part of a request's life spent executing: busy time / interval.
    executing = max(0.0, request_us - queue_us) / 1e6 / interval
    return signals.PodSignals(
        pod=pod,
        pending_requests=current.pending_requests,
        queue_time_us=queue_time_us,
        request_rate=completed / interval,
        executing=executing,
        gpu_utilization=current.gpu_utilization,
        failure_rate=failed / interval,
    )


def queued(scrapes: Mapping[str, RawScrape | None]) -> float | None:
    """Requests queued on the Ready pods now: the pending gauge summed over the pods that
    answered (a first scrape's gauge counts: only counters need a baseline), at the answering
    pods' mean for any that did not; None when none answered."""
    answered = [raw.pending_requests for raw in scrapes.values() if raw is not None]
    if not answered:
        return None
    return sum(answered) * len(scrapes) / len(answered)


class Baselines:
    """Each pod's previous scrape, so that two successive scrapes become its signals.

    The autoscaler's engine and bench/autoscaling both feed it one tick's scrapes; a pod's
    first scrape is only its baseline, and a pod that is gone loses its baseline (a reused
    name must never yield a delta against another pod's counters).
    """

    def __init__(self) -> None:
        self._previous: dict[str, tuple[RawScrape, float]] = {}

    def signals(
        self, scrapes: Mapping[str, RawScrape | None], now: float
    ) -> list[signals.PodSignals]:
        """Signals of the pods scraped at ``now``; None is a pod whose scrape failed this tick
        (it keeps its baseline, and counts as no data)."""
        out: list[signals.PodSignals] = []
        for pod, raw in scrapes.items():
            if raw is None:
                continue
            prev = self._previous.get(pod)
            signal = pod_signals(
                pod=pod,
                previous=prev[0] if prev else None,
                previous_time=prev[1] if prev else None,
                current=raw,
                current_time=now,
            )
            if signal is not None:
                out.append(signal)
            self._previous[pod] = (raw, now)
        for gone in set(self._previous) - set(scrapes):
            del self._previous[gone]
        return out

    def first_scrapes(self, scrapes: Mapping[str, RawScrape | None]) -> int:
        """How many of ``scrapes`` answered with no baseline to compare against yet (a pod
        just Ready, or every pod after an operator start). Read it before ``signals``, which
        makes these answers the baselines."""
        return sum(
            1 for pod, raw in scrapes.items() if raw is not None and pod not in self._previous
        )

    def forget(self, pod: str) -> None:
        self._previous.pop(pod, None)
