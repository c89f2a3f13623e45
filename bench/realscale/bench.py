"""The autoscaler comparison on the real local cluster: kubeinfer's autoscaler against the real
HPA (the cluster's kube-controller-manager) fed by KEDA, on the same open-loop step load and
the same real servers, in one run on one machine.

Both sides serve one InferenceService whose pods the local kubelet runs for real
(kubeinfer-onnx-server on loopback pod IPs, an emulated device time so one replica's capacity
does not depend on the host). The load is open loop (tests/e2e/load.py), sized from one
replica's capacity measured at the start of the run:
  - ``kubeinfer``: ``scaling.mode: Auto``, the shipped defaults but the target and bounds.
  - ``keda-hpa``: the same service with ``scaling.mode: Off`` and no ``replicas`` (so the
    operator leaves spec.replicas alone), and a ScaledObject: KEDA (operator + metrics
    apiserver, built from the Go module proxy) creates an HPA on the Deployment; the HPA
    controller reads KEDA's external metric through the aggregation layer every 15 s; KEDA
    asks Prometheus (built from the module proxy too), which scrapes every pod every 2 s.
    The query is the same signal kubeinfer's QueueDepth uses: queued plus executing
    requests; the threshold per replica is the same target.

Run: ``make bench-realscale`` (or ``.venv/bin/python bench/realscale/bench.py``). Writes
bench/realscale/results.json and bench/realscale/RESULTS.md. The first run builds KEDA
(long: it links every scaler's cloud SDK) and Prometheus into the shared cache.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import keda as keda_side  # noqa: E402
import report  # noqa: E402
import yaml  # noqa: E402
from kubernetes import client  # noqa: E402

from kubeinfer_cluster import build, run  # noqa: E402
from tests.conftest import ClusterHandle  # noqa: E402
from tests.e2e import load, scenario  # noqa: E402
from tests.integration.monitoring.prometheus import Prometheus  # noqa: E402
from tests.operator_process import OperatorProcess, install, python_env  # noqa: E402
from tests.waiting import wait_for  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent
NAME = "svc"
# One replica: batches of up to 4 in 80 ms of emulated device time (tests/e2e/autoscale).
MAX_BATCH, DEVICE_MS = 4, 80
SCRAPE_S = 2  # Prometheus' interval: the same freshness as kubeinfer's 2 s scrape


def _queue_query(namespace: str) -> str:
    """Queued plus executing requests over every pod of the service (kubeinfer's QueueDepth)."""
    sel = f'{{namespace="{namespace}"}}'
    return f"sum(nv_inference_pending_request_count{sel}) + sum(vllm:num_requests_running{sel})"


def prometheus_config(kubeconfig: pathlib.Path, namespace: str) -> dict[str, Any]:
    """Every pod of the service in ``namespace``, discovered through the local API server."""
    return {
        "global": {"scrape_interval": f"{SCRAPE_S}s", "scrape_timeout": f"{SCRAPE_S}s"},
        "scrape_configs": [
            {
                "job_name": "kubeinfer-pods",
                "kubernetes_sd_configs": [
                    {
                        "role": "pod",
                        "kubeconfig_file": str(kubeconfig),
                        "namespaces": {"names": [namespace]},
                    }
                ],
                "relabel_configs": [
                    {
                        "action": "keep",
                        "source_labels": [
                            "__meta_kubernetes_pod_label_kubeinfer_io_inferenceservice"
                        ],
                        "regex": NAME,
                    },
                    {
                        "action": "keep",
                        "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                        "regex": "metrics",
                    },
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                ],
            }
        ],
    }


class Poller:
    """Calls ``poll`` every ``every_s`` seconds in a thread while the ``with`` block runs, and
    once more as it ends."""

    every_s = 1.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.poll()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.poll()

    def poll(self) -> None:
        raise NotImplementedError


class DeploymentRecorder(Poller):
    """Samples spec.replicas and readyReplicas every 0.25 s, times relative to ``t0``."""

    every_s = 0.25

    def __init__(self, apps: client.AppsV1Api, namespace: str, t0: float) -> None:
        super().__init__()
        self.apps, self.namespace, self.t0 = apps, namespace, t0
        self.samples: list[report.Sample] = []

    def poll(self) -> None:
        try:
            dep = self.apps.read_namespaced_deployment(f"{NAME}-predictor", self.namespace)
        except Exception:  # an API blip: the next sample will do
            return
        self.samples.append(
            report.Sample(
                t=round(time.monotonic() - self.t0, 3),
                replicas=int(dep.spec.replicas or 0),
                ready=int(dep.status.ready_replicas or 0),
            )
        )


def manifest(
    uri: str,
    args: argparse.Namespace,
    *,
    keep_replicas: bool,
    replicas: int = 1,
    scaling: dict[str, Any] | None = None,
) -> str:
    """The service both sides run; created with scaling Off (``replicas``, one unless said).
    ``scaling``: fields added to spec.scaling (the day bench's forecast period)."""
    doc = yaml.safe_load(
        scenario.manifest(
            NAME,
            uri=uri,
            gpus=1,
            max_batch=MAX_BATCH,
            device_ms=DEVICE_MS,
            mode="Off",
            cold_start=args.cold_start,
            scaling={
                "minReplicas": 1,
                "maxReplicas": args.max_replicas,
                "metric": "QueueDepth",
                "target": args.target,
                **(scaling or {}),
            },
        )
    )
    doc["spec"]["replicas"] = replicas
    if not keep_replicas:
        # Off without replicas: the operator keeps whatever spec.replicas is (the HPA's).
        del doc["spec"]["replicas"]
    return str(yaml.safe_dump(doc))


def wait_ready(cluster: ClusterHandle, namespace: str, endpoints: load.Endpoints) -> str:
    def ready() -> list[str]:
        obj = scenario.get(cluster, namespace, NAME)
        ok = scenario.condition(obj, "Ready").get("status") == "True"
        return endpoints() if ok else []

    ips: list[str] = wait_for(ready, 180, f"{namespace}/{NAME} Ready")
    return ips[0]


def run_load(
    cluster: ClusterHandle,
    namespace: str,
    endpoints: load.Endpoints,
    capacity: float,
    args: argparse.Namespace,
    phases: report.Phases,
) -> dict[str, Any]:
    """The step load on one side; returns the load counters and the scaling figures."""
    load_before = os.getloadavg()
    result = load.LoadResult()
    t0 = time.monotonic()
    with DeploymentRecorder(cluster.apps, namespace, t0) as recorder:
        load.run(
            load.open_loop(
                endpoints,
                rate=lambda t: phases.rate(t, capacity),
                duration_s=phases.total_s,
                deadline_s=args.deadline,
                result=result,
            )
        )
    figures = report.scaling_figures(recorder.samples, phases, min_replicas=1)
    figures.update(report.request_figures(result), send_s=round(result.send_s, 1))
    print(f"[realscale] {namespace}: {result.summary()}; {figures}", flush=True)
    return {
        "figures": figures,
        "timeline": report.timeline(recorder.samples),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def side_kubeinfer(
    cluster: ClusterHandle, uri: str, args: argparse.Namespace, phases: report.Phases
) -> tuple[float, dict[str, Any]]:
    namespace = "realscale-kubeinfer"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    scenario.apply(cluster, namespace, manifest(uri, args, keep_replicas=True))
    selector = f"{scenario.LABEL}={NAME}"
    with load.Endpoints(cluster.core, namespace, selector) as endpoints:
        ip = wait_ready(cluster, namespace, endpoints)
        capacity = scenario.measure_then_autoscale(cluster, namespace, NAME, ip)
        print(f"[realscale] one replica: {capacity:.1f} requests/s", flush=True)
        measured = run_load(cluster, namespace, endpoints, capacity, args, phases)
    auto = scenario.get(cluster, namespace, NAME)["status"]["autoscaler"]
    measured["decisions"] = auto.get("decisions", [])
    measured["label"] = "kubeinfer autoscaler"
    cluster.core.delete_namespace(namespace)
    wait_for(lambda: not _pods(cluster, namespace), 120, f"{namespace} pods gone")
    return capacity, measured


def side_keda(
    cluster: ClusterHandle,
    uri: str,
    args: argparse.Namespace,
    phases: report.Phases,
    capacity: float,
    prometheus_bin: pathlib.Path,
    workdir: pathlib.Path,
) -> dict[str, Any]:
    namespace = "realscale-keda"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    prom = Prometheus(prometheus_bin, workdir, prometheus_config(cluster.kubeconfig, namespace))
    prom.start()
    try:
        scenario.apply(cluster, namespace, manifest(uri, args, keep_replicas=False))
        selector = f"{scenario.LABEL}={NAME}"
        with load.Endpoints(cluster.core, namespace, selector) as endpoints:
            wait_ready(cluster, namespace, endpoints)
            scaled = keda_side.scaled_object(
                name=NAME,
                deployment=f"{NAME}-predictor",
                prometheus_url=prom.url,
                query=_queue_query(namespace),
                threshold=args.target,
                min_replicas=1,
                max_replicas=args.max_replicas,
                scale_down_window_s=args.scale_down_window,
            )
            scenario.apply(cluster, namespace, yaml.safe_dump(scaled))
            hpa = wait_for(
                lambda: _hpa_metric(cluster, namespace),
                180,
                "the HPA reading KEDA's external metric",
                every=1.0,
                tolerate_errors=True,
            )
            print(f"[realscale] HPA reads KEDA's metric: {hpa}", flush=True)
            measured = run_load(cluster, namespace, endpoints, capacity, args, phases)
        measured["hpa_events"] = [
            (e.reason, e.message)
            for e in cluster.core.list_namespaced_event(namespace).items
            if e.involved_object.kind == "HorizontalPodAutoscaler"
        ]
        measured["label"] = "KEDA + HPA"
        measured["query"] = _queue_query(namespace)
    finally:
        prom.stop()
    return measured


def _pods(cluster: ClusterHandle, namespace: str) -> list[Any]:
    return list(cluster.core.list_namespaced_pod(namespace).items)


def _hpa_metric(cluster: ClusterHandle, namespace: str) -> Any:
    """The HPA's current value of KEDA's metric, once it has one (the whole chain works)."""
    hpa = client.AutoscalingV2Api(cluster.api).read_namespaced_horizontal_pod_autoscaler(
        f"keda-hpa-{NAME}", namespace
    )
    for metric in hpa.status.current_metrics or []:
        if metric.external and metric.external.current:
            return metric.external.current.average_value
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=float, default=0.5, help="load before/after the step")
    parser.add_argument("--step", type=float, default=3.0, help="the step, x one replica")
    parser.add_argument("--pre", type=float, default=20.0, help="seconds before the step")
    parser.add_argument("--step-seconds", type=float, default=60.0)
    parser.add_argument("--post", type=float, default=90.0, help="seconds after the step")
    parser.add_argument("--target", type=float, default=4.0, help="queue per replica")
    parser.add_argument("--max-replicas", type=int, default=6)
    parser.add_argument("--cold-start", default="5s", help="emulated model load per pod")
    parser.add_argument("--deadline", type=float, default=30.0, help="client deadline, s")
    parser.add_argument(
        "--scale-down-window", type=int, default=60, help="HPA scale-down stabilization, s"
    )
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    args = parser.parse_args()
    phases = report.Phases(args.base, args.step, args.pre, args.step_seconds, args.post)
    root = build.cache_root()
    keda_bin = build.build_keda(root)
    prometheus = build.build_prometheus(root)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with cluster_and_operator("realscale") as (cluster, work):
        (work / "keda").mkdir()
        kedas = keda_side.Keda(keda_bin, work / "keda", cluster.tools.kubectl, cluster.kubeconfig)
        try:
            kedas.start()
            uri = scenario.model_uri(work)
            capacity, ours = side_kubeinfer(cluster, uri, args, phases)
            (work / "prom").mkdir()
            theirs = side_keda(
                cluster, uri, args, phases, capacity, prometheus.prometheus, work / "prom"
            )
        finally:
            kedas.stop()
    results = {
        "started": started,
        "command": " ".join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "versions": {
            "kubeinfer": (REPO / "VERSION").read_text().strip(),
            "kubernetes": cluster.tools.kubernetes_version,
            "keda": keda_bin.version,
            "prometheus": prometheus.version,
            "git": git_head(),
        },
        "load": {
            **vars(phases),
            "total_s": phases.total_s,
            "replicas_needed": phases.replicas_needed,
            "capacity_per_replica": round(capacity, 1),
            "deadline_s": args.deadline,
            "arrivals": "Poisson",
            "device_ms": DEVICE_MS,
            "max_batch": MAX_BATCH,
            "cold_start": args.cold_start,
            "target_per_replica": args.target,
            "max_replicas": args.max_replicas,
            "hpa_scale_down_window_s": args.scale_down_window,
            "prometheus_scrape_s": SCRAPE_S,
        },
        "sides": [ours, theirs],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "RESULTS.md").write_text(report.markdown(results))
    print("\n".join(report.table(results)))
    return 0


@contextlib.contextmanager
def cluster_and_operator(name: str) -> Iterator[tuple[ClusterHandle, pathlib.Path]]:
    """A local cluster named ``name`` with kubeinfer's CRDs and its operator running as a
    process, and a work folder; the operator stopped and the cluster down afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"{name}-") as tmp:
        work = pathlib.Path(tmp)
        local = run.up(name, tie_to_parent=True)
        try:
            cluster = ClusterHandle(local.kubeconfig, local)
            install(cluster.tools.kubectl, cluster.env)
            (work / "op").mkdir()
            operator = OperatorProcess(python_env(cluster.env), work / "op")
            operator.start()
            try:
                yield cluster, work
            finally:
                operator.stop()
        finally:
            local.down()


def git_head() -> str:
    proc = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return proc.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
