"""Reconcile benchmark: N InferenceServices through the operator vs the same Deployments applied
directly (the floor), side by side in one run on one local cluster.

Measures, per object: create -> Deployment present, create -> Ready (InferenceService
Ready=True; floor: Deployment Available), API writes per object (the operator's
kubeinfer_api_writes_total), and the operator's peak RSS (VmHWM).

Run: `make bench-reconcile` (or `.venv/bin/python bench/reconcile/bench.py [--sizes 100 500]`).
Writes bench/reconcile/results.json and bench/reconcile/RESULTS.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402
from kubernetes import client, config  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from kubeinfer.core import api, builders  # noqa: E402
from kubeinfer_cluster import run  # noqa: E402
from tests.operator_process import OperatorProcess, install, python_env  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent
FLOOR_LABEL = "bench.kubeinfer.io/floor-service"
# At N=2,000 the busy operator took over 5 s (the tests' limit) to render /metrics: tens of
# thousands of per-service series.
METRICS_TIMEOUT_S = 120.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def isvc(name: str) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "name": "mlp",
                "format": "onnx",
                "storageUri": "https://127.0.0.1:9/mlp.onnx",
            },
            "runtime": "onnxruntime",
            "gpu": {"count": 0},
        },
    }


class Recorder:
    """Polls a namespace (every 0.25 s) and stamps the first time each object reaches a state.

    Polling, not watching: the stamp resolution (0.25 s) is the same for both sides."""

    def __init__(self, api_client: client.ApiClient, namespace: str, operator: bool) -> None:
        self.present: dict[str, float] = {}
        self.available: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self._stop = threading.Event()
        self._apps = client.AppsV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._ns, self._operator = namespace, operator
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(0.25):
            now = time.time()
            for dep in self._apps.list_namespaced_deployment(self._ns).items:
                name = dep.metadata.name.removesuffix("-predictor")
                self.present.setdefault(name, now)
                if any(
                    c.type == "Available" and c.status == "True"
                    for c in (dep.status.conditions or [])
                ):
                    # Ours: the Deployment's own Available, to tell the operator's status
                    # latency (Available -> Ready=True) from the controllers' and the nodes'.
                    self.available.setdefault(name, now)
                    if not self._operator:
                        self.ready.setdefault(name, now)
            if self._operator:
                listing = self._custom.list_namespaced_custom_object(
                    api.GROUP, api.VERSION, self._ns, "inferenceservices"
                )
                for obj in listing["items"]:
                    conds = (obj.get("status") or {}).get("conditions") or []
                    if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                        self.ready.setdefault(obj["metadata"]["name"], now)


def wait_all(rec: Recorder, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(n not in rec.ready for n in names):
        time.sleep(0.5)


def summarize(created: dict[str, float], rec: Recorder) -> dict[str, Any]:
    present = [rec.present[n] - t for n, t in created.items() if n in rec.present]
    ready = [rec.ready[n] - t for n, t in created.items() if n in rec.ready]
    # Deployment Available -> Ready=True (zero for the floor, where they are the same stamp).
    lag = [
        rec.ready[n] - rec.available[n] for n in created if n in rec.ready and n in rec.available
    ]
    return {
        "n": len(created),
        "ready_count": len(ready),
        "present_p50_s": round(pct(present, 0.5), 3),
        "present_p99_s": round(pct(present, 0.99), 3),
        "ready_p50_s": round(pct(ready, 0.5), 3),
        "ready_p99_s": round(pct(ready, 0.99), 3),
        "ready_mean_s": round(statistics.fmean(ready), 3),
        "available_to_ready_p50_s": round(pct(lag, 0.5), 3),
        "available_to_ready_p99_s": round(pct(lag, 0.99), 3),
    }


def bench_size(
    n: int, api_client: client.ApiClient, operator: OperatorProcess, rss: RssSampler
) -> dict[str, Any]:
    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    apps = client.AppsV1Api(api_client)
    ours_ns, floor_ns = f"bench-ours-{n}", f"bench-floor-{n}"
    for ns in (ours_ns, floor_ns):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    runtime = api.parse_runtime(
        yaml.safe_load((REPO / "runtimes/defaults/onnxruntime.yaml").read_text())["spec"]
    )
    names = [f"svc-{i:04d}" for i in range(n)]

    def run_phase(ns: str, create: Any, operator_mode: bool) -> dict[str, Any]:
        rec = Recorder(api_client, ns, operator_mode)
        rec.start()
        time.sleep(1)
        created: dict[str, float] = {}
        with concurrent.futures.ThreadPoolExecutor(8) as pool:

            def one(name: str) -> None:
                created[name] = time.time()
                create(name)

            list(pool.map(one, names))
        wait_all(rec, names, timeout=300)
        rec.stop()
        return summarize(created, rec)

    print(f"[bench] N={n}: floor (Deployments applied directly)", flush=True)

    def floor_create(name: str) -> None:
        owner = builders.Owner(name=name, namespace=floor_ns, uid="")
        spec = api.parse_spec(isvc(name)["spec"])
        dep = builders.build_deployment(owner, spec, "onnxruntime", runtime)
        dep["metadata"].pop("ownerReferences")
        # Not kubeinfer's: under its label (renamed here, nothing else changes) the
        # operator would watch and hold the floor's Deployments and pods through our phase.
        text = json.dumps(dep).replace(f'"{builders.LABEL_ISVC}"', f'"{FLOOR_LABEL}"')
        apps.create_namespaced_deployment(floor_ns, json.loads(text))

    rss.phase = f"N={n} floor"
    floor = run_phase(floor_ns, floor_create, False)
    print(f"[bench] N={n}: floor {floor}", flush=True)
    writes_before = writes_by_kind(operator, ours_ns)
    reconciles_before = operator.metric(
        "kubeinfer_reconcile_duration_seconds_count", timeout=METRICS_TIMEOUT_S
    )
    reconcile_s_before = operator.metric(
        "kubeinfer_reconcile_duration_seconds_sum", timeout=METRICS_TIMEOUT_S
    )
    print(f"[bench] N={n}: through the operator", flush=True)

    def ours_create(name: str) -> None:
        custom.create_namespaced_custom_object(
            api.GROUP, api.VERSION, ours_ns, "inferenceservices", isvc(name)
        )

    rss.phase = f"N={n} ours"
    ours = run_phase(ours_ns, ours_create, True)
    time.sleep(3)
    by_kind = writes_by_kind(operator, ours_ns)
    by_kind = {k: v - writes_before.get(k, 0.0) for k, v in by_kind.items()}
    ours["api_writes_per_object"] = round(sum(by_kind.values()) / n, 2)
    ours["api_writes_per_object_by_kind"] = {k: round(v / n, 2) for k, v in sorted(by_kind.items())}
    ours["load_average_1m"] = round(os.getloadavg()[0], 2)
    # Reconciles run (most write nothing: a watch event whose state is already reported) and
    # the wall time they took in all: where the operator's time went.
    count = (
        operator.metric("kubeinfer_reconcile_duration_seconds_count", timeout=METRICS_TIMEOUT_S)
        - reconciles_before
    )
    spent = (
        operator.metric("kubeinfer_reconcile_duration_seconds_sum", timeout=METRICS_TIMEOUT_S)
        - reconcile_s_before
    )
    ours["reconciles_per_object"] = round(count / n, 2)
    ours["reconcile_mean_ms"] = round(1000 * spent / max(count, 1), 1)
    print(f"[bench] N={n}: ours {ours}", flush=True)
    rss.phase = f"N={n} cleanup"
    for ns in (ours_ns, floor_ns):
        core.delete_namespace(ns)
    return {
        "n": n,
        "floor": floor,
        "kubeinfer": ours,
        "ratio_ready_p99": round(ours["ready_p99_s"] / max(floor["ready_p99_s"], 1e-3), 2),
        "ratio_present_p99": round(ours["present_p99_s"] / max(floor["present_p99_s"], 1e-3), 2),
    }


def writes_by_kind(operator: OperatorProcess, namespace: str) -> dict[str, float]:
    """kubeinfer_api_writes_total for ``namespace``, by "verb kind" (where the writes go)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(
        operator.metrics_text("kubeinfer_api_writes", timeout=METRICS_TIMEOUT_S)
    ):
        for sample in family.samples:
            if sample.name == "kubeinfer_api_writes_total" and (
                sample.labels.get("namespace") == namespace
            ):
                key = f"{sample.labels['verb']} {sample.labels['kind']}"
                out[key] = out.get(key, 0.0) + sample.value
    return out


class RssSampler:
    """The operator's resident memory (VmRSS) every 0.5 s, by phase: where its peak is."""

    def __init__(self, pid: int) -> None:
        self.pid, self.phase = pid, "start"
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                rss = _status_mb(self.pid, "VmRSS:")
            except OSError:
                return
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), rss)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return dict(self.peaks)


def _status_mb(pid: int, field: str) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def rss_peak_mb(pid: int) -> float:
    return _status_mb(pid, "VmHWM:")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500])
    parser.add_argument(
        "--nodes",
        type=int,
        default=0,
        help="kwok nodes (110 pods each); default: room for the largest size twice over",
    )
    parser.add_argument(
        "--name",
        default="results",
        help="results file stem: <name>.json and, for the default, RESULTS.md (a run of "
        "another size set, e.g. --sizes 2000 --name results-2000, keeps the main one)",
    )
    args = parser.parse_args()
    # Room for the floor's pods and ours at once (the floor's namespace is deleted only after
    # both phases; with 8 nodes at N=500, 120 of ours never fit): 10 nodes for N=500.
    nodes = args.nodes or max(10, -(-2 * max(args.sizes) // 100))
    cluster = run.up("bench-reconcile", nodes=run.NodeSpec(count=nodes), tie_to_parent=True)
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    operator = OperatorProcess(python_env(env), pathlib.Path(tempfile.mkdtemp()))
    try:
        install(cluster.tools.kubectl, env)
        operator.start()
        api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        assert operator.proc is not None
        rss = RssSampler(operator.proc.pid)
        results = [bench_size(n, api_client, operator, rss) for n in args.sizes]
        peak = rss_peak_mb(operator.proc.pid)
        by_phase = rss.stop()
    finally:
        operator.stop()
        cluster.down()
    doc = {
        "command": "make bench-reconcile"
        + (
            ""
            if args.sizes == [100, 500]
            else f" (bench.py --sizes {' '.join(map(str, args.sizes))})"
        ),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "kubernetes": cluster.tools.kubernetes_version,
        "operator_peak_rss_mb": peak,
        # VmRSS sampled every 0.5 s: the highest seen in each phase (the namespaces' deletion
        # runs in "cleanup", while the next size's floor starts).
        "operator_rss_peak_by_phase_mb": by_phase,
        "operator_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "nodes": nodes,
        "results": results,
    }
    (OUT / f"{args.name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "# Reconcile benchmark",
        "",
        f"Command: `{doc['command']}`. Machine: {doc['machine']}; Python {doc['python']}; "
        f"local control plane Kubernetes {doc['kubernetes']} with kwok nodes.",
        "",
        "Floor: the same Deployments (from the same builder) created directly with the API, "
        "timed to Available. kubeinfer: InferenceServices created, timed to Deployment present "
        "and to Ready=True.",
        "",
        "| N | floor present p99 (s) | ours present p99 (s) | floor ready p50/p99 (s) | "
        "ours ready p50/p99 (s) | present p99 ratio | ready p99 ratio | API writes/object | "
        "load (1 min) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        f, o = r["floor"], r["kubeinfer"]
        lines.append(
            f"| {r['n']} | {f['present_p99_s']} | {o['present_p99_s']} | "
            f"{f['ready_p50_s']}/{f['ready_p99_s']} | {o['ready_p50_s']}/"
            f"{o['ready_p99_s']} | {r['ratio_present_p99']}x | {r['ratio_ready_p99']}x | "
            f"{o['api_writes_per_object']} | {o['load_average_1m']} |"
        )
    lines += ["", "API writes per object, by verb and kind:", ""]
    for r in results:
        by_kind = ", ".join(
            f"{k} {v}" for k, v in r["kubeinfer"]["api_writes_per_object_by_kind"].items()
        )
        lines.append(f"- N={r['n']}: {by_kind}")
    lines += [
        "",
        f"Operator peak RSS (VmHWM): {peak} MB; highest VmRSS sampled by phase: "
        + ", ".join(f"{k} {v} MB" for k, v in by_phase.items())
        + ". Goals (issue 13, item 8), at N=500: present "
        "p99 within 3x the floor's, ready p99 within 1.5x, at most 5 API writes per object, "
        "peak RSS within 150 MB.",
        "",
    ]
    report = "RESULTS.md" if args.name == "results" else f"{args.name}.md"
    (OUT / report).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
