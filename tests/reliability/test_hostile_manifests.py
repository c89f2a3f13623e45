"""Hypothesis-generated InferenceService specs, valid and invalid (wrong types, negative and
huge numbers, long strings, unknown fields, bad enums), sent to the real API server. Each is
either rejected with a message naming the field, or accepted and reconciled to a Ready or
RuntimeResolved condition; the operator never dies, and a control InferenceService created
afterwards still becomes Ready."""

from __future__ import annotations

import copy
import itertools
import json
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.client.rest import ApiException

from tests.conftest import ClusterHandle
from tests.operator_process import OperatorProcess
from tests.reliability import kube
from tests.reliability.conftest import Figures, wait_for

PATHS = [
    "model.name",
    "model.format",
    "model.storageUri",
    "model.version",
    "model.credentialsSecret",
    "model.versionPolicy",
    "model.inputs",
    "model.outputs",
    "runtime",
    "gpu.count",
    "gpu.resourceName",
    "gpu.parallelism",
    "batching.maxBatchSize",
    "batching.preferredBatchSizes",
    "scaling.minReplicas",
    "scaling.maxReplicas",
    "scaling.mode",
    "scaling.metric",
    "scaling.target",
    "replicas",
    "stopped",
    "scheduling.nodeSelector",
    "scheduling.tolerations",
    "resources.requests.cpu",
    "unknownField",
    "model.unknownField",
]
values = st.one_of(
    st.integers(-5, 5),  # small: valid replica counts must not flood the fake nodes with pods
    st.sampled_from([-1, 0, 1001, 2**31, 2**53, -(2**63)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(max_size=30),
    st.sampled_from(["onnx", "tensorrt", "jax", "Auto", "Off", "nope", "nvidia.com/gpu"]),
    st.just("x" * 70_000),
    st.lists(st.integers(-3, 10), max_size=3),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2),
)
# Values a field accepts, so that about half the examples get past validation and exercise
# the operator instead of the API server.
VALID: dict[str, list[Any]] = {
    "model.name": ["m", "a-b-1", "x" * 63],
    "model.format": ["onnx", "pytorch", "python"],
    "model.storageUri": ["s3://bucket/k", "pvc://claim/path", "http://127.0.0.1:9/" + "p" * 2000],
    "model.version": [1, 1_000_000],
    "model.credentialsSecret": ["missing", "s" * 253],
    "model.versionPolicy": [{"policy": "All"}, {"policy": "Specific", "versions": [1, 2]}],
    "model.inputs": [[{"name": "x", "datatype": "FP32", "dims": [4]}]],
    "model.outputs": [[{"name": "y", "datatype": "BYTES", "dims": [-1]}]],
    "runtime": ["onnxruntime", "triton", "does-not-exist"],
    "gpu.count": [0, 1, 64],
    "gpu.resourceName": ["nvidia.com/gpu", "nvidia.com/mig-1g.10gb"],
    "gpu.parallelism": ["Data", "Model"],
    "batching.maxBatchSize": [0, 4096],
    "batching.preferredBatchSizes": [[], [1]],
    "scaling.minReplicas": [1],
    "scaling.maxReplicas": [1, 2],
    "scaling.mode": ["Auto", "Recommend", "Off"],
    "scaling.metric": ["QueueDepth", "QueueTime", "RequestRate"],
    "scaling.target": [0, 0.5, 1e9],
    "replicas": [0, 1, 2],
    "stopped": [True, False],
    "scheduling.nodeSelector": [{}, {"zone": "nowhere"}],
    "scheduling.tolerations": [[{"key": "k", "operator": "Exists"}]],
    "resources.requests.cpu": ["100m", "2"],
    "unknownField": [{"nested": [1, 2]}, "x" * 10_000],
    "model.unknownField": [1],
}
mutations = st.lists(
    st.sampled_from(PATHS).flatmap(
        lambda path: st.tuples(st.just(path), st.sampled_from(VALID[path]) | values)
    ),
    max_size=3,
)
counter = itertools.count()
outcomes: dict[str, int] = {"rejected": 0, "accepted": 0}


def mutate(spec: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = spec
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[leaf] = value


def field_named(message: str) -> bool:
    return "spec" in message or any(path.split(".")[-1] in message for path in PATHS)


@given(changes=mutations)
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_generated_manifests_are_rejected_or_reconciled(
    cluster: ClusterHandle,
    operator: OperatorProcess,
    namespace: str,
    changes: list[tuple[str, Any]],
) -> None:
    name = f"h-{next(counter)}"
    body = kube.isvc(name, gpu={"count": 0})
    spec = copy.deepcopy(body["spec"])
    for path, value in changes:
        mutate(spec, path, value)
    body["spec"] = spec
    try:
        kube.create(cluster, namespace, body)
    except ApiException as exc:
        message = json.loads(exc.body).get("message", "") if exc.body else str(exc)
        assert exc.status in (400, 422), (exc.status, message, changes)
        assert field_named(message), (message, changes)
        outcomes["rejected"] += 1
    else:
        outcomes["accepted"] += 1

        def reconciled() -> bool:
            obj = kube.get_isvc(cluster, namespace, name)
            return bool(kube.condition(obj, "Ready") or kube.condition(obj, "RuntimeResolved"))

        wait_for(reconciled, 60, f"a condition on {name} ({changes})")
        kube.delete_isvc(cluster, namespace, name)
    assert operator.proc is not None and operator.proc.poll() is None, operator.log()[-3000:]


def test_operator_still_serves_after_hostile_manifests(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str, figures: Figures
) -> None:
    start = time.monotonic()
    kube.create(cluster, namespace, kube.isvc("control", gpu={"count": 0}))
    kube.wait_ready(cluster, namespace, "control", timeout=60)
    figures.record(
        "hostile_manifests",
        examples=sum(outcomes.values()),
        rejected=outcomes["rejected"],
        accepted_and_reconciled=outcomes["accepted"],
        control_ready_s=round(time.monotonic() - start, 1),
    )
    assert operator.proc is not None and operator.proc.poll() is None
    assert outcomes["rejected"] > 0 and outcomes["accepted"] > 0, outcomes
