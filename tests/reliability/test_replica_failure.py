"""End to end on the local cluster: a serving process is killed (kill -9) and its pod deleted
while a load generator with client retries runs. Counted: requests failed after retries (the
promise is zero), seconds until a replacement pod's server is ready, the autoscaler's reaction.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import threading
import time

from tests.conftest import ClusterHandle
from tests.e2e.load import LoadResult, run_load
from tests.e2e.pod_servers import PodServers
from tests.operator_process import OperatorProcess
from tests.reliability import kube
from tests.reliability.conftest import Figures, runtime_models, wait_for


def test_replica_killed_under_load_loses_nothing(
    cluster: ClusterHandle,
    operator: OperatorProcess,
    namespace: str,
    tmp_path: pathlib.Path,
    figures: Figures,
) -> None:
    repo = tmp_path / "repo"
    runtime_models.build_mlp(repo / "mlp" / "1" / "model.onnx")
    (tmp_path / "logs").mkdir()
    body = kube.isvc(
        "victim",
        gpu={"count": 1},
        scaling={"minReplicas": 2, "maxReplicas": 3, "target": 4, "stableWindowSeconds": 12},
    )
    kube.create(cluster, namespace, body)
    selector = f"{kube.LABEL}=victim"
    with PodServers(cluster.core, namespace, selector, repo, tmp_path / "logs") as servers:
        wait_for(lambda: len(servers.ready_ips()) == 2, 90, "two servers ready")
        result: list[LoadResult] = []
        load = threading.Thread(
            target=lambda: result.append(
                asyncio.run(run_load(servers.ready_ips, concurrency=8, duration_s=14, retries=10))
            )
        )
        load.start()
        time.sleep(4)
        with servers._lock:  # the harness's own table of pod -> (ip, process)
            pod, (_ip, proc) = sorted(servers.procs.items())[0]
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        cluster.core.delete_namespaced_pod(pod, namespace, grace_period_seconds=0)

        def replaced() -> bool:
            with servers._lock:
                names = set(servers.procs)
            return pod not in names and len(names) >= 2 and len(servers.ready_ips()) >= 2

        wait_for(replaced, 90, "a replacement server ready", every=0.1)
        replace_s = time.monotonic() - killed
        replicas_seen = []
        while load.is_alive():
            replicas_seen.append(
                cluster.apps.read_namespaced_deployment("victim-predictor", namespace).spec.replicas
            )
            time.sleep(0.5)
        load.join()
    outcome = result[0]
    decisions = (
        (kube.get_isvc(cluster, namespace, "victim").get("status") or {})
        .get("autoscaler", {})
        .get("decisions", [])
    )
    figures.record(
        "replica_failure",
        requests_ok=outcome.ok,
        retried_503=outcome.rejected_503,
        failed_after_retries=outcome.failed,
        replacement_ready_s=round(replace_s, 1),
        servers_started=servers.started_total,
        replicas_after_kill=sorted(set(replicas_seen)),
        autoscaler_decisions=[d.get("reason") for d in decisions][-5:],
    )
    assert outcome.failed == 0, outcome.errors[:5]
    assert outcome.ok > 100
    assert replace_s < 60
