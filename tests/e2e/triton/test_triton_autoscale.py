"""End to end with Triton: a ``runtime: triton`` InferenceService is scaled by the operator on
metrics scraped from real tritonserver processes at the pod IPs.

The local kubelet runs each pod's tritonserver (2.51, the pytriton wheel; ``make triton``) with
the config the operator generated and the storage initializer merged, changed only so this
CPU-only, python-backend-only build can load it (kubeinfer_cluster/triton/standin.py). The
model is the MLP; each execution takes an emulated 80 ms of device time, so one replica's
capacity is known and measured in the run. Triton queues without bound (no 503s), so clients
wait longer here than in the ONNX server's scenario.
"""

from __future__ import annotations

import itertools
import pathlib
import threading

import yaml

from tests.conftest import ClusterHandle
from tests.e2e import load, scenario
from tests.operator_process import OperatorProcess
from tests.waiting import wait_for

STEP = 2.0  # the load, in multiples of one replica's measured capacity
LOAD_S = 30.0
PANIC_WINDOW_S = 6.0


def test_triton_scales_on_its_own_metrics(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str, tmp_path: pathlib.Path
) -> None:
    doc = yaml.safe_load(
        scenario.manifest(
            "tri",
            uri=scenario.model_uri(tmp_path),
            gpus=1,
            max_batch=4,
            device_ms=80,
            mode="Off",
            scaling={
                "minReplicas": 1,
                "maxReplicas": 4,
                "metric": "QueueDepth",
                "target": 4,
                "stableWindowSeconds": 12,
                "scaleDownDelaySeconds": 10,
            },
            cold_start="0s",
        )
    )
    doc["spec"]["runtime"] = "triton"
    scenario.apply(cluster, namespace, yaml.safe_dump(doc))
    with load.Endpoints(cluster.core, namespace, f"{scenario.LABEL}=tri") as endpoints:
        [ip] = wait_for(lambda: endpoints(), 180, "the first Triton replica Ready")
        capacity = scenario.measure_then_autoscale(cluster, namespace, "tri", ip)
        result = load.LoadResult()
        with scenario.Recorder(cluster, namespace, "tri") as recorder:
            thread = threading.Thread(
                target=load.run,
                args=(
                    load.open_loop(
                        endpoints,
                        rate=STEP * capacity,
                        duration_s=LOAD_S,
                        deadline_s=180,
                        timeout_s=120,
                        result=result,
                    ),
                ),
            )
            thread.start()
            thread.join()
            wait_for(
                lambda: scenario.replicas(cluster, namespace, "tri") == 1,
                180,
                "the scale back to minReplicas",
            )
    history = [(s.t, s.replicas) for s in recorder.samples]
    decisions = [
        (d["time"], d["reason"], d["current"], d["desired"], d["inputs"].get("stable"))
        for d in scenario.get(cluster, namespace, "tri")["status"]["autoscaler"]["decisions"]
    ]
    first_up = next((t for t, r in history if r > 1), None)
    print(
        f"\nTriton: capacity {capacity:.0f} req/s per replica; {result.summary()}\n"
        f"first scale-up at {first_up} s; history {history[::8]}"
    )
    # The queue Triton reports (nv_inference_pending_request_count) drove the scale-up.
    assert first_up is not None and first_up <= PANIC_WINDOW_S, (history, decisions)
    assert max(r for _, r in history) >= 2, decisions
    assert result.failed == 0, result.errors[:5]
    counts = [r for _, r in history]
    fell = False
    for before, after in itertools.pairwise(counts):
        fell = fell or after < before
        assert not (fell and after > before), history
