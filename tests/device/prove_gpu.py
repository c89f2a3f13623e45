"""Prove the ONNX server's GPU path on this machine; tests/device/run.sh runs it in its venv.

Checks, each printed and kept in <results>/summary.json:
1. provider: `kubeinfer-onnx-server --device gpu`, on a memory-bound model built here, runs it
   on TensorRT or CUDA (its kubeinfer_execution_provider gauge, read back from the session);
2. GPU metrics: nv_gpu_utilization, nv_gpu_memory_used_bytes and nv_gpu_memory_total_bytes
   with Triton's gpu_uuid label, memory non-zero at rest, utilization non-zero under load;
3. the veto: the operator's own parsing (kubeinfer.core.metrics) of the pages scraped under
   load, fed to its pure scaling step (kubeinfer.core.scaling.step) at 4 replicas and a target
   the load is far below: without the veto it scales down; with gpuUtilizationVeto it holds
   (reason GPUVeto), because the GPU is busy.

`--rehearse` runs the same steps on CPU (`--device cpu`, a small model) and checks what is
true there: no GPU series at all, and a veto that cannot act without a GPU signal. It is how
the script itself is tested on machines without a GPU (tests/integration/runtime).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import aiohttp
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from prometheus_client.parser import text_string_to_metric_families

from kubeinfer.core import api, metrics
from kubeinfer.core.scaling import decide, policy, signals, state, step, window
from kubeinfer_onnx import metrics as onnx_metrics

MODEL = "gpuprove"
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
CURRENT_REPLICAS = 4


@dataclasses.dataclass
class Check:
    name: str
    ok: bool
    detail: str


def build_model(path: pathlib.Path, *, inputs: int, width: int, layers: int) -> None:
    """[batch, inputs] -> width -> `layers` x (width x width, Tanh) -> 16, one shared weight.

    At small batches each layer reads the whole width x width weight from GPU memory (it does
    not fit in L2 at 8192), so a batch keeps the GPU's kernels busy for milliseconds however
    few rows it has: utilization is high under load without gigabytes of model.
    """
    rng = np.random.default_rng(0)
    first = (rng.standard_normal((inputs, width)) / np.sqrt(inputs)).astype(np.float32)
    shared = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    last = (rng.standard_normal((width, 16)) / np.sqrt(width)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["INPUT0", "w_in"], ["h0"])]
    for layer in range(layers):
        nodes += [
            helper.make_node("Tanh", [f"h{layer}"], [f"t{layer}"]),
            helper.make_node("MatMul", [f"t{layer}", "w"], [f"h{layer + 1}"]),
        ]
    nodes.append(helper.make_node("MatMul", [f"h{layers}", "w_out"], ["OUTPUT0"]))
    graph = helper.make_graph(
        nodes,
        MODEL,
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", inputs])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 16])],
        initializer=[
            numpy_helper.from_array(first, "w_in"),
            numpy_helper.from_array(shared, "w"),
            numpy_helper.from_array(last, "w_out"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    (path.parent.parent / "config.json").write_text(json.dumps({"max_batch_size": 64}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {
        f.name: [(dict(s.labels), float(s.value)) for s in f.samples]
        for f in text_string_to_metric_families(text)
    }


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
        return resp.status, await resp.text()


async def wait_ready(
    session: aiohttp.ClientSession, base: str, proc: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + 600  # a TensorRT engine build can take minutes
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            if (await get(session, f"{base}/v2/health/ready"))[0] == 200:
                return
        await asyncio.sleep(0.5)
    raise RuntimeError("the server was not ready within 600 s")


async def drive(
    session: aiohttp.ClientSession,
    infer_url: str,
    metrics_url: str,
    *,
    inputs: int,
    concurrency: int,
    seconds: float,
) -> tuple[dict[str, float], list[tuple[float, str]]]:
    """`concurrency` clients for `seconds`, scraping /metrics every second meanwhile."""
    body = {
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [1, inputs], "data": [0.5] * inputs}
        ]
    }
    counts = {"ok": 0, "failed": 0}
    stop = time.monotonic() + seconds
    pages: list[tuple[float, str]] = []

    async def client() -> None:
        while time.monotonic() < stop:
            try:
                async with session.post(infer_url, json=body) as resp:
                    await resp.read()
                    counts["ok" if resp.status == 200 else "failed"] += 1
            except (aiohttp.ClientError, TimeoutError):
                counts["failed"] += 1

    async def scraper() -> None:
        while time.monotonic() < stop:
            await asyncio.sleep(1.0)
            pages.append((time.monotonic(), (await get(session, metrics_url))[1]))

    started = time.monotonic()
    await asyncio.gather(scraper(), *(client() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    return {**counts, "seconds": elapsed, "rps": counts["ok"] / elapsed}, pages


def pod_signals(pages: list[tuple[float, str]]) -> list[signals.PodSignals]:
    """The operator's parsing of each scraped page into the pod's signals, scrape to scrape."""
    baselines = metrics.Baselines()
    out: list[signals.PodSignals] = []
    for at, text in pages:
        out += baselines.signals({"pod-0": metrics.parse_metrics(text)}, at)
    return out


def decision(
    pods: list[signals.PodSignals], *, veto: float | None, target: float
) -> decide.ScaleResult:
    """The operator's pure step at 4 replicas, the window filled with these pods' signals
    replayed every 2 s (one Ready pod scraped, extrapolated to the four, as the engine does)."""
    pol = policy.from_spec(
        api.ScalingSpec(
            min_replicas=1,
            max_replicas=8,
            target=target,
            scale_down_delay_seconds=0,
            gpu_utilization_veto=veto,
        )
    )
    replayed = (pods * (1 + 40 // max(1, len(pods))))[:40]
    win = window.SignalWindow.for_policy(pol)
    for tick, pod in enumerate(replayed[:-1]):
        sample = signals.aggregate(pods=[pod], ready_replicas=CURRENT_REPLICAS, now=2.0 * tick)
        assert sample is not None
        win.record(sample=sample)
    now = 2.0 * (len(replayed) - 1)
    seen = step.Observation(
        replicas=decide.Replicas(current=CURRENT_REPLICAS, ready=CURRENT_REPLICAS),
        pods=[replayed[-1]],
    )
    memory = step.Memory(state=state.ScalerState(), window=win)
    return step.step(pol, seen, memory, now).result


async def prove(args: argparse.Namespace, results: pathlib.Path) -> list[Check]:
    checks: list[Check] = []
    summary: dict[str, Any] = {
        "mode": "rehearse (CPU)" if args.rehearse else "gpu",
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
    }
    with tempfile.TemporaryDirectory(prefix="kubeinfer-device-") as tmp:
        repo = pathlib.Path(tmp) / "repo"
        build_model(
            repo / MODEL / "1" / "model.onnx",
            inputs=args.inputs,
            width=args.width,
            layers=args.layers,
        )
        ports = [free_port() for _ in range(3)]
        log = (results / "server.log").open("wb")
        command = [
            sys.executable,
            "-m",
            "kubeinfer_onnx.server",
            f"--model-repository={repo}",
            "--address=127.0.0.1",
            f"--http-port={ports[0]}",
            f"--grpc-port={ports[1]}",
            f"--metrics-port={ports[2]}",
            f"--device={'cpu' if args.rehearse else 'gpu'}",
        ]
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ)
        base, metrics_url = f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[2]}/metrics"
        try:
            timeout = aiohttp.ClientTimeout(total=600)
            connector = aiohttp.TCPConnector(limit=args.concurrency + 4)
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
                await wait_ready(session, base, proc)
                checks += await _run_checks(args, session, base, metrics_url, summary)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
    summary["checks"] = [dataclasses.asdict(c) for c in checks]
    summary["passed"] = all(c.ok for c in checks)
    (results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return checks


async def _run_checks(
    args: argparse.Namespace,
    session: aiohttp.ClientSession,
    base: str,
    metrics_url: str,
    summary: dict[str, Any],
) -> list[Check]:
    checks: list[Check] = []
    infer_url = f"{base}/v2/models/{MODEL}/infer"
    # One request first: TensorRT builds its engine on the first run, not at load.
    first, _ = await drive(
        session, infer_url, metrics_url, inputs=args.inputs, concurrency=1, seconds=0.1
    )
    _, rest_text = await get(session, metrics_url)
    rest = families(rest_text)
    providers = sorted(
        {labels["provider"] for labels, _ in rest.get(onnx_metrics.EXECUTION_PROVIDER, [])}
    )
    summary["provider"] = providers
    if args.rehearse:
        checks.append(
            Check("provider", providers == ["CPUExecutionProvider"], f"runs on {providers}")
        )
    else:
        on_gpu = bool(providers) and all(p in GPU_PROVIDERS for p in providers)
        checks.append(
            Check(
                "provider",
                on_gpu,
                f"--device gpu runs on {providers}"
                + ("" if on_gpu else ": the GPU path is not working, see server.log"),
            )
        )
    config = json.loads((await get(session, f"{base}/v2/models/{MODEL}/config"))[1])
    summary["instance_kind"] = config["instance_group"][0]["kind"]
    used_rest = {labels["gpu_uuid"]: v for labels, v in rest.get("nv_gpu_memory_used_bytes", [])}
    total = {labels["gpu_uuid"]: v for labels, v in rest.get("nv_gpu_memory_total_bytes", [])}
    summary["gpu_at_rest"] = {"memory_used_bytes": used_rest, "memory_total_bytes": total}

    load, pages = await drive(
        session,
        infer_url,
        metrics_url,
        inputs=args.inputs,
        concurrency=args.concurrency,
        seconds=args.seconds,
    )
    load["warmup_ok"] = first["ok"]
    summary["load"] = load
    utilization = [v for _, text in pages for _, v in families(text).get("nv_gpu_utilization", [])]
    used_load = [
        v for _, text in pages for _, v in families(text).get("nv_gpu_memory_used_bytes", [])
    ]
    summary["gpu_under_load"] = {
        "utilization_max": max(utilization, default=None),
        "utilization_mean": sum(utilization) / len(utilization) if utilization else None,
        "memory_used_bytes_max": max(used_load, default=None),
        "scrapes": len(pages),
    }
    checks.append(
        Check(
            "load",
            load["ok"] > 0 and load["failed"] == 0,
            f"{load['ok']} requests, {load['failed']} failed, {load['rps']:.0f}/s",
        )
    )
    if args.rehearse:
        no_series = not any(n.startswith("nv_gpu_") for _, t in pages for n in families(t))
        checks.append(Check("gpu metrics", no_series, "no nv_gpu_* series without a GPU"))
    else:
        checks.append(
            Check(
                "gpu memory",
                bool(total)
                and all(v > 0 for v in total.values())
                and bool(used_rest)
                and all(v > 0 for v in used_rest.values()),
                f"used {used_rest} of {total} bytes at rest, by gpu_uuid",
            )
        )
        checks.append(
            Check(
                "gpu utilization",
                bool(utilization) and max(utilization) > 0,
                f"nv_gpu_utilization under load: max {max(utilization, default=0):.2f}, "
                f"mean {summary['gpu_under_load']['utilization_mean'] or 0:.2f} "
                f"over {len(pages)} scrapes",
            )
        )

    pods = pod_signals(pages)
    if not pods:
        checks.append(Check("veto", False, f"{len(pages)} scrape(s) under load: no signals"))
        return checks
    in_flight = max(p.in_flight for p in pods)
    # A target four times what one replica holds: the load fits in one of the four replicas.
    target = max(1.0, 4.0 * in_flight)
    control = decision(pods, veto=None, target=target)
    vetoed = decision(pods, veto=args.veto, target=target)
    summary["veto"] = {
        "replicas": CURRENT_REPLICAS,
        "target": target,
        "gpu_signal": control.inputs.gpu_utilization,
        "without_veto": {"desired": control.desired, "reason": control.reason.value},
        "with_veto": {
            "veto": args.veto,
            "desired": vetoed.desired,
            "reason": vetoed.reason.value,
            "message": vetoed.message,
        },
    }
    scales_down = control.desired < CURRENT_REPLICAS
    if args.rehearse:
        ok = (
            scales_down
            and vetoed.desired == control.desired
            and control.inputs.gpu_utilization is None
        )
        detail = (
            f"no GPU signal: {control.reason.value} to {control.desired} with or without the "
            f"veto ({vetoed.reason.value} to {vetoed.desired})"
        )
    else:
        ok = (
            scales_down
            and vetoed.reason is decide.Reason.GPU_VETO
            and vetoed.desired == CURRENT_REPLICAS
        )
        detail = (
            f"GPU signal {control.inputs.gpu_utilization}; without the veto "
            f"{control.reason.value} {CURRENT_REPLICAS} -> {control.desired}; with veto "
            f"{args.veto}: {vetoed.reason.value} {CURRENT_REPLICAS} -> {vetoed.desired}"
        )
    checks.append(Check("veto", ok, detail))
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=pathlib.Path, required=True)
    parser.add_argument("--rehearse", action="store_true", help="CPU dry run (see above)")
    parser.add_argument("--seconds", type=float, default=20.0, help="load duration")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--veto", type=float, default=0.5, help="gpuUtilizationVeto to test")
    parser.add_argument("--inputs", type=int, default=256)
    parser.add_argument("--width", type=int, default=None, help="default 8192 (256 rehearsing)")
    parser.add_argument("--layers", type=int, default=None, help="default 32 (4 rehearsing)")
    args = parser.parse_args(argv)
    args.width = args.width or (256 if args.rehearse else 8192)
    args.layers = args.layers or (4 if args.rehearse else 32)
    args.results.mkdir(parents=True, exist_ok=True)
    checks = asyncio.run(prove(args, args.results))
    lines = [f"{'PASS' if c.ok else 'FAIL'}  {c.name:<16} {c.detail}" for c in checks]
    passed = all(c.ok for c in checks)
    lines.append(f"{'passed' if passed else 'FAILED'}: {args.results / 'summary.json'}")
    (args.results / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
