"""kubeinfer-onnx-server side by side with real Triton, same models, same machine, same load.

Run from the repository root:

    .venv/bin/python bench/runtime/bench.py            # full run, ~6 minutes on 2 cores
    .venv/bin/python bench/runtime/bench.py --seconds 2 --concurrency 1,8   # a quick look
    .venv/bin/python bench/runtime/bench.py --seconds 2 --models mlp --protocols grpc \
        --output-dir /tmp/quick                                # one model and protocol

Triton 2.51 comes from the `nvidia-pytriton` wheel, installed on first use into its own
virtualenv under ~/.cache/kubeinfer/bench-venv (outside the repository; nothing of it is
committed). It serves each ONNX model through a python-backend model.py (triton_model.py)
that runs onnxruntime with the same intra-op thread count as our server; both have dynamic
batching on with no queue delay (Triton's default). One asyncio tritonclient driver (HTTP with
binary tensors, and gRPC) generates closed-loop load for both, at each concurrency, with one
client connection per concurrent caller. Results go to results.json and RESULTS.md here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import time
import urllib.request
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcaio
import tritonclient.http.aio as httpaio

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration" / "runtime"))
import runtime_models  # noqa: E402  (the test suite's model builders, shared, not copied)

CACHE = pathlib.Path(
    os.environ.get("KUBEINFER_BENCH_CACHE", pathlib.Path.home() / ".cache" / "kubeinfer")
)
VENV = CACHE / "bench-venv"
PYTRITON = "nvidia-pytriton==0.7.0"
PY = f"{sys.version_info.major}.{sys.version_info.minor}"

# name -> (builder, input width, what it stands for)
MODELS = {
    "mlp": (lambda p: runtime_models.build_mlp(p), 64, "64-256-10 MLP (overhead-bound)"),
    "heavy": (
        lambda p: runtime_models.build_heavy(p, width=1024, layers=8),
        1024,
        "8 x 1024x1024 dense layers (compute-bound)",
    ),
}


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def ensure_triton() -> tuple[pathlib.Path, pathlib.Path, dict[str, str]]:
    """Install nvidia-pytriton into its own venv once; return the binary, backends, env."""
    python = VENV / "bin" / "python"
    site = VENV / "lib" / f"python{PY}" / "site-packages"
    server = site / "pytriton" / "tritonserver" / "bin" / "tritonserver"
    if not server.is_file():
        say(f"creating {VENV} (once; cached outside the repository)")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        say(f"installing {PYTRITON}, onnxruntime and numpy into it (about 300 MB)...")
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--progress-bar",
                "off",
                PYTRITON,
                "onnxruntime",
                "numpy",
            ],
            check=True,
        )
        say("installed")
    else:
        say(f"using cached Triton in {VENV}")
    # The python backend wants its stub for this Python beside libtriton_python.so.
    triton = site / "pytriton" / "tritonserver"
    backends = CACHE / "triton-backends"
    python_backend = backends / "python"
    python_backend.mkdir(parents=True, exist_ok=True)
    for source in [
        triton / "backends" / "python" / "libtriton_python.so",
        triton / "backends" / "python" / "triton_python_backend_utils.py",
        triton / "python_backend_stubs" / PY / "triton_python_backend_stub",
    ]:
        target = python_backend / source.name
        if not target.exists():
            shutil.copy2(source, target)
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        [str(site / "nvidia_pytriton.libs"), *filter(None, [env.get("LD_LIBRARY_PATH")])]
    )
    # As if the venv were activated: the stub's embedded Python finds numpy and onnxruntime.
    env["VIRTUAL_ENV"] = str(VENV)
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(site)
    return server, backends, env


def write_repositories(work: pathlib.Path, threads: int) -> tuple[pathlib.Path, pathlib.Path]:
    ours, triton = work / "ours", work / "triton"
    for name, (build, width, _) in MODELS.items():
        onnx_path = build(ours / name / "1" / "model.onnx")
        (ours / name / "config.json").write_text(json.dumps({"max_batch_size": 128}))
        (triton / name / "1").mkdir(parents=True, exist_ok=True)
        shutil.copy2(onnx_path, triton / name / "1" / "model.onnx")
        shutil.copy2(HERE / "triton_model.py", triton / name / "1" / "model.py")
        out = 10 if name == "mlp" else width
        (triton / name / "config.pbtxt").write_text(f"""name: "{name}"
backend: "python"
max_batch_size: 128
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ {width} ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ {out} ] }} ]
dynamic_batching {{ }}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
parameters {{ key: "threads" value: {{ string_value: "{threads}" }} }}
""")
    return ours, triton


def wait_ready(
    name: str, http_port: int, process: subprocess.Popen[bytes], log: pathlib.Path
) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited with {process.returncode}:\n{log.read_text()}")
        try:
            ready = all(
                urllib.request.urlopen(
                    f"http://127.0.0.1:{http_port}/v2/models/{m}/ready", timeout=2
                ).status
                == 200
                for m in MODELS
            )
            if ready:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"{name} not ready in 120 s:\n{log.read_text()}")


async def drive(
    protocol: str, url: str, model: str, width: int, concurrency: int, seconds: float, warmup: float
) -> dict[str, Any]:
    """Closed loop: `concurrency` callers, each on its own connection, one row per request."""
    module: Any = httpaio if protocol == "http" else grpcaio
    clients = [module.InferenceServerClient(url) for _ in range(concurrency)]
    data = np.random.default_rng(0).standard_normal((1, width)).astype(np.float32)
    latencies: list[float] = []
    errors = 0
    measuring = False
    stop_at = time.monotonic() + warmup + seconds

    async def caller(client: Any) -> None:
        nonlocal errors
        tensor = module.InferInput("INPUT0", [1, width], "FP32")
        tensor.set_data_from_numpy(data)
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                await client.infer(model, [tensor])
            except Exception:
                errors += 1
                continue
            if measuring:
                latencies.append(time.perf_counter() - started)

    tasks = [asyncio.create_task(caller(c)) for c in clients]
    await asyncio.sleep(warmup)
    measuring = True
    began = time.monotonic()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - began
    for client in clients:
        await client.close()
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": errors,
        "throughput": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
    }


def versions(triton_env: dict[str, str]) -> dict[str, str]:
    import importlib.metadata

    import onnxruntime

    triton_meta = json.loads(urllib.request.urlopen("http://127.0.0.1:18100/v2").read())
    triton_ort = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", "import onnxruntime; print(onnxruntime.__version__)"],
        capture_output=True,
        text=True,
        env=triton_env,
    ).stdout.strip()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "tritonserver": triton_meta.get("version", "?"),
        "triton_wheel": PYTRITON,
        "onnxruntime_ours": onnxruntime.__version__,
        "onnxruntime_triton": triton_ort,
        "tritonclient": importlib.metadata.version("tritonclient"),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpus": str(len(os.sched_getaffinity(0))),
        "kernel": platform.release(),
    }


def render_markdown(report: dict[str, Any]) -> str:
    v = report["versions"]
    lines = [
        "# kubeinfer-onnx-server vs Triton (same models, same machine, same load)",
        "",
        f"- Machine: {v['cpu']}, {v['cpus']} CPUs usable, Linux {v['kernel']}, no GPU; the "
        "load generator runs on the same cores as the server under test, and the machine is "
        "shared with other builds, so single points are noisy (+-20 % run to run).",
        f"- Versions: Triton {v['tritonserver']} ({v['triton_wheel']}, python backend running "
        f"onnxruntime {v['onnxruntime_triton']}); kubeinfer-onnx-server with onnxruntime "
        f"{v['onnxruntime_ours']}; Python {v['python']}; tritonclient {v['tritonclient']}.",
        f"- Both: {report['threads']} intra-op threads, 1 model instance, dynamic batching on, "
        "max_batch_size 128, no queue delay.",
        f"- Load: closed loop, asyncio tritonclient driver (HTTP with binary tensors, gRPC), one "
        f"connection per caller, one row per request, {report['warmup_s']} s warm-up then "
        f"{report['seconds']} s measured per point; points alternate between the two servers.",
        f"- Command: `{report['command']}`",
        "",
        "Throughput in requests/s; latencies in ms; ratio = ours / Triton (throughput: higher is "
        "better; p99 and p50: lower is better).",
        "",
        "| model | protocol | conc | ours req/s | Triton req/s | ratio | ours p50 | Triton p50 "
        "| ours p99 | Triton p99 | p99 ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        o, t = row["ours"], row["triton"]

        def fmt(x: float | None, digits: int = 2) -> str:
            return "-" if x is None else f"{x:.{digits}f}"

        ratio = o["throughput"] / t["throughput"] if t["throughput"] else float("inf")
        p99_ratio = (o["p99_ms"] / t["p99_ms"]) if o["p99_ms"] and t["p99_ms"] else None
        lines.append(
            f"| {row['model']} | {row['protocol']} | {row['concurrency']} | "
            f"{o['throughput']:.0f} | {t['throughput']:.0f} | {ratio:.2f} | {fmt(o['p50_ms'])} | "
            f"{fmt(t['p50_ms'])} | {fmt(o['p99_ms'])} | {fmt(t['p99_ms'])} | {fmt(p99_ratio)} |"
        )
    lines += [
        "",
        "Against the goal (throughput >= 1.0x Triton at equal or lower p99, every "
        "concurrency; p50 at concurrency 1 no worse):",
        "",
    ]
    for model in MODELS:
        for protocol in ("http", "grpc"):
            rows = [r for r in report["rows"] if r["model"] == model and r["protocol"] == protocol]
            if not rows:  # Not measured in this run (--models / --protocols).
                continue
            met = [
                r["concurrency"]
                for r in rows
                if r["ours"]["throughput"] >= r["triton"]["throughput"]
                and r["ours"]["p99_ms"] <= r["triton"]["p99_ms"]
            ]
            c1 = next((r for r in rows if r["concurrency"] == 1), None)
            p50 = (
                "n/a"
                if c1 is None
                else "met"
                if c1["ours"]["p50_ms"] <= c1["triton"]["p50_ms"]
                else "missed"
            )
            lines.append(
                f"- {model} / {protocol}: throughput-and-p99 met at concurrency "
                f"{met or 'none'} of {[r['concurrency'] for r in rows]}; c=1 p50 {p50}."
            )
    errors = sum(r["ours"]["errors"] + r["triton"]["errors"] for r in report["rows"])
    lines += [
        "",
        f"Errors across all points: {errors}.",
        "",
        "Models: " + "; ".join(f"`{k}` = {v[2]}" for k, v in MODELS.items()) + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured time per point")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--models", default=",".join(MODELS), help="subset of " + str(list(MODELS)))
    parser.add_argument("--protocols", default="http,grpc")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads for both servers (default: our server's "
        "default, the cgroup CPU limit)",
    )
    parser.add_argument("--output-dir", type=pathlib.Path, default=HERE)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "runtimes" / "onnxruntime"))
    from kubeinfer_onnx.server import default_threads

    threads = args.threads or default_threads()
    triton_bin, backends, triton_env = ensure_triton()
    work = CACHE / "bench-work"
    shutil.rmtree(work, ignore_errors=True)
    say("building models")
    ours_repo, triton_repo = write_repositories(work, threads)

    ours_log, triton_log = work / "ours.log", work / "triton.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "runtimes" / "onnxruntime"))
    ours = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubeinfer_onnx.server",
            "--model-repository",
            str(ours_repo),
            "--http-port",
            "18000",
            "--grpc-port",
            "18001",
            "--metrics-port",
            "18002",
            "--intra-op-threads",
            str(threads),
            "--max-queue-size",
            "1024",
            "--log-level",
            "WARNING",
        ],
        stdout=ours_log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    triton = subprocess.Popen(
        [
            str(triton_bin),
            "--model-repository",
            str(triton_repo),
            "--backend-directory",
            str(backends),
            "--http-port",
            "18100",
            "--grpc-port",
            "18101",
            "--metrics-port",
            "18102",
            "--http-address",
            "127.0.0.1",
            "--grpc-address",
            "127.0.0.1",
            "--metrics-address",
            "127.0.0.1",
            "--log-verbose",
            "0",
        ],
        stdout=triton_log.open("wb"),
        stderr=subprocess.STDOUT,
        env=triton_env,
    )
    try:
        say("starting both servers")
        wait_ready("kubeinfer-onnx-server", 18000, ours, ours_log)
        wait_ready("tritonserver", 18100, triton, triton_log)
        say("both ready")
        report: dict[str, Any] = {
            "command": " ".join(
                ["python", "bench/runtime/bench.py", *(argv if argv is not None else sys.argv[1:])]
            ),
            "threads": threads,
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "versions": versions(triton_env),
            "rows": [],
        }
        urls = {
            "ours": {"http": "127.0.0.1:18000", "grpc": "127.0.0.1:18001"},
            "triton": {"http": "127.0.0.1:18100", "grpc": "127.0.0.1:18101"},
        }
        for model in args.models.split(","):
            width = MODELS[model][1]
            for protocol in args.protocols.split(","):
                for concurrency in (int(c) for c in args.concurrency.split(",")):
                    row: dict[str, Any] = {
                        "model": model,
                        "protocol": protocol,
                        "concurrency": concurrency,
                    }
                    for server in ("ours", "triton"):
                        row[server] = asyncio.run(
                            drive(
                                protocol,
                                urls[server][protocol],
                                model,
                                width,
                                concurrency,
                                args.seconds,
                                args.warmup,
                            )
                        )
                    o, t = row["ours"], row["triton"]
                    say(
                        f"{model:5} {protocol:4} c={concurrency:<3} ours {o['throughput']:7.0f}/s "
                        f"p50 {o['p50_ms']:.2f} p99 {o['p99_ms']:.2f} | triton "
                        f"{t['throughput']:7.0f}/s p50 {t['p50_ms']:.2f} p99 {t['p99_ms']:.2f}"
                    )
                    report["rows"].append(row)
    finally:
        for process in (ours, triton):
            process.terminate()
        for process in (ours, triton):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.output_dir / "RESULTS.md").write_text(render_markdown(report))
    say(f"wrote {args.output_dir / 'results.json'} and {args.output_dir / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
