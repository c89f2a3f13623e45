"""Cluster-side helpers for the failure-mode suite: InferenceService manifests, readiness
checks, convergence checks, and keeping the shared operator running whatever a test does to it.

The manifest and condition helpers are the operator integration tier's (imported, not copied).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

from kubernetes.client.rest import ApiException

from tests.conftest import ClusterHandle
from tests.integration.operator.test_inferenceservice import (
    GROUP,
    PLURAL,
    VERSION,
    condition,
    get_isvc,
    isvc,
)
from tests.operator_process import OperatorProcess
from tests.reliability.conftest import wait_for

__all__ = ["GROUP", "PLURAL", "VERSION", "condition", "get_isvc", "isvc"]
LABEL = "kubeinfer.io/inferenceservice"


def create(cluster: ClusterHandle, ns: str, body: dict[str, Any]) -> dict[str, Any]:
    obj: dict[str, Any] = cluster.custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, body
    )
    return obj


def is_ready(cluster: ClusterHandle, ns: str, name: str) -> bool:
    obj = get_isvc(cluster, ns, name)
    cond = condition(obj, "Ready")
    status = obj.get("status") or {}
    observed = status.get("observedGeneration", obj["metadata"]["generation"])
    return bool(cond and cond["status"] == "True" and observed == obj["metadata"]["generation"])


def wait_ready(cluster: ClusterHandle, ns: str, name: str, timeout: float = 90) -> None:
    wait_for(lambda: is_ready(cluster, ns, name), timeout, f"{ns}/{name} Ready")


def wait_api(cluster: ClusterHandle, timeout: float = 120) -> float:
    """Seconds until the API server answers /readyz again."""
    start = time.monotonic()

    def ready() -> bool:
        result = subprocess.run(
            [str(cluster.tools.kubectl), "get", "--raw", "/readyz", "--request-timeout=3s"],
            env=cluster.env,
            capture_output=True,
            text=True,
        )
        return result.returncode == 0 and result.stdout.strip() == "ok"

    wait_for(ready, timeout, "kube-apiserver /readyz", every=0.5)
    return time.monotonic() - start


def children(cluster: ClusterHandle, ns: str) -> dict[str, dict[str, list[Any]]]:
    """Deployments, Services and ConfigMaps of the namespace, by owning InferenceService."""
    found: dict[str, dict[str, list[Any]]] = {}
    listings = {
        "Deployment": cluster.apps.list_namespaced_deployment(ns, label_selector=LABEL).items,
        "Service": cluster.core.list_namespaced_service(ns, label_selector=LABEL).items,
        "ConfigMap": cluster.core.list_namespaced_config_map(ns, label_selector=LABEL).items,
    }
    for kind, items in listings.items():
        for item in items:
            if item.metadata.deletion_timestamp:
                continue
            owner = item.metadata.labels[LABEL]
            found.setdefault(owner, {}).setdefault(kind, []).append(item)
    return found


def writes(operator: OperatorProcess, ns: str) -> float:
    return operator.metric("kubeinfer_api_writes_total", namespace=ns)


@contextlib.contextmanager
def operator_restored(operator: OperatorProcess) -> Iterator[None]:
    """Whatever the test does to the shared operator, it is running again afterwards."""
    try:
        yield
    finally:
        if operator.proc is None or operator.proc.poll() is not None:
            operator.proc = None
            operator.start()


def kill9(operator: OperatorProcess) -> None:
    operator.stop(signal.SIGKILL)


def delete_isvc(cluster: ClusterHandle, ns: str, name: str) -> None:
    try:
        cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    except ApiException as exc:
        if exc.status != 404:
            raise
