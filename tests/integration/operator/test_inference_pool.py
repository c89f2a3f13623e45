"""The InferencePool child on the real API server: none while its CRD is absent (and no errors
about it), created as soon as the CRD is installed - the operator already running - with a spec
the upstream schema accepts, and garbage-collected with its InferenceService.

The CRD is a trimmed copy of upstream's v1 (inferencepool-crd.yaml says what was trimmed); the
test removes it again, so the rest of the session runs without it.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes.client.rest import ApiException

from tests.conftest import ClusterHandle
from tests.integration.operator.test_inferenceservice import (
    apply_yaml,
    get_isvc,
    isvc,
    kubectl,
    wait_condition,
)
from tests.operator_process import OperatorProcess
from tests.waiting import wait_for

CRD_FILE = pathlib.Path(__file__).with_name("inferencepool-crd.yaml")
CRD_NAME = "inferencepools.inference.networking.k8s.io"
POOL = ("inference.networking.k8s.io", "v1", "inferencepools")


@pytest.fixture
def crd_absent(cluster: ClusterHandle) -> Iterator[None]:
    """The session runs without the CRD; this test installs it and removes it afterwards."""
    kubectl(cluster, "delete", "crd", CRD_NAME, "--ignore-not-found", "--wait=true")
    yield
    kubectl(cluster, "delete", "crd", CRD_NAME, "--ignore-not-found", "--wait=true")


def get_pool(cluster: ClusterHandle, ns: str, name: str) -> dict[str, Any] | None:
    try:
        pool: dict[str, Any] = cluster.custom.get_namespaced_custom_object(
            *POOL[:2], ns, POOL[2], name
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return pool


@pytest.mark.usefixtures("crd_absent")
def test_pool_follows_the_crd_and_the_service(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str
) -> None:
    log_start = len(operator.log())
    apply_yaml(cluster, namespace, yaml.safe_dump(isvc("pooled")))
    wait_condition(cluster, namespace, "pooled", "Ready", "True", timeout=60)
    # Without the CRD the kind does not exist: nothing to create, nothing worth a log line.
    said = operator.log()[log_start:]
    assert "inferencepool" not in said.lower(), said[-3000:]

    applied = kubectl(cluster, "apply", "--server-side", "-f", str(CRD_FILE), check=False)
    assert applied.returncode == 0, applied.stderr
    kubectl(cluster, "wait", "--for=condition=Established", "--timeout=30s", f"crd/{CRD_NAME}")
    # The operator is not restarted: the CRD's watch event brings the pool.
    pool = wait_for(
        lambda: get_pool(cluster, namespace, "pooled-predictor"), 30, "the InferencePool"
    )
    uid = get_isvc(cluster, namespace, "pooled")["metadata"]["uid"]
    [owner] = pool["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("InferenceService", uid, True)
    spec = pool["spec"]
    assert spec["selector"] == {"matchLabels": {"kubeinfer.io/inferenceservice": "pooled"}}
    assert spec["targetPorts"] == [{"number": 8000}]  # the onnxruntime runtime's HTTP port
    assert spec["endpointPickerRef"] == {
        "group": "",  # upstream's default, filled in by the API server
        "kind": "Service",
        "name": "pooled-epp",
        "port": {"number": 9002},
        "failureMode": "FailClose",
    }
    # The selector picks exactly the service's pods.
    pods = cluster.core.list_namespaced_pod(
        namespace, label_selector="kubeinfer.io/inferenceservice=pooled"
    ).items
    assert len(pods) == 1

    # A changed spec reaches the pool; server-side apply also re-creates one deleted by hand
    # (with no change to apply, the resync's listing finds it missing within a minute).
    cluster.custom.delete_namespaced_custom_object(
        *POOL[:2], namespace, POOL[2], "pooled-predictor"
    )
    cluster.custom.patch_namespaced_custom_object(
        "kubeinfer.io",
        "v1alpha1",
        namespace,
        "inferenceservices",
        "pooled",
        {"spec": {"inferencePool": {"endpointPicker": "shared-epp"}}},
    )

    def repaired() -> dict[str, Any] | None:
        pool = get_pool(cluster, namespace, "pooled-predictor")
        ref = (pool or {}).get("spec", {}).get("endpointPickerRef", {})
        return pool if ref.get("name") == "shared-epp" else None

    wait_for(repaired, 30, "the pool re-created with the new Endpoint Picker")

    cluster.custom.delete_namespaced_custom_object(
        "kubeinfer.io", "v1alpha1", namespace, "inferenceservices", "pooled"
    )
    wait_for(
        lambda: get_pool(cluster, namespace, "pooled-predictor") is None,
        60,
        "the InferencePool garbage-collected with its InferenceService",
    )
