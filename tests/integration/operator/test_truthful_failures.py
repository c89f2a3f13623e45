"""What a user reads when something is wrong, on the real control plane with real pods.

Each failure is produced for real (the local kubelet runs the storage initializer against a
real S3 server; the real scheduler refuses a pod) and the test asserts the message status
shows: the cause in the user's terms, never only "CrashLoopBackOff" or "0 of 1 ready".
"""

from __future__ import annotations

import base64
import json
import pathlib
from typing import Any

import storage_servers  # tests/integration/conftest.py put it on the path
import yaml
from kubernetes import client

from tests.conftest import ClusterHandle
from tests.e2e import scenario
from tests.operator_process import OperatorProcess
from tests.waiting import wait_for


def condition(cluster: ClusterHandle, ns: str, name: str, kind: str) -> dict[str, Any]:
    return scenario.condition(scenario.get(cluster, ns, name), kind)


def real_service(name: str, uri: str, **spec: Any) -> dict[str, Any]:
    """An InferenceService whose pods the local kubelet runs for real."""
    doc: dict[str, Any] = yaml.safe_load(
        scenario.manifest(name, uri=uri, gpus=0, max_batch=4, device_ms=0, scaling={})
    )
    doc["spec"].update(spec)
    return doc


def test_bad_storage_credentials_name_the_cause(
    cluster: ClusterHandle,
    operator: OperatorProcess,
    namespace: str,
    s3_server: storage_servers.S3Server,
) -> None:
    s3 = s3_server
    key, secret = s3.stranger  # a valid key without permission to read the bucket
    cluster.core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="s3-creds"),
            data={
                k: base64.b64encode(v.encode()).decode()
                for k, v in {
                    "AWS_ACCESS_KEY_ID": key,
                    "AWS_SECRET_ACCESS_KEY": secret,
                    "AWS_ENDPOINT_URL": s3.endpoint,
                }.items()
            },
        ),
    )
    uri = f"s3://{storage_servers.BUCKET}/single/resnet.onnx"
    body = real_service("denied", uri)
    body["spec"]["model"]["credentialsSecret"] = "s3-creds"
    scenario.apply(cluster, namespace, yaml.safe_dump(body))
    ready = wait_for(
        lambda: (
            (c := condition(cluster, namespace, "denied", "Ready")).get("reason")
            == "StorageInitFailed"
            and c
        ),
        90,
        "Ready to name the storage failure",
    )
    assert ready["status"] == "False"
    assert uri in ready["message"] and "AccessDenied" in ready["message"], ready
    assert secret not in json.dumps(scenario.get(cluster, namespace, "denied"))


def test_a_cpu_shortage_is_named_and_is_not_a_gpu_wait(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str, tmp_path: pathlib.Path
) -> None:
    # The nodes have 32 CPUs each: a replica asking for 64 fits nowhere.
    body = real_service(
        "hungry", scenario.model_uri(tmp_path), resources={"requests": {"cpu": "64"}}
    )
    scenario.apply(cluster, namespace, yaml.safe_dump(body))
    ready = wait_for(
        lambda: (
            (c := condition(cluster, namespace, "hungry", "Ready")).get("reason")
            == "InsufficientCPU"
            and c
        ),
        60,
        "Ready to name the CPU shortage",
    )
    assert "Insufficient cpu" in ready["message"], ready
    assert condition(cluster, namespace, "hungry", "PodsScheduled")["reason"] == "InsufficientCPU"
    waiting = condition(cluster, namespace, "hungry", "WaitingForGPUCapacity")
    assert waiting["status"] == "False", waiting


def test_a_long_window_survives_an_operator_restart(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str, tmp_path: pathlib.Path
) -> None:
    """An hour-long stable window is persisted in status and restored: after a restart the
    autoscaler still holds the samples it had (it does not start from an empty window)."""
    body = real_service(
        "patient",
        scenario.model_uri(tmp_path),
        scaling={"stableWindowSeconds": 3600, "scaleDownDelaySeconds": 3600},
    )
    scenario.apply(cluster, namespace, yaml.safe_dump(body))

    def buckets() -> set[str]:
        auto = (scenario.get(cluster, namespace, "patient").get("status") or {}).get(
            "autoscaler"
        ) or {}
        saved = json.loads(auto.get("state") or "{}")
        return set((saved.get("window") or {}).get("buckets") or {})

    before = wait_for(lambda: len(buckets()) >= 3 and buckets(), 120, "three persisted samples")
    operator.restart()
    after = wait_for(
        lambda: len(buckets()) > len(before) and buckets(), 120, "a sample after the restart"
    )
    assert before <= after, (sorted(before), sorted(after))
