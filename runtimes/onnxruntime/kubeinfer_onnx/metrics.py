"""Per-model statistics and their Prometheus form, with Triton's metric names and meanings.

One `ModelStats` per served model version is the single record behind both the metrics port
(`render`) and the v2 statistics endpoint (`statistics_document`), so the two never disagree.
Every family is written by hand rather than through prometheus_client: its counters always
gain a `_total` suffix, and Triton's names (which dashboards and the autoscaler read) have none;
and a server of several processes (`workers`) sums its processes' records before rendering,
which plain numbers allow (`snapshot`, `merge`) and prometheus_client's objects do not. Updates
happen on the event loop thread only, so plain ints suffice.

Also rendered here, each from one source: Triton's GPU families (`nv_gpu_*`, from `nvml`
readings taken at scrape time), the execution provider each model version runs on (the fact
the operator's GPUInUse condition reads), and the two gauges of the Gateway API Inference
Extension's model server protocol, so an inference gateway's endpoint picker can route by load.
"""

from __future__ import annotations

import bisect
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from kubeinfer_onnx import nvml

FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")

# Buckets in seconds from 0.5 ms to 10 s: wide enough for a tiny MLP and a big batch alike.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
)


@dataclasses.dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclasses.dataclass(slots=True)
class Histogram:
    """Request latency: a count per LATENCY_BUCKETS bucket (values <= its bound, not yet
    cumulative) plus one for +Inf, and the sum in seconds."""

    counts: list[int] = dataclasses.field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    sum_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum_s += seconds


@dataclasses.dataclass(slots=True)
class BatchStats:
    compute_input: Duration = dataclasses.field(default_factory=Duration)
    compute_infer: Duration = dataclasses.field(default_factory=Duration)
    compute_output: Duration = dataclasses.field(default_factory=Duration)


@dataclasses.dataclass(slots=True, kw_only=True)
class ModelStats:
    """Cumulative counters for one model version, in Triton's statistics vocabulary."""

    model: str
    version: str
    success: Duration = dataclasses.field(default_factory=Duration)
    fail: Duration = dataclasses.field(default_factory=Duration)
    failures: dict[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(FAILURE_REASONS, 0)
    )
    queue: Duration = dataclasses.field(default_factory=Duration)
    compute_input: Duration = dataclasses.field(default_factory=Duration)
    compute_infer: Duration = dataclasses.field(default_factory=Duration)
    compute_output: Duration = dataclasses.field(default_factory=Duration)
    cache_hit: Duration = dataclasses.field(default_factory=Duration)
    cache_miss: Duration = dataclasses.field(default_factory=Duration)
    inference_count: int = 0  # Rows inferred (a batch-8 request counts 8), as Triton counts.
    execution_count: int = 0  # onnxruntime runs; inference_count / execution_count = avg batch.
    last_inference_ms: int = 0
    batches: dict[int, BatchStats] = dataclasses.field(default_factory=dict)
    latency: Histogram = dataclasses.field(default_factory=Histogram)  # Successful requests.
    pending: Callable[[], int] = lambda: 0  # Queued, not yet executing; set by the model.
    running: Callable[[], int] = lambda: 0  # In a batch being executed; set by the model.
    # The execution provider the session runs on, and the --device that was asked for.
    provider: str = ""
    device: str = ""

    def record_success(self, *, duration_ns: int) -> None:
        self.success.add(duration_ns)
        self.latency.observe(duration_ns / 1e9)
        self.last_inference_ms = time.time_ns() // 1_000_000

    def record_failure(self, *, reason: str, duration_ns: int) -> None:
        self.fail.add(duration_ns)
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def record_batch(self, *, rows: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        self.execution_count += 1
        stats = self.batches.setdefault(rows, BatchStats())
        stats.compute_input.add(input_ns)
        stats.compute_infer.add(infer_ns)
        stats.compute_output.add(output_ns)


class Metrics:
    """All models' stats and the GPUs' readings, rendered as Prometheus text.

    `collect` is what the statistics endpoints and the metrics port read: this process's
    records, or, in a server of several processes, every process's records summed (`gather`
    is then set by `workers.Peers`)."""

    def __init__(self, *, gpus: nvml.Gpus | None = None) -> None:
        self.gpus = gpus
        self.models: list[ModelStats] = []
        self.gather: Callable[[list[ModelStats]], Awaitable[list[ModelStats]]] | None = None

    def add_model(self, stats: ModelStats) -> None:
        self.models.append(stats)

    async def collect(self) -> list[ModelStats]:
        if self.gather is None:
            return self.models
        return await self.gather(self.models)

    async def scrape(self) -> bytes:
        return self.render(await self.collect())

    def render(self, models: Sequence[ModelStats] | None = None) -> bytes:
        models = self.models if models is None else models
        readings = self.gpus.read() if self.gpus is not None else []
        text = (
            render_nv(models)
            + render_gpus(readings)
            + render_serving(models)
            + render_latency(models)
        )
        return text.encode()


def select(
    models: Iterable[ModelStats], name: str | None = None, version: str | None = None
) -> list[ModelStats]:
    """The records of one model (every version, or one) or, with no name, all of them."""
    return [
        s
        for s in models
        if (name is None or s.model == name) and (version is None or s.version == version)
    ]


# (name, type, help, value getter). Durations are cumulative microseconds, as in Triton.
_FAMILIES: list[tuple[str, str, str, Callable[[ModelStats], float]]] = [
    (
        "nv_inference_request_success",
        "counter",
        "Number of successful inference requests, all batch sizes",
        lambda s: s.success.count,
    ),
    (
        "nv_inference_count",
        "counter",
        "Number of inferences performed (does not include cached requests)",
        lambda s: s.inference_count,
    ),
    (
        "nv_inference_exec_count",
        "counter",
        "Number of model executions performed (does not include cached requests)",
        lambda s: s.execution_count,
    ),
    (
        "nv_inference_request_duration_us",
        "counter",
        "Cumulative inference request duration in microseconds (includes cached requests)",
        lambda s: (s.success.ns + s.fail.ns) // 1000,
    ),
    (
        "nv_inference_queue_duration_us",
        "counter",
        "Cumulative inference queuing duration in microseconds (includes cached requests)",
        lambda s: s.queue.ns // 1000,
    ),
    (
        "nv_inference_compute_input_duration_us",
        "counter",
        "Cumulative compute input duration in microseconds (does not include cached requests)",
        lambda s: s.compute_input.ns // 1000,
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "counter",
        "Cumulative compute inference duration in microseconds (does not include cached requests)",
        lambda s: s.compute_infer.ns // 1000,
    ),
    (
        "nv_inference_compute_output_duration_us",
        "counter",
        "Cumulative inference compute output duration in microseconds (does not include cached "
        "requests)",
        lambda s: s.compute_output.ns // 1000,
    ),
    (
        "nv_inference_pending_request_count",
        "gauge",
        "Instantaneous number of pending requests awaiting execution per-model.",
        lambda s: s.pending(),
    ),
    (
        "nv_cache_num_hits_per_model",
        "counter",
        "Number of cache hits per model",
        lambda s: s.cache_hit.count,
    ),
    (
        "nv_cache_num_misses_per_model",
        "counter",
        "Number of cache misses per model",
        lambda s: s.cache_miss.count,
    ),
    (
        "nv_cache_hit_duration_per_model",
        "counter",
        "Total cache hit duration per model, in microseconds",
        lambda s: s.cache_hit.ns // 1000,
    ),
    (
        "nv_cache_miss_duration_per_model",
        "counter",
        "Total cache miss (insert + lookup) duration per model, in microseconds",
        lambda s: s.cache_miss.ns // 1000,
    ),
]


def render_nv(models: Iterable[ModelStats]) -> str:
    """Triton-named families in the Prometheus text format (no `_total`, like Triton)."""
    models = list(models)
    lines: list[str] = []
    lines.append(
        "# HELP nv_inference_request_failure Number of failed inference requests, all batch sizes"
    )
    lines.append("# TYPE nv_inference_request_failure counter")
    for stats in models:
        for reason, count in stats.failures.items():
            lines.append(
                f'nv_inference_request_failure{{model="{stats.model}",'
                f'reason="{reason}",version="{stats.version}"}} {count}'
            )
    for name, kind, help_text, value in _FAMILIES:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for stats in models:
            lines.append(
                f'{name}{{model="{stats.model}",version="{stats.version}"}} {value(stats)}'
            )
    return "\n".join(lines) + "\n"


# Triton's GPU families: same names, label (gpu_uuid) and units, so what reads Triton's GPU
# metrics (the autoscaler's veto, dashboards) reads ours.
_GPU_FAMILIES: list[tuple[str, str, Callable[[nvml.GpuReading], float | None]]] = [
    ("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", lambda r: r.utilization),
    ("nv_gpu_memory_total_bytes", "GPU total memory, in bytes", lambda r: r.memory_total_bytes),
    ("nv_gpu_memory_used_bytes", "GPU used memory, in bytes", lambda r: r.memory_used_bytes),
]


def render_gpus(readings: Iterable[nvml.GpuReading]) -> str:
    """nv_gpu_* for each GPU read; nothing at all without GPUs (no series, not zeros)."""
    readings = list(readings)
    if not readings:
        return ""
    lines: list[str] = []
    for name, help_text, value in _GPU_FAMILIES:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        for reading in readings:
            sample = value(reading)
            if sample is not None:
                lines.append(f'{name}{{gpu_uuid="{reading.uuid}"}} {sample}')
    return "\n".join(lines) + "\n"


# The execution provider each model version runs on. A GPU request served on CPU reads
# {device="gpu",provider="CPUExecutionProvider"}; the operator turns it into GPUInUse=False.
EXECUTION_PROVIDER = "kubeinfer_execution_provider"
# The Gateway API Inference Extension's model server protocol: TotalQueuedRequests and
# TotalRunningRequests, gauges for the whole server. The protocol lets a server pick its own
# names if the endpoint picker is told them; these are the picker's default flags
# (--total-queued-requests-metric, --total-running-requests-metric), so it needs no flags.
QUEUED_REQUESTS = "vllm:num_requests_waiting"
RUNNING_REQUESTS = "vllm:num_requests_running"


def render_serving(models: Iterable[ModelStats]) -> str:
    """The execution provider of each model version and the server's queued/running totals."""
    models = list(models)
    lines = [
        f"# HELP {EXECUTION_PROVIDER} 1 per model version, labelled with the onnxruntime "
        "execution provider it runs on and the --device requested",
        f"# TYPE {EXECUTION_PROVIDER} gauge",
    ]
    for stats in models:
        if stats.provider:
            lines.append(
                f'{EXECUTION_PROVIDER}{{device="{stats.device}",model="{stats.model}",'
                f'provider="{stats.provider}",version="{stats.version}"}} 1'
            )
    lines += [
        f"# HELP {QUEUED_REQUESTS} Requests queued for execution, all models (model server "
        "protocol TotalQueuedRequests)",
        f"# TYPE {QUEUED_REQUESTS} gauge",
        f"{QUEUED_REQUESTS} {sum(s.pending() for s in models)}",
        f"# HELP {RUNNING_REQUESTS} Requests in a batch being executed, all models (model "
        "server protocol TotalRunningRequests)",
        f"# TYPE {RUNNING_REQUESTS} gauge",
        f"{RUNNING_REQUESTS} {sum(s.running() for s in models)}",
    ]
    return "\n".join(lines) + "\n"


def statistics_document(models: Iterable[ModelStats]) -> dict[str, Any]:
    """The v2 statistics extension body (Triton's /v2/models/{m}/stats), JSON-ready."""

    def duration(d: Duration) -> dict[str, int]:
        return {"count": d.count, "ns": d.ns}

    return {
        "model_stats": [
            {
                "name": s.model,
                "version": s.version,
                "last_inference": s.last_inference_ms,
                "inference_count": s.inference_count,
                "execution_count": s.execution_count,
                "inference_stats": {
                    "success": duration(s.success),
                    "fail": duration(s.fail),
                    "queue": duration(s.queue),
                    "compute_input": duration(s.compute_input),
                    "compute_infer": duration(s.compute_infer),
                    "compute_output": duration(s.compute_output),
                    "cache_hit": duration(s.cache_hit),
                    "cache_miss": duration(s.cache_miss),
                },
                "batch_stats": [
                    {
                        "batch_size": size,
                        "compute_input": duration(b.compute_input),
                        "compute_infer": duration(b.compute_infer),
                        "compute_output": duration(b.compute_output),
                    }
                    for size, b in sorted(s.batches.items())
                ],
            }
            for s in models
        ]
    }


LATENCY = "kubeinfer_inference_request_duration_seconds"


def render_latency(models: Iterable[ModelStats]) -> str:
    """The request latency histogram (successful requests), for p50/p95/p99."""
    lines = [
        f"# HELP {LATENCY} End-to-end inference request latency (successful requests), "
        "for p50/p95/p99.",
        f"# TYPE {LATENCY} histogram",
    ]
    for stats in models:
        labels = f'model="{stats.model}",version="{stats.version}"'
        cumulative = 0
        for bound, count in zip((*LATENCY_BUCKETS, "+Inf"), stats.latency.counts, strict=True):
            cumulative += count
            lines.append(f'{LATENCY}_bucket{{{labels},le="{bound}"}} {cumulative}')
        lines.append(f"{LATENCY}_count{{{labels}}} {cumulative}")
        lines.append(f"{LATENCY}_sum{{{labels}}} {stats.latency.sum_s!r}")
    return "\n".join(lines) + "\n"


def snapshot(stats: ModelStats) -> dict[str, Any]:
    """One record as JSON-ready data, its gauges read now (what a process sends its peers)."""
    record = {
        field.name: getattr(stats, field.name)
        for field in dataclasses.fields(stats)
        if field.name not in ("pending", "running", "batches", "latency")
    }
    for name, value in record.items():
        if isinstance(value, Duration):
            record[name] = [value.count, value.ns]
    record["pending"] = stats.pending()
    record["running"] = stats.running()
    record["latency"] = [stats.latency.counts, stats.latency.sum_s]
    record["batches"] = [
        [size, [[d.count, d.ns] for d in (b.compute_input, b.compute_infer, b.compute_output)]]
        for size, b in stats.batches.items()
    ]
    return record


# ModelStats' Duration fields (success, queue, compute_*, cache_*...), each summed by `merge`.
_DURATIONS = tuple(f.name for f in dataclasses.fields(ModelStats) if f.type == "Duration")


def merge(groups: Sequence[Sequence[ModelStats | dict[str, Any]]]) -> list[ModelStats]:
    """Each process's records (its own ModelStats or a peer's `snapshot`) summed per model
    version, in the order first seen: counters and gauges add up, the last inference is the
    latest of any process."""
    merged: dict[tuple[str, str], ModelStats] = {}
    gauges: dict[tuple[str, str], list[int]] = {}
    for group in groups:
        for item in group:
            record = item if isinstance(item, dict) else snapshot(item)
            key = (record["model"], record["version"])
            total = merged.get(key)
            if total is None:
                total = merged[key] = ModelStats(
                    model=key[0],
                    version=key[1],
                    provider=record["provider"],
                    device=record["device"],
                )
                gauges[key] = [0, 0]
            for name in _DURATIONS:
                count, ns = record[name]
                getattr(total, name).add(ns, count)
            for reason, count in record["failures"].items():
                total.failures[reason] = total.failures.get(reason, 0) + count
            total.inference_count += record["inference_count"]
            total.execution_count += record["execution_count"]
            total.last_inference_ms = max(total.last_inference_ms, record["last_inference_ms"])
            for size, durations in record["batches"]:
                batch = total.batches.setdefault(int(size), BatchStats())
                for duration, (count, ns) in zip(
                    (batch.compute_input, batch.compute_infer, batch.compute_output),
                    durations,
                    strict=True,
                ):
                    duration.add(ns, count)
            counts, sum_s = record["latency"]
            total.latency.counts = [
                a + b for a, b in zip(total.latency.counts, counts, strict=True)
            ]
            total.latency.sum_s += sum_s
            gauges[key][0] += record["pending"]
            gauges[key][1] += record["running"]
    for key, total in merged.items():
        pending, running = gauges[key]
        total.pending = _constant(pending)
        total.running = _constant(running)
    return list(merged.values())


def _constant(value: int) -> Callable[[], int]:
    return lambda: value
