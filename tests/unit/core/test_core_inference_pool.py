"""The InferencePool child: selector, target port, Endpoint Picker reference, ownership."""

from __future__ import annotations

from typing import Any

from kubeinfer.core import api, builders, children, config, inference_pool

OWNER = builders.Owner(name="m", namespace="ns", uid="u")
RUNTIME = api.InferenceRuntimeSpec(
    image="i",
    formats=[api.RuntimeFormat(name=api.ModelFormat.ONNX)],
    ports=api.RuntimePorts(http=9000),
)


def spec(**pool: Any) -> api.InferenceServiceSpec:
    return api.parse_spec(
        {
            "model": {"name": "m", "format": "onnx", "storageUri": "https://h/m.onnx"},
            "inferencePool": pool,
        }
    )


def test_the_pool_selects_the_predictor_pods_on_their_http_port() -> None:
    pool = inference_pool.build_inference_pool(OWNER, spec(), "onnxruntime", RUNTIME)
    deployment = builders.build_deployment(OWNER, spec(), "onnxruntime", RUNTIME)
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    assert pool["kind"] == "InferencePool"
    assert pool["metadata"]["name"] == "m-predictor" and pool["metadata"]["namespace"] == "ns"
    assert pool["spec"]["selector"] == deployment["spec"]["selector"]
    # The selector picks exactly the pods the Deployment makes.
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pool["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
    assert pool["spec"]["targetPorts"] == [{"number": 9000}]
    # Deleted with its InferenceService (garbage collection follows the controller reference).
    assert pool["metadata"]["ownerReferences"] == [OWNER.reference()]


def test_the_endpoint_picker_defaults_to_the_services_own_epp() -> None:
    ref = inference_pool.build_inference_pool(OWNER, spec(), "o", RUNTIME)["spec"][
        "endpointPickerRef"
    ]
    assert ref == {
        "kind": "Service",
        "name": "m-epp",
        "port": {"number": 9002},
        "failureMode": "FailClose",
    }
    custom = spec(endpointPicker="shared-epp", endpointPickerPort=9100, failureMode="FailOpen")
    ref = inference_pool.build_inference_pool(OWNER, custom, "o", RUNTIME)["spec"][
        "endpointPickerRef"
    ]
    assert ref["name"] == "shared-epp" and ref["port"] == {"number": 9100}
    assert ref["failureMode"] == "FailOpen"


def wanted(s: api.InferenceServiceSpec, *, installed: bool) -> children.Wanted:
    return children.build(
        OWNER, s, "o", RUNTIME, config.OperatorConfig(), inference_pools=installed
    )


def test_a_child_only_where_the_crd_is_installed() -> None:
    key = ("inference.networking.k8s.io/v1", "InferencePool", "m-predictor")
    assert key not in wanted(spec(), installed=False).children()
    w = wanted(spec(), installed=True)
    assert key in [children.key_of(m) for m in w.apply]
    # Switched off: deleted if present, never applied.
    w = wanted(spec(enabled=False), installed=True)
    assert key not in [children.key_of(m) for m in w.apply]
    assert key in [c.key for c in w.absent]
    plan = children.differences(w, {key: {"metadata": {"name": "m-predictor"}}})
    assert [c.kind for c in plan.delete] == ["InferencePool"]
