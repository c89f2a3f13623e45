"""What every end-to-end scenario needs: a real model behind a file:// URI, an InferenceService
whose pods the local kubelet runs for real, and a recorder of what the cluster showed.

The pods carry the local cluster's run label, so their storage initializer fetches the model
and their server answers on the pod IP; Ready comes from the server's readiness probe. The
emulated device time gives one replica a known service rate that does not depend on the
host's speed or load (the server's --emulate-device-ms), so a load sized from measured
capacity means the same on every machine.
"""

from __future__ import annotations

import dataclasses
import pathlib
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from kubeinfer_cluster.kubelet import plan
from tests.conftest import ClusterHandle
from tests.e2e import load
from tests.waiting import wait_for

RUNTIME_TESTS = pathlib.Path(__file__).resolve().parents[1] / "integration" / "runtime"
if str(RUNTIME_TESTS) not in sys.path:
    sys.path.insert(0, str(RUNTIME_TESTS))

from runtime_models import build_mlp  # noqa: E402

GROUP, VERSION, PLURAL = "kubeinfer.io", "v1alpha1", "inferenceservices"
LABEL = "kubeinfer.io/inferenceservice"


def model_uri(folder: pathlib.Path) -> str:
    """A real ONNX model (the MLP, 64 -> 10 features) on disk, as a storageUri."""
    path = folder / "model.onnx"
    build_mlp(path)
    return f"file://{path}"


def broken_model(path: pathlib.Path) -> str:
    """Loads and validates like the MLP (INPUT0 [batch, 64] FP32), fails in onnxruntime:
    64 values cannot be reshaped into rows of 7."""
    shape = numpy_helper.from_array(np.array([-1, 7], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["INPUT0", "shape"], ["OUTPUT0"])],
        "broken",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["rows", 7])],
        initializer=[shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return f"file://{path}"


def manifest(
    name: str,
    *,
    uri: str,
    gpus: int,
    max_batch: int,
    device_ms: float,
    scaling: dict[str, Any],
    cold_start: str = "2s",
    mode: str = "Auto",
) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "InferenceService",
            "metadata": {"name": name},
            "spec": {
                "model": {"name": "mlp", "format": "onnx", "storageUri": uri},
                "runtime": "onnxruntime",
                "gpu": {"count": gpus},
                "batching": {"maxBatchSize": max_batch},
                "scaling": {**scaling, "mode": mode},
                # What mode Off runs: measure_then_autoscale measures it, then switches Auto on.
                "replicas": scaling.get("minReplicas", 1),
                "podMetadata": {
                    "labels": {plan.RUN_LABEL: "true"},
                    "annotations": {
                        plan.DEVICE_MS_ANNOTATION: f"{device_ms:g}",
                        # On top of the real start: a model download and load, emulated.
                        plan.COLD_START_ANNOTATION: cold_start,
                    },
                },
            },
        }
    )


def measure_then_autoscale(
    cluster: ClusterHandle, namespace: str, name: str, ip: str, *, concurrency: int = 16
) -> float:
    """One replica's capacity, measured while the autoscaler is off (``manifest(mode="Off")``:
    saturating the replica must not scale it before the step), then autoscaling switched on;
    returns once the autoscaler has scraped the service."""
    capacity = float(load.run(load.measure_capacity(ip, concurrency=concurrency)))
    cluster.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": {"scaling": {"mode": "Auto"}}}
    )

    def scraped() -> bool:
        auto = (get(cluster, namespace, name).get("status") or {}).get("autoscaler") or {}
        return bool(auto.get("signals", {}).get("scraped"))

    wait_for(scraped, 60, f"the autoscaler scraping {name}")
    return capacity


def apply(cluster: ClusterHandle, namespace: str, text: str) -> None:
    subprocess.run(
        [str(cluster.tools.kubectl), "apply", "-n", namespace, "-f", "-"],
        input=text,
        text=True,
        env=cluster.env,
        check=True,
        capture_output=True,
    )


def ready_pod_ip(core: Any, namespace: str, selector: str) -> str | None:
    """The IP of a Ready, not terminating pod matching ``selector`` (a CoreV1Api), if any:
    the router's, the canary's, whichever the caller names by label."""
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        if ready and pod.status.pod_ip and not pod.metadata.deletion_timestamp:
            return str(pod.status.pod_ip)
    return None


def get(cluster: ClusterHandle, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return obj


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return {}


def replicas(cluster: ClusterHandle, namespace: str, name: str) -> int:
    dep = cluster.apps.read_namespaced_deployment(f"{name}-predictor", namespace)
    return int(dep.spec.replicas or 0)


@dataclasses.dataclass(frozen=True)
class Sample:
    t: float
    replicas: int
    unschedulable: int
    waiting_for_gpu: bool


class Recorder:
    """Samples the Deployment's replicas, the unschedulable pods and WaitingForGPUCapacity."""

    def __init__(self, cluster: ClusterHandle, namespace: str, name: str) -> None:
        self.cluster, self.namespace, self.name = cluster, namespace, name
        self.samples: list[Sample] = []
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Recorder:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self.samples.append(self.sample())
            except Exception:  # an API blip: the next sample will do
                continue

    def sample(self) -> Sample:
        pods = self.cluster.core.list_namespaced_pod(
            self.namespace, label_selector=f"{LABEL}={self.name}"
        ).items
        stuck = sum(
            1
            for p in pods
            if not p.metadata.deletion_timestamp
            and any(
                c.type == "PodScheduled" and c.status == "False" for c in p.status.conditions or []
            )
        )
        waiting = condition(get(self.cluster, self.namespace, self.name), "WaitingForGPUCapacity")
        return Sample(
            t=round(time.monotonic() - self.started, 2),
            replicas=replicas(self.cluster, self.namespace, self.name),
            unschedulable=stuck,
            waiting_for_gpu=waiting.get("status") == "True",
        )


def scale_events(cluster: ClusterHandle, namespace: str, name: str) -> list[tuple[str, str]]:
    return [
        (e.reason, e.message)
        for e in cluster.core.list_namespaced_event(namespace).items
        if e.involved_object.name == name and e.reason in ("ScaledUp", "ScaledDown")
    ]


def server_pid(ip: str) -> int:
    """The pid of the kubeinfer-onnx-server the local kubelet runs on a pod IP."""
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kubeinfer_onnx.server" in argv and f"--address={ip}".encode() in argv:
            return int(proc.name)
    raise AssertionError(f"no server process bound to {ip}")
