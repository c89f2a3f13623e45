"""kubeinfer-onnx-server side by side with real Triton under Triton's own load generator.

Run from the repository root (`make bench-runtime` does the set-up first):

    .venv/bin/python bench/runtime/bench.py           # full run, ~10 minutes on 2 cores
    .venv/bin/python bench/runtime/bench.py --quick   # smoke: mlp, c=1 and 32, 1 s points
    .venv/bin/python bench/runtime/bench.py --models mlp --protocols grpc --output-dir /tmp/x

The load is perf_analyzer 2.51 (C++), the binary inside the `tritonclient==2.51.0` wheel:
downloaded once with `pip download` (the wheel is never installed, it would downgrade the
project's tritonclient) into ~/.cache/kubeinfer/bench-perf-analyzer-2.51.0, its two missing
libraries linked from the Triton wheel's bundled copies. Triton 2.51 is the nvidia-pytriton
install that `make triton` keeps in the same cache (kubeinfer_cluster.triton.install); it serves
the ONNX file through a python-backend model.py (triton_model.py) running onnxruntime. Nothing
of either is committed.

Both servers: the same ONNX files, the same cores (`--threads`: Triton's intra-op threads per
instance; ours is given that CPU limit as a pod's, and sizes its workers and their threads
from it), dynamic batching with no queue delay, max batch 128. Each as it serves best here:
ours with its defaults (`--workers auto`: two processes on a 2-core limit for the small model,
each with a copy of it and one intra-op thread), Triton with one instance
(`--triton-instances`; two python-backend stubs served less at every point tried, RESULTS.md).
Each point is one perf_analyzer run per server (batch-1
requests of random data, closed loop at that concurrency, 3 windows within 100 % of each
other on throughput and mean latency, else taken as they come, which the JSON records), the two
servers alternating which goes first. Before the load, each server is started alone a few
times, alternating, to time process start -> /v2/health/ready 200 with every model ready.
Results go to results.json and RESULTS.md here (report.py renders them and the verdicts).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import pathlib
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration" / "runtime"))
sys.path.insert(0, str(HERE))
import report  # noqa: E402  (this folder's renderer)
import runtime_models  # noqa: E402  (the test suite's model builders, shared, not copied)

from kubeinfer_cluster.triton import install as triton_install  # noqa: E402
from kubeinfer_onnx.cpus import LIMIT_ENV  # noqa: E402

CACHE = pathlib.Path(
    os.environ.get("KUBEINFER_BENCH_CACHE", pathlib.Path.home() / ".cache" / "kubeinfer")
)
PA_VERSION = "2.51.0"
PA_MEMBER = f"tritonclient-{PA_VERSION}.data/data/bin/perf_analyzer"
OURS = {"http": 18300, "grpc": 18301, "metrics": 18302}
TRITON = {"http": 18200, "grpc": 18201, "metrics": 18202}

# name -> (layer widths, what it stands for)
MODELS = {
    "mlp": ([256, 1024, 1024, 10], "MLP 256-1024-1024-10, the runtime issue's model"),
    "heavy": ([1024] * 9, "8 x 1024x1024 dense layers (compute-bound)"),
}


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- tools: perf_analyzer and Triton, cached outside the repository ---------------------------


def ensure_perf_analyzer(triton: triton_install.Installation) -> pathlib.Path:
    """perf_analyzer from the tritonclient 2.51.0 wheel, with libb64 and libcudart linked in."""
    folder = CACHE / f"bench-perf-analyzer-{PA_VERSION}"
    binary = folder / "perf_analyzer"
    if not binary.is_file():
        say(f"downloading tritonclient=={PA_VERSION} for its perf_analyzer (once, into {folder})")
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "-q",
                    "--no-deps",
                    "-d",
                    tmp,
                    f"tritonclient=={PA_VERSION}",
                ],
                check=True,
            )
            (wheel,) = pathlib.Path(tmp).glob(f"tritonclient-{PA_VERSION}-*.whl")
            folder.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(wheel) as archive:
                partial = folder / "perf_analyzer.partial"
                partial.write_bytes(archive.read(PA_MEMBER))
            partial.chmod(0o755)
            partial.rename(binary)
    libs = triton.site / "nvidia_pytriton.libs"
    for plain, pattern in (("libb64.so.0d", "libb64-*.so.0d"), ("libcudart.so.12", "libcudart-*")):
        link = folder / plain
        if not link.exists():
            link.unlink(missing_ok=True)  # a dangling link from an older Triton install
            link.symlink_to(next(libs.glob(pattern)))
    return binary


# -- the servers --------------------------------------------------------------------------


def write_repositories(
    work: pathlib.Path, models: list[str], threads: int, triton_instances: int = 1
) -> dict[str, Any]:
    ours, triton = work / "ours", work / "triton"
    for name in models:
        widths = MODELS[name][0]
        onnx_path = runtime_models.build_dense(ours / name / "1" / "model.onnx", widths, name=name)
        (ours / name / "config.json").write_text(json.dumps({"max_batch_size": 128}))
        (triton / name / "1").mkdir(parents=True, exist_ok=True)
        shutil.copy2(onnx_path, triton / name / "1" / "model.onnx")
        shutil.copy2(HERE / "triton_model.py", triton / name / "1" / "model.py")
        (triton / name / "config.pbtxt").write_text(f"""name: "{name}"
backend: "python"
max_batch_size: 128
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ {widths[0]} ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ {widths[-1]} ] }} ]
dynamic_batching {{ }}
instance_group [ {{ count: {triton_instances} kind: KIND_CPU }} ]
parameters {{ key: "threads" value: {{ string_value: "{threads}" }} }}
""")
    return {"ours": ours, "triton": triton}


def commands(
    repos: dict[str, Any], threads: int, triton: triton_install.Installation
) -> dict[str, tuple[list[str], dict[str, str]]]:
    ours = [
        str(ROOT / ".venv" / "bin" / "kubeinfer-onnx-server"),
        "--model-repository",
        str(repos["ours"]),
        "--address",
        "127.0.0.1",
        "--http-port",
        str(OURS["http"]),
        "--grpc-port",
        str(OURS["grpc"]),
        "--metrics-port",
        str(OURS["metrics"]),
        "--max-queue-size",
        "1024",
        "--log-level",
        "WARNING",
    ]
    tritonserver = [
        str(triton.server),
        "--model-repository",
        str(repos["triton"]),
        "--backend-directory",
        str(triton.backends),
        "--http-address",
        "127.0.0.1",
        "--http-port",
        str(TRITON["http"]),
        "--grpc-address",
        "127.0.0.1",
        "--grpc-port",
        str(TRITON["grpc"]),
        "--metrics-address",
        "127.0.0.1",
        "--metrics-port",
        str(TRITON["metrics"]),
        "--log-info",
        "false",
    ]
    # Ours is told the cores as a pod's CPU limit (as the operator passes it), not a thread
    # count: it sizes its workers and their intra-op threads from it, as it does in a pod.
    ours_env = dict(os.environ, **{LIMIT_ENV: str(1000 * threads)})
    return {"ours": (ours, ours_env), "triton": (tritonserver, triton.env())}


def is_ready(port: int, models: list[str]) -> bool:
    paths = ["/v2/health/ready", *(f"/v2/models/{m}/ready" for m in models)]
    try:
        return all(
            urllib.request.urlopen(f"http://127.0.0.1:{port}{p}", timeout=1).status == 200
            for p in paths
        )
    except OSError:
        return False


def start(
    command: tuple[list[str], dict[str, str]], port: int, models: list[str], log: pathlib.Path
) -> tuple[subprocess.Popen[bytes], float]:
    """Start a server; return it and seconds from the process start to ready (5 ms polls)."""
    began = time.monotonic()
    process = subprocess.Popen(
        command[0], env=command[1], stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    while not is_ready(port, models):
        if process.poll() is not None:
            raise SystemExit(
                f"{command[0][0]} exited with {process.returncode}:\n{log.read_text()}"
            )
        if time.monotonic() - began > 120:
            process.kill()
            raise SystemExit(f"{command[0][0]} not ready in 120 s:\n{log.read_text()}")
        time.sleep(0.005)
    return process, time.monotonic() - began


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# Module-level code (globals, not a function's locals), as `python3 -c` runs it: the figures
# PROFILE.md quotes for the host's speed were taken that way.
_LOOP = compile("total = 0\nfor step in range(3_000_000):\n    total += step\n", "loop", "exec")


def python_loop_s() -> float:
    """Seconds a 3-million-step Python loop takes, the best of three: the host's speed for
    Python code (our event loop's kind of work). On this shared VM it moves 2x between hours
    without load average or steal time showing it; the figure says which host a run had."""
    best = math.inf
    for _ in range(3):
        began = time.perf_counter()
        exec(_LOOP, {})
        best = min(best, time.perf_counter() - began)
    return best


def child_pids(pid: int) -> list[int]:
    """A process's children (our server's workers, Triton's stubs)."""
    children: list[int] = []
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its descendants (Triton's python-backend stub)."""
    total = 0.0
    pending = [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while pending:
        current = pending.pop()
        try:
            fields = pathlib.Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            pending += child_pids(current)
        except (OSError, ValueError):
            continue
    return total


# -- one point ----------------------------------------------------------------------------


def measure(
    pa: pathlib.Path,
    *,
    server: str,
    pid: int,
    model: str,
    protocol: str,
    concurrency: int,
    interval_ms: int,
    work: pathlib.Path,
) -> dict[str, Any]:
    """One perf_analyzer run against one server; its CSV row plus CPU used on both sides."""
    port = (OURS if server == "ours" else TRITON)[protocol]
    out = work / f"pa-{server}-{model}-{protocol}-{concurrency}.csv"
    command = [
        str(pa),
        "-m",
        model,
        "-u",
        f"127.0.0.1:{port}",
        "-i",
        protocol,
        "--concurrency-range",
        str(concurrency),
        "-b",
        "1",
        "--input-data",
        "random",
        "--measurement-interval",
        str(interval_ms),
        "--max-trials",
        "4",
        "--stability-percentage",
        "100",
        "-f",
        str(out),
    ]
    env = dict(os.environ, LD_LIBRARY_PATH=str(pa.parent))
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu, began = cpu_seconds(pid), time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0 and "stable measurement" in done.stdout + done.stderr:
        # Shared cores: three windows within 100 % of each other is not always on offer. Take
        # the windows as they come rather than no figure; the JSON says so.
        command[command.index("--stability-percentage") + 1] = "1000"
        done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.monotonic() - began
    server_cpu = cpu_seconds(pid) - server_cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    if done.returncode != 0 or not out.is_file():
        say(f"perf_analyzer failed for {server} {model} {protocol} c={concurrency}")
        return {"error": (done.stdout + done.stderr)[-2000:]}
    row = next(csv.DictReader(out.open()))
    return {
        "throughput": float(row["Inferences/Second"]),
        "p50_ms": int(row["p50 latency"]) / 1000,
        "p90_ms": int(row["p90 latency"]) / 1000,
        "p99_ms": int(row["p99 latency"]) / 1000,
        # Server-side breakdown as perf_analyzer reports it (microseconds per request).
        "server_queue_us": int(row.get("Server Queue") or 0),
        "server_compute_us": sum(
            int(row.get(k) or 0)
            for k in ("Server Compute Input", "Server Compute Infer", "Server Compute Output")
        ),
        "server_cpu_cores": server_cpu / wall,
        "load_generator_cpu_cores": load_cpu / wall,
        "wall_s": wall,
        "stability_percentage": int(command[command.index("--stability-percentage") + 1]),
    }


def onnxruntime_alone(repos: dict[str, Any], model: str, threads: int, seconds: float) -> Any:
    """The physical limit: rows/s of onnxruntime itself at each batch size, no server, one
    caller, the same threads; run before the servers start, on the same quiet cores."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as ours runs
    path = str(repos["ours"] / model / "1" / "model.onnx")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    limits = {}
    for batch in (1, 8, 32, 64, 128):
        x = np.random.default_rng(0).standard_normal((batch, MODELS[model][0][0]), np.float32)
        runs, began = 0, time.monotonic()
        while time.monotonic() - began < seconds:
            session.run(None, {"INPUT0": x})
            runs += 1
        elapsed = time.monotonic() - began
        limits[str(batch)] = {"rows_per_s": runs * batch / elapsed, "run_ms": elapsed / runs * 1e3}
    return limits


# -- the run ------------------------------------------------------------------------------


def versions(triton: triton_install.Installation, pa: pathlib.Path) -> dict[str, str]:
    import importlib.metadata

    def run(*command: str, env: dict[str, str] | None = None) -> str:
        return subprocess.run(command, capture_output=True, text=True, env=env).stdout.strip()

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    pa_env = dict(os.environ, LD_LIBRARY_PATH=str(pa.parent))
    return {
        "tritonserver": triton_install.TRITON_VERSION,
        "triton_wheel": triton_install.PYTRITON,
        "onnxruntime_triton": run(
            str(triton.venv / "bin" / "python"),
            "-c",
            "import onnxruntime; print(onnxruntime.__version__)",
            env=triton.env(),
        ),
        "onnxruntime_ours": importlib.metadata.version("onnxruntime"),
        "perf_analyzer": next(
            (
                line.split()[-1]
                for line in run(str(pa), "--version", env=pa_env).splitlines()
                if "version" in line.lower()
            ),
            PA_VERSION,
        ),
        "grpcio_ours": importlib.metadata.version("grpcio"),
        "hpack_ours": importlib.metadata.version("hpack"),
        "aiohttp_ours": importlib.metadata.version("aiohttp"),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpus": str(len(os.sched_getaffinity(0))),
        "kernel": platform.release(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: mlp, c=1,32, 1 s points")
    parser.add_argument("--interval-ms", type=int, default=4000, help="perf_analyzer window")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--models", default=",".join(MODELS), help=f"subset of {list(MODELS)}")
    parser.add_argument("--protocols", default="http,grpc")
    parser.add_argument("--starts", type=int, default=5, help="timed starts of each server")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="cores per server: Triton's intra-op threads, ours' CPU limit",
    )
    parser.add_argument(
        "--triton-instances",
        type=int,
        default=1,
        help="Triton's instance_group count (ours: --ours-args '--workers N')",
    )
    parser.add_argument("--output-dir", type=pathlib.Path, default=HERE)
    parser.add_argument(
        "--ours-args",
        default="",
        help="more arguments for our server, e.g. '--grpc-frontend grpcio' for an A/B",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.interval_ms, args.concurrency, args.models, args.starts = 1000, "1,32", "mlp", 1
    models = args.models.split(",")
    triton = triton_install.require()  # `make triton` installs it
    pa = ensure_perf_analyzer(triton)
    work = pathlib.Path(tempfile.mkdtemp(prefix="kubeinfer-bench-runtime-"))
    say(f"building models {models} in {work}")
    # Under load, one model per server, as the operator deploys them (our server's worker count
    # depends on what it serves); the start-up times load them all.
    repos = {
        name: write_repositories(work / name, names, args.threads, args.triton_instances)
        for name, names in [*((m, [m]) for m in models), ("all", models)]
    }
    cmds = {name: commands(repo, args.threads, triton) for name, repo in repos.items()}
    for command in cmds.values():
        command["ours"][0].extend(shlex.split(args.ours_args))
    ports = {"ours": OURS["http"], "triton": TRITON["http"]}
    result: dict[str, Any] = {
        "command": " ".join(["python", "bench/runtime/bench.py", *(argv or sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load_average_before": os.getloadavg(),
        "python_loop_s_before": python_loop_s(),
        "threads": args.threads,
        "ours_cpu_limit": args.threads,
        "triton_instances": args.triton_instances,
        "interval_ms": args.interval_ms,
        "models": {m: MODELS[m][1] for m in models},
        "versions": versions(triton, pa),
        "onnxruntime_alone": {
            m: onnxruntime_alone(repos[m], m, args.threads, 0.5 if args.quick else 2.0)
            for m in models
        },
        "ready_after_start_s": {"ours": [], "triton": []},
        "points": [],
        "ours_workers": {},
    }
    for attempt in range(args.starts):  # alone on the machine, alternating who goes first
        for server in ("ours", "triton") if attempt % 2 == 0 else ("triton", "ours"):
            log = work / f"{server}-start.log"
            process, seconds = start(cmds["all"][server], ports[server], models, log)
            stop(process)
            result["ready_after_start_s"][server].append(seconds)
            say(f"{server} ready {seconds:.3f} s after start")
    index = 0
    for model in models:
        processes = {
            server: start(cmds[model][server], ports[server], [model], work / f"{server}.log")[0]
            for server in ("ours", "triton")
        }
        result["ours_workers"][model] = len(child_pids(processes["ours"].pid)) or 1
        try:
            for protocol in args.protocols.split(","):
                for concurrency in (int(c) for c in args.concurrency.split(",")):
                    point: dict[str, Any] = {
                        "model": model,
                        "protocol": protocol,
                        "concurrency": concurrency,
                    }
                    order = ("ours", "triton") if index % 2 == 0 else ("triton", "ours")
                    for server in order:
                        point[server] = measure(
                            pa,
                            server=server,
                            pid=processes[server].pid,
                            model=model,
                            protocol=protocol,
                            concurrency=concurrency,
                            interval_ms=args.interval_ms,
                            work=work,
                        )
                    index += 1
                    say(report.point_line(point))
                    result["points"].append(point)
        finally:
            for process in processes.values():
                stop(process)
    result["load_average_after"] = os.getloadavg()
    result["python_loop_s_after"] = python_loop_s()
    result["ready_after_start_median_s"] = {
        s: statistics.median(v) for s, v in result["ready_after_start_s"].items()
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.output_dir / "RESULTS.md").write_text(report.render(result))
    say(f"wrote {args.output_dir / 'results.json'} and RESULTS.md; raw CSVs and logs in {work}")
    # The README quotes this block as is; tests/unit/bench checks it against results.json.
    print("\nREADME figures:\n" + report.readme_figures(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
