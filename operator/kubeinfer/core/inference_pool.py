"""The InferencePool child (Gateway API Inference Extension, inference.networking.k8s.io/v1). Pure.

Owns: what the pool kubeinfer creates for an InferenceService looks like, so Gateway API
inference gateways can route to its pods without kubeinfer's router: the selector is the
predictor pods' selector (the one the Deployment and Service use), the one target port is the
runtime's HTTP port, and the owner reference lets garbage collection delete it with the service.

``endpointPickerRef``: an Endpoint Picker (EPP) serves exactly one pool (its --pool-name flag),
so one operator-wide EPP cannot be right; the reference names a Service in the service's own
namespace, ``spec.inferencePool.endpointPicker`` or by default ``<name>-epp`` (the name the
upstream inferencepool chart gives the EPP of a pool it installs), on the EPP's default port
9002. It is always set: v1.0-v1.5 of the CRD require it (v1.6 made it optional, yet most
gateways still refuse a pool without one), and a reference to an EPP not deployed yet is
harmless - the gateway reports ResolvedRefs False until it exists.
"""

from __future__ import annotations

from typing import Any

from kubeinfer.core import api, builders

GROUP = "inference.networking.k8s.io"
API_VERSION = f"{GROUP}/v1"
KIND = "InferencePool"
CRD_NAME = f"inferencepools.{GROUP}"


def endpoint_picker_name(owner: builders.Owner, spec: api.InferenceServiceSpec) -> str:
    return spec.inference_pool.endpoint_picker or f"{owner.name}-epp"


def build_inference_pool(
    owner: builders.Owner,
    spec: api.InferenceServiceSpec,
    runtime_name: str,
    runtime: api.InferenceRuntimeSpec,
) -> dict[str, Any]:
    pool = spec.inference_pool
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": builders.child_name(owner),
            "namespace": owner.namespace,
            "labels": builders.labels(owner, runtime_name),
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "selector": {"matchLabels": builders.selector(owner)},
            "targetPorts": [{"number": runtime.ports.http}],
            "endpointPickerRef": {
                "kind": "Service",
                "name": endpoint_picker_name(owner, spec),
                "port": {"number": pool.endpoint_picker_port},
                "failureMode": pool.failure_mode.value,
            },
        },
    }
