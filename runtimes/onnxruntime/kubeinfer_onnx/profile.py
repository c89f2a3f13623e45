"""`kubeinfer-onnx-profile MODEL.onnx`: latency, throughput and memory per batch size and precision.

Owns the measurement (each precision in a fresh child process, so one session's memory never
hides in another's numbers) and the table and JSON output. It runs the model directly with
onnxruntime, not through the server, so the figures are the model's own cost; the serving
overhead on top is what bench/runtime measures. It recommends nothing: the JSON it writes is
the input of `kubeinfer plan` (the operator's ``core.planning``), the one place that turns a
profile into replicas, batching and a scaling target.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import multiprocessing
import pathlib
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from kubeinfer_onnx import cpus

DEFAULT_BATCH_SIZES = (1, 8, 32, 128)

_NUMPY_OF = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Point:
    batch_size: int
    p50_ms: float
    p99_ms: float
    throughput: float  # Inferences (rows) per second, one batch at a time.
    iterations: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Run:
    precision: str
    model_bytes: int
    memory_mb: float  # Resident set growth from loading the session to after the sweep.
    points: list[Point]


def _rss_mb() -> float:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _inputs(session: Any, batch: int, rng: np.random.Generator) -> dict[str, npt.NDArray[Any]]:
    feeds: dict[str, npt.NDArray[Any]] = {}
    for node in session.get_inputs():
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in node.shape]
        if node.shape and not (isinstance(node.shape[0], int) and node.shape[0] > 0):
            dims[0] = batch  # Only a dynamic first dimension is the batch.
        dtype = _NUMPY_OF.get(node.type)
        if dtype is None:
            raise SystemExit(f"input {node.name}: type {node.type} is not supported by profile")
        feeds[node.name] = rng.standard_normal(dims).astype(dtype)
    return feeds


def measure(
    path: str,
    precision: str,
    batch_sizes: Sequence[int],
    threads: int,
    seconds: float,
    min_iterations: int,
) -> Run:
    """One precision in this process (called in a child): load, sweep the batch sizes."""
    import onnxruntime as ort

    model_path = pathlib.Path(path)
    if precision == "int8":
        from kubeinfer_onnx import quantize

        model_path = quantize.quantize_int8(model_path, scratch=pathlib.Path(tempfile.mkdtemp()))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    before = _rss_mb()
    session = ort.InferenceSession(
        str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    batchable = all(
        not (isinstance(n.shape[0], int) and n.shape[0] > 0)
        for n in session.get_inputs()
        if n.shape
    )
    rng = np.random.default_rng(0)
    points = []
    for batch in batch_sizes if batchable else [1]:
        feeds = _inputs(session, batch, rng)
        for _ in range(2):  # Warm-up: first runs allocate arenas and pick kernels.
            session.run(None, feeds)
        latencies: list[float] = []
        started = time.perf_counter()
        while len(latencies) < min_iterations or time.perf_counter() - started < seconds:
            t0 = time.perf_counter()
            session.run(None, feeds)
            latencies.append((time.perf_counter() - t0) * 1000)
        total = time.perf_counter() - started
        points.append(
            Point(
                batch_size=batch,
                p50_ms=float(np.percentile(latencies, 50)),
                p99_ms=float(np.percentile(latencies, 99)),
                throughput=batch * len(latencies) / total,
                iterations=len(latencies),
            )
        )
    return Run(
        precision=precision,
        model_bytes=model_path.stat().st_size,
        memory_mb=_rss_mb() - before,
        points=points,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kubeinfer-onnx-profile", description=__doc__)
    parser.add_argument("model", type=pathlib.Path, help="an .onnx file")
    parser.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)))
    parser.add_argument("--seconds", type=float, default=1.0, help="time per batch size")
    parser.add_argument("--min-iterations", type=int, default=10)
    parser.add_argument(
        "--threads",
        type=int,
        default=cpus.Cpus.read().usable,
        help="intra-op threads (default: the CPU limit, else the cores this process may run on)",
    )
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument(
        "--output",
        type=pathlib.Path,
        help="JSON file (default: <model>.profile.json beside the model)",
    )
    return parser.parse_args(argv)


def render_table(report: dict[str, Any]) -> str:
    lines = [
        f"model {report['model']}  threads {report['threads']}  "
        f"providers {','.join(report['providers'])}",
        f"{'precision':<10}{'batch':>7}{'p50 ms':>10}{'p99 ms':>10}{'infer/s':>12}",
    ]
    for run in report["runs"]:
        for p in run["points"]:
            lines.append(
                f"{run['precision']:<10}{p['batch_size']:>7}{p['p50_ms']:>10.2f}"
                f"{p['p99_ms']:>10.2f}{p['throughput']:>12.0f}"
            )
    for run in report["runs"]:
        lines.append(
            f"memory {run['precision']}: {run['memory_mb']:.1f} MB resident, model file "
            f"{run['model_bytes'] / 1e6:.2f} MB"
        )
    if report.get("fp16") is None:
        lines.append("fp16: not measured (no GPU execution provider)")
    return "\n".join(lines)


def profile_main(argv: Sequence[str] | None = None) -> int:
    import onnxruntime as ort

    args = parse_args(argv)
    if not args.model.is_file():
        print(f"kubeinfer-onnx-profile: {args.model} is not a file", file=sys.stderr)
        return 2
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    precisions = [p for p in args.precisions.split(",") if p]
    runs: list[Run] = []
    # spawn, not fork: a fresh interpreter per precision, so resident memory is the session's.
    context = multiprocessing.get_context("spawn")
    for precision in precisions:
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            runs.append(
                pool.submit(
                    measure,
                    str(args.model.resolve()),
                    precision,
                    batch_sizes,
                    args.threads,
                    args.seconds,
                    args.min_iterations,
                ).result()
            )
    report = {
        "model": str(args.model),
        "threads": args.threads,
        "providers": ["CPUExecutionProvider"],
        "available_providers": list(ort.get_available_providers()),
        "runs": [dataclasses.asdict(run) for run in runs],
        "fp16": None,  # Only meaningful with a GPU execution provider; CPU FP16 is emulated.
    }
    print(render_table(report))
    output = args.output or args.model.with_suffix(".profile.json")
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")
    print(f"next: kubeinfer plan {output} --rps REQUESTS_PER_S --p99-ms P99_TARGET_MS")
    return 0


main = profile_main

if __name__ == "__main__":
    sys.exit(profile_main())
