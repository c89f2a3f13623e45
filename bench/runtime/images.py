"""Image size and container start-to-ready: kubeinfer's ONNX-server image vs Triton.

Run from the repository root (after `make images`, which this runs when an image is missing):

    .venv/bin/python bench/runtime/images.py              # 5 starts of each, ~2 minutes
    .venv/bin/python bench/runtime/images.py --runs 3

What is measured, all on this machine in one run, on the quick-start model (the 64-256-10 MLP
of tests/integration/runtime/runtime_models.py, with the batching config the operator writes):
- ours in runc, as the operator's Deployment runs it (tests/images/pods.py: uid 1000, read-only
  root, the InferenceRuntime's command and args): `runc create` (namespaces, mounts), then the
  time from `runc start` to the first 200 from /v2/health/ready;
- the same server as a plain process from the repository's venv (no container), for scale;
- real Triton 2.51 (the nvidia-pytriton==0.7.0 wheel, python backend running onnxruntime, as
  bench.py serves it), started as a process: Popen to the first 200 from /v2/health/ready.
Sizes: ours from the OCI archives `make images` wrote (uncompressed layers, and gzip layers as
a registry stores them); Triton's from NVIDIA's published figures (cited in the output), and
the measured size of the server-plus-python-backend tree the wheel ships.

The three alternate round by round (runc, process, Triton, then again), so a busy neighbour on
a shared machine slows each alike. Writes images.json and IMAGES.md next to this file.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from kubeinfer.core import api, builders  # noqa: E402
from kubeinfer_cluster import containers, images  # noqa: E402
from kubeinfer_cluster.triton import install as triton_install  # noqa: E402
from tests.images import pods  # noqa: E402
from tests.integration.runtime import runtime_models  # noqa: E402

MODEL = "mlp"
GOAL_SIZE_MB = 400
GOAL_READY_S = 2.0
# NVIDIA's own figures for its Triton images (the chart's default runtime image is
# nvcr.io/nvidia/tritonserver:24.10-py3). The NGC catalog page that lists each tag's size
# (https://catalog.ngc.nvidia.com/orgs/nvidia/containers/tritonserver/tags) could not be read
# from this workplace, so the 24.10 tag's own figure is not quoted; these are the nearest ones
# NVIDIA stated, with where they were stated.
TRITON_PUBLISHED = [
    {
        "image": "nvcr.io/nvidia/tritonserver:24.06-py3",
        "size_gb": 15.5,
        "what": "after docker pull (uncompressed), every backend but vLLM and TRT-LLM",
        "source": "NVIDIA's Triton team, triton-inference-server/server#7474 "
        "(https://github.com/triton-inference-server/server/issues/7474): "
        '"the 15.5 GB is expected"',
    },
    {
        "image": "Triton base (CUDA, cuDNN, TensorRT), no backends",
        "size_gb": 6.0,
        "what": "approximate, uncompressed",
        "source": "NVIDIA's Triton team, triton-inference-server/server#2999 "
        "(https://github.com/triton-inference-server/server/issues/2999): "
        '"The base container with cuda/cudnn/tensorrt dependency is itself ~6GB"',
    },
]


def say(message: str) -> None:
    print(f"[images bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def ready(port: int) -> bool:
    return pods.http_status(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) == 200


def wait_ready(port: int, alive: Any, what: str, timeout: float = 120) -> float:
    """Poll /v2/health/ready every 5 ms; the monotonic time it first answered 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready(port):
            return time.monotonic()
        if not alive():
            raise SystemExit(f"{what} exited before it was ready")
        time.sleep(0.005)
    raise SystemExit(f"{what} not ready in {timeout:.0f} s")


def quickstart(http: int, grpc: int, metrics: int) -> tuple[dict[str, Any], tuple[str, str]]:
    """The quick-start Deployment's server container and model config, on free ports."""
    runtime_doc = yaml.safe_load((ROOT / "runtimes" / "defaults" / "onnxruntime.yaml").read_text())
    runtime_doc["spec"]["ports"] = {"http": http, "grpc": grpc, "metrics": metrics}
    runtime = api.parse_runtime(runtime_doc["spec"])
    example = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    spec = api.parse_spec(example["spec"])
    owner = builders.Owner(name="quickstart", namespace="default", uid="bench")
    deployment = builders.build_deployment(owner, spec, "onnxruntime", runtime)
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container, builders.build_model_config(spec, runtime)


def model_repository(work: pathlib.Path, config: tuple[str, str]) -> pathlib.Path:
    repo = work / "models"
    runtime_models.build_mlp(repo / MODEL / "1" / "model.onnx")
    (repo / MODEL / config[0]).write_text(config[1])
    for path in (work, repo, *repo.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return repo


def start_ours_runc(imageset: pods.Images, repo: pathlib.Path, i: int) -> dict[str, float]:
    """One start of the server image in runc: create, then start -> ready."""
    http, grpc, metrics = pods.free_port(), pods.free_port(), pods.free_port()
    spec, _ = quickstart(http, grpc, metrics)
    env = {e["name"]: e["value"] for e in spec["env"]}
    container = imageset.container(
        "onnx-server",
        f"bench-{i}",
        command=spec["command"],
        args=spec["args"],
        env=env,
        mounts=[containers.Mount(env["MODEL_REPOSITORY"], repo)],
    )
    t0 = time.monotonic()
    container.create()
    t1 = time.monotonic()
    try:
        container.start()
        t2 = wait_ready(http, lambda: container.status() == "running", "container")
    finally:
        container.stop(timeout=10)
    say(f"ours in runc: create {t1 - t0:.3f} s, start -> ready {t2 - t1:.3f} s")
    return {"create_s": t1 - t0, "start_to_ready_s": t2 - t1, "total_s": t2 - t0}


def import_seconds(imageset: pods.Images, i: int) -> dict[str, float]:
    """How long the server's imports take inside the image (one container, no model)."""
    code = (
        "import time; t = time.perf_counter(); "
        "import kubeinfer_onnx.server, kubeinfer_onnx.model; print(time.perf_counter() - t)"
    )
    container = imageset.container("onnx-server", f"imports-{i}", command=["python", "-c", code])
    container.run()
    try:
        assert container.wait(timeout=60) == 0, container.output()
    finally:
        container.stop(timeout=5)
    return {"imports_s": float(container.output().split()[-1])}


def start_process(args: list[str], http: int, what: str, **popen: Any) -> dict[str, float]:
    """One start of a server process: exec -> /v2/health/ready 200, then SIGTERM."""
    t0 = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen)
    try:
        t1 = wait_ready(http, lambda: proc.poll() is None, what)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    say(f"{what} as a process: start -> ready {t1 - t0:.3f} s")
    return {"start_to_ready_s": t1 - t0}


def start_ours_process(repo: pathlib.Path) -> dict[str, float]:
    http, grpc, metrics = pods.free_port(), pods.free_port(), pods.free_port()
    server = ROOT / ".venv" / "bin" / "kubeinfer-onnx-server"
    return start_process(
        [str(server), "--model-repository", str(repo), "--http-port", str(http),
         "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
        http,
        "kubeinfer-onnx-server",
    )  # fmt: skip


class Triton:
    """Real Triton 2.51 (`make triton`'s install) serving the MLP through its python backend."""

    def __init__(self, work: pathlib.Path) -> None:
        triton = triton_install.require()
        self.server, self.backends, self.env = triton.server, triton.backends, triton.env()
        self.repo = work / "triton"
        (self.repo / MODEL / "1").mkdir(parents=True)
        runtime_models.build_mlp(self.repo / MODEL / "1" / "model.onnx")
        (self.repo / MODEL / "1" / "model.py").write_text((HERE / "triton_model.py").read_text())
        # The quick-start's batching (max batch 32), one CPU instance, 1 onnxruntime thread.
        (self.repo / MODEL / "config.pbtxt").write_text(
            f'name: "{MODEL}"\nbackend: "python"\nmax_batch_size: 32\n'
            'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 64 ] } ]\n'
            'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 10 ] } ]\n'
            "dynamic_batching { }\ninstance_group [ { count: 1 kind: KIND_CPU } ]\n"
            'parameters { key: "threads" value: { string_value: "1" } }\n'
        )

    def start(self) -> dict[str, float]:
        http, grpc, metrics = pods.free_port(), pods.free_port(), pods.free_port()
        return start_process(
            [str(self.server), f"--model-repository={self.repo}",
             f"--backend-directory={self.backends}",
             "--http-address=127.0.0.1", f"--http-port={http}",
             "--grpc-address=127.0.0.1", f"--grpc-port={grpc}",
             f"--metrics-port={metrics}", "--log-info=false"],
            http,
            "Triton",
            env=self.env,
        )  # fmt: skip

    def installed_size(self) -> dict[str, Any]:
        tree = self.server.parents[1]
        total = 0
        for path in (tree, tree.parents[1] / "nvidia_pytriton.libs"):
            du = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True)
            total += int(du.stdout.split()[0])
        return {
            "tritonserver_tree_bytes": total,
            "what": "pytriton/tritonserver (server, python backend, stubs) + "
            "nvidia_pytriton.libs, no CUDA, no other backend, no OS",
        }


def summary(rows: list[dict[str, float]], key: str) -> dict[str, float]:
    values = [r[key] for r in rows]
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def render(report: dict[str, Any]) -> str:
    server = report["images"]["onnx-server"]
    operator = report["images"]["operator"]
    runc, process, triton = report["ours_runc"], report["ours_process"], report["triton"]
    mb = 1e6
    lines = [
        "# Images: size and start-to-ready (kubeinfer-onnx-server vs Triton)",
        "",
        f"- Machine: {report['machine']['cpus']} CPUs, Linux {report['machine']['kernel']}, no "
        "GPU, shared with other builds (load average "
        f"{report['machine']['load_average_1m_at_end']} at the end; start times move +-30 % "
        "run to run). The measurements alternate round by round.",
        f"- Images built here by `make images` (buildah, base: {server['python_image']}); "
        f"runc {report['versions']['runc']}; Triton 2.51 from nvidia-pytriton==0.7.0.",
        f"- Model: the quick-start MLP (64-256-10, runtime_models.build_mlp), max batch 32; "
        f"{report['runs']} starts each, page cache warm (an image already on the node).",
        "- Command: `.venv/bin/python bench/runtime/images.py`",
        "",
        "## Image size",
        "",
        "| image | uncompressed | pull (gzip layers) | source |",
        "|---|---:|---:|---|",
        f"| ours: {server['ref']} (CPU) | {server['size_bytes'] / mb:.0f} MB | "
        f"{server['compressed_bytes'] / mb:.0f} MB | measured (OCI archive) |",
        f"| ours: {operator['ref']} (no model runtime) | {operator['size_bytes'] / mb:.0f} MB | "
        f"{operator['compressed_bytes'] / mb:.0f} MB | measured (OCI archive) |",
    ]
    for item in TRITON_PUBLISHED:
        lines.append(
            f"| Triton: {item['image']} | {item['size_gb'] * 1000:.0f} MB | | {item['source']} |"
        )
    wheel = report["triton_wheel"]
    lines += [
        f"| Triton 2.51 server + python backend only (the wheel's tree) | "
        f"{wheel['tritonserver_tree_bytes'] / mb:.0f} MB | | measured; {wheel['what']} |",
        "",
        "Triton's figures are NVIDIA's own words about its images (the chart's default is "
        "`nvcr.io/nvidia/tritonserver:24.10-py3`; the NGC catalog page listing each tag's size, "
        "https://catalog.ngc.nvidia.com/orgs/nvidia/containers/tritonserver/tags, could not be "
        "read from this workplace, so the 24.10 tag's own figure is not quoted).",
        "",
        "## Start to ready (s)",
        "",
        "| what | median | min | max |",
        "|---|---:|---:|---:|",
    ]
    rows = [
        ("ours in runc: `runc start` -> /v2/health/ready 200", runc["start_to_ready_s"]),
        ("ours in runc: `runc create` (namespaces, mounts)", runc["create_s"]),
        ("ours in runc: create + start -> ready", runc["total_s"]),
        ("ours as a process (no container)", process["start_to_ready_s"]),
        ("ours: Python imports alone, in the image", report["ours_imports"]["imports_s"]),
        ("Triton as a process: exec -> /v2/health/ready 200", triton["start_to_ready_s"]),
    ]
    for label, s in rows:
        lines.append(f"| {label} | {s['median']:.3f} | {s['min']:.3f} | {s['max']:.3f} |")
    size_ok = server["size_bytes"] <= GOAL_SIZE_MB * mb
    ready_ok = runc["start_to_ready_s"]["median"] <= GOAL_READY_S
    lines += [
        "",
        "## Against the goals",
        "",
        f"- Server image <= {GOAL_SIZE_MB} MB (CPU variant): "
        f"{'met' if size_ok else 'NOT met'} ({server['size_bytes'] / mb:.0f} MB uncompressed, "
        f"{server['compressed_bytes'] / mb:.0f} MB to pull).",
        f"- Start to ready <= {GOAL_READY_S:.0f} s for the quick-start model: "
        f"{'met' if ready_ok else 'NOT met'} (median {runc['start_to_ready_s']['median']:.2f} s "
        f"from `runc start`, fastest {runc['start_to_ready_s']['min']:.2f} s; Triton "
        f"{triton['start_to_ready_s']['median']:.2f} s). What bounds it: the server's Python "
        f"imports (`kubeinfer_onnx.server` and `.model`: onnxruntime, numpy, protobuf) take "
        f"{report['ours_imports']['imports_s']['median']:.2f} s of it on these cores; the rest "
        "is loading the model, opening three listeners, and CPU shared with the neighbours.",
        "- Not measured here: pulling. A node pulls the gzip layers once per image version; at "
        "1 Gbit/s that is about 1 s for ours and about 2 min for a 15 GB Triton image.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--output-dir", type=pathlib.Path, default=HERE)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("runc needs root here: run as root")
    built = {b.name: b for b in images.build_images()}
    with tempfile.TemporaryDirectory(prefix="kubeinfer-images-bench-") as tmp:
        work = pathlib.Path(tmp)
        state = work / "runc-state"
        containers.preflight(state)
        imageset = pods.Images(built=built, work=work / "bundles", state=state)
        imageset.rootfs("onnx-server")  # unpacked once, before any timing
        _, config = quickstart(8000, 8001, 8002)  # ports unused: only the config is read
        repo = model_repository(work / "ours", config)
        triton = Triton(work)
        runc_rows, process_rows, triton_rows, import_rows = [], [], [], []
        try:
            # Rounds alternate the three, so a busy neighbour on this shared machine slows
            # each of them alike rather than one block of runs.
            for i in range(args.runs):
                runc_rows.append(start_ours_runc(imageset, repo, i))
                process_rows.append(start_ours_process(repo))
                triton_rows.append(triton.start())
                import_rows.append(import_seconds(imageset, i))
        finally:
            containers.clean_state(state)
        wheel = triton.installed_size()
    runc_version = subprocess.run(["runc", "--version"], capture_output=True, text=True)
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "versions": {"runc": runc_version.stdout.split()[2], "python": platform.python_version()},
        "runs": args.runs,
        "images": {name: b.to_json() for name, b in built.items()},
        "ours_runc": {
            k: summary(runc_rows, k) for k in ("create_s", "start_to_ready_s", "total_s")
        },
        "ours_process": {"start_to_ready_s": summary(process_rows, "start_to_ready_s")},
        "ours_imports": {"imports_s": summary(import_rows, "imports_s")},
        "triton": {"start_to_ready_s": summary(triton_rows, "start_to_ready_s")},
        "triton_wheel": wheel,
        "triton_published": TRITON_PUBLISHED,
        "raw": {
            "ours_runc": runc_rows,
            "ours_process": process_rows,
            "triton": triton_rows,
            "ours_imports": import_rows,
        },
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "images.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.output_dir / "IMAGES.md").write_text(render(report))
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
