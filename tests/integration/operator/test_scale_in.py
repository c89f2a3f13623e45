"""Load-aware scale-in on the local cluster: real servers, the real ReplicaSet controller.

Three pods run real ONNX servers (the local kubelet); the newest one is kept busy by a client
on its pod IP. The ReplicaSet controller alone would remove that one (among Ready pods it
removes the one Ready for the shortest time), so when a scale-in from 3 to 2 removes an idle
pod instead, it is because the operator marked the idle pod's pod-deletion-cost and the real
kube-controller-manager honoured it. Then another field manager ("karpenter") owns the cost on
a pod and the operator backs off: it writes no marks, says so in status, and the ReplicaSet
controller follows the other manager's costs.
"""

from __future__ import annotations

import pathlib
import threading
import urllib.error
import urllib.request
from typing import Any

from kubernetes import client, watch

from tests.conftest import ClusterHandle
from tests.e2e import load, scenario
from tests.operator_process import OperatorProcess
from tests.waiting import wait_for

NAME = "scalein"
COST = "controller.kubernetes.io/pod-deletion-cost"
DRAIN = "router.kubeinfer.io/draining"
OURS = "kubeinfer-autoscaler"
SELECTOR = f"{scenario.LABEL}={NAME}"


def live_pods(cluster: ClusterHandle, ns: str) -> list[client.V1Pod]:
    pods = cluster.core.list_namespaced_pod(ns, label_selector=SELECTOR).items
    return [p for p in pods if not p.metadata.deletion_timestamp]


def ready(pod: client.V1Pod) -> bool:
    return bool(pod.status.pod_ip) and any(
        c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
    )


def wait_ready(cluster: ClusterHandle, ns: str, count: int) -> list[client.V1Pod]:
    def check() -> list[client.V1Pod] | None:
        pods = live_pods(cluster, ns)
        return pods if len(pods) == count and all(ready(p) for p in pods) else None

    pods: list[client.V1Pod] = wait_for(check, 180, f"{count} Ready pods of {NAME}")
    return pods


def wait_live(cluster: ClusterHandle, ns: str, count: int) -> set[str]:
    names: set[str] = wait_for(
        lambda: (
            {p.metadata.name for p in live_pods(cluster, ns)}
            if (len(live_pods(cluster, ns)) == count)
            else None
        ),
        120,
        f"{count} live pods of {NAME}",
    )
    return names


def decisions(cluster: ClusterHandle, ns: str) -> list[dict[str, Any]]:
    auto = (scenario.get(cluster, ns, NAME).get("status") or {}).get("autoscaler") or {}
    return list(auto.get("decisions") or [])


def scale_down_message(cluster: ClusterHandle, ns: str, current: int) -> str:
    def check() -> str | None:
        for d in reversed(decisions(cluster, ns)):
            if d["reason"] == "ScaleDown" and d["current"] == current:
                return str(d["message"])
        return None

    message: str = wait_for(check, 60, f"the ScaleDown decision from {current} in status")
    return message


class Busy:
    """Closed-loop clients on one pod IP, so its queue is never empty when it is scraped."""

    def __init__(self, ip: str, clients: int = 4) -> None:
        self.url = f"http://{ip}:8000/v2/models/mlp/infer"
        self.body = load.mlp_request()
        self.ok = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Busy:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def _run(self) -> None:
        request = urllib.request.Request(
            self.url, data=self.body, headers={"Content-Type": "application/json"}
        )
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    resp.read()
                    self.ok += 1
            except (urllib.error.URLError, OSError):
                self._stop.wait(0.1)


class Deletions:
    """Every pod of the service as it was when it got its deletionTimestamp (a watch, so a
    pod the kubelet finishes quickly is not missed), and every mark the operator wrote."""

    def __init__(self, cluster: ClusterHandle, ns: str) -> None:
        self.cluster, self.ns = cluster, ns
        self.deleted: dict[str, dict[str, str]] = {}
        self.marked: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Deletions:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        # Short watches, re-opened: a terminating pod stays at least its 5 s preStop, so a
        # re-listing between two watches still sees it with its deletionTimestamp.
        while not self._stop.is_set():
            try:
                for event in watch.Watch().stream(
                    self.cluster.core.list_namespaced_pod,
                    self.ns,
                    label_selector=SELECTOR,
                    timeout_seconds=5,
                ):
                    self._see(event["object"])
            except Exception:  # the API server closed the stream: open another
                self._stop.wait(0.2)

    def _see(self, pod: client.V1Pod) -> None:
        if owns_a_mark(pod, OURS):
            self.marked.add(pod.metadata.name)
        if pod.metadata.deletion_timestamp and pod.metadata.name not in self.deleted:
            self.deleted[pod.metadata.name] = dict(pod.metadata.annotations or {})


def owns_a_mark(pod: client.V1Pod, manager: str) -> bool:
    for entry in pod.metadata.managed_fields or []:
        annotations = ((entry.fields_v1 or {}).get("f:metadata") or {}).get("f:annotations") or {}
        if entry.manager == manager and {f"f:{COST}", f"f:{DRAIN}"} & set(annotations):
            return True
    return False


def test_scale_in_removes_an_idle_pod_and_backs_off_from_another_manager(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str, tmp_path: pathlib.Path
) -> None:
    scaling = {
        "minReplicas": 2,
        "maxReplicas": 3,
        "metric": "QueueDepth",
        # Far above what the busy pod queues: the load asks for one replica.
        "target": 50,
        "stableWindowSeconds": 6,
        "scaleDownDelaySeconds": 0,
    }
    scenario.apply(
        cluster,
        namespace,
        scenario.manifest(
            NAME,
            uri=scenario.model_uri(tmp_path),
            gpus=1,
            max_batch=1,
            device_ms=100,
            scaling=scaling,
            cold_start="0s",
            mode="Off",
        ),
    )
    old = {p.metadata.name for p in wait_ready(cluster, namespace, 2)}
    # The third pod comes later: Ready for the shortest time, the one the ReplicaSet
    # controller would remove on its own. It is the busy one.
    cluster.custom.patch_namespaced_custom_object(
        scenario.GROUP,
        scenario.VERSION,
        namespace,
        scenario.PLURAL,
        NAME,
        {"spec": {"replicas": 3}},
    )
    pods = wait_ready(cluster, namespace, 3)
    [busy] = [p for p in pods if p.metadata.name not in old]
    with Deletions(cluster, namespace) as seen:
        with Busy(busy.status.pod_ip) as client_load:
            wait_for(lambda: client_load.ok > 0, 30, "the busy pod answering")
            cluster.custom.patch_namespaced_custom_object(
                scenario.GROUP,
                scenario.VERSION,
                namespace,
                scenario.PLURAL,
                NAME,
                {"spec": {"scaling": {"mode": "Auto"}}},
            )
            wait_for(lambda: scenario.replicas(cluster, namespace, NAME) == 2, 90, "3 -> 2")
            survivors = wait_live(cluster, namespace, 2)
        message = scale_down_message(cluster, namespace, 3)
        print(f"\n3 -> 2: busy {busy.metadata.name}, survivors {sorted(survivors)}: {message}")
        # The busy pod stays; the idle one the operator named is the one removed, and it
        # carried both marks when the ReplicaSet controller deleted it.
        assert busy.metadata.name in survivors, (survivors, message)
        [removed] = old - survivors
        assert f"Removing the least loaded: {removed} (0 in flight)." in message, message
        assert seen.deleted[removed].get(COST) == "-1", seen.deleted
        assert seen.deleted[removed].get(DRAIN) == "true", seen.deleted
        assert seen.marked == {removed}, seen.marked
        # No marks left on the survivors.
        wait_for(
            lambda: not any(owns_a_mark(p, OURS) for p in live_pods(cluster, namespace)),
            30,
            "no scale-in marks on the survivors",
        )

        # Another controller owns the cost on the idle survivor, valuing it above the busy
        # pod: the operator writes nothing, and the ReplicaSet controller removes the busy one.
        [idle] = survivors - {busy.metadata.name}
        cluster.core.patch_namespaced_pod(
            idle, namespace, {"metadata": {"annotations": {COST: "100"}}}, field_manager="karpenter"
        )
        cluster.custom.patch_namespaced_custom_object(
            scenario.GROUP,
            scenario.VERSION,
            namespace,
            scenario.PLURAL,
            NAME,
            {"spec": {"scaling": {"minReplicas": 1}}},
        )
        wait_for(lambda: scenario.replicas(cluster, namespace, NAME) == 1, 90, "2 -> 1")
        assert wait_live(cluster, namespace, 1) == {idle}
        message = scale_down_message(cluster, namespace, 2)
        print(f"2 -> 1: {message}")
        # Seen in the pod's managedFields ("another field manager owns ..."), or (if the store
        # had not seen it yet) refused by the API server's conflict check on the apply ("the
        # API server refused ... 409 Conflict ... karpenter"): either way no mark is written.
        assert "Not choosing the pods to remove: " in message, message
        assert idle in message and "karpenter" in message, message
        assert seen.marked == {removed}, seen.marked
        [last] = live_pods(cluster, namespace)
        assert last.metadata.annotations[COST] == "100"
        assert not owns_a_mark(last, OURS)
