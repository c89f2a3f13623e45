"""The order children are applied in: a new Deployment first, an existing ConfigMap first."""

from __future__ import annotations

from typing import Any

import pytest

from kubeinfer.reconcilers.inferenceservice import write_order


def manifest(kind: str, api_version: str = "v1") -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": "m"}}


CM, DEP, SVC = manifest("ConfigMap"), manifest("Deployment", "apps/v1"), manifest("Service")
LIVE = {"metadata": {"name": "m"}}


@pytest.mark.parametrize(
    ("live_kinds", "expected"),
    [
        # A create: the Deployment first; its pods wait for the ConfigMap volume.
        ((), ["Deployment", "ConfigMap", "Service"]),
        # A config change: new content before the rollout that reads it.
        (("ConfigMap", "Deployment", "Service"), ["ConfigMap", "Deployment", "Service"]),
        # The Deployment was deleted by hand: the ConfigMap is there, both go first.
        (("ConfigMap", "Service"), ["ConfigMap", "Deployment", "Service"]),
        # The ConfigMap was deleted by hand: the builders' order.
        (("Deployment", "Service"), ["ConfigMap", "Deployment", "Service"]),
    ],
)
def test_write_order(live_kinds: tuple[str, ...], expected: list[str]) -> None:
    live: dict[tuple[str, str, str], dict[str, Any] | None] = {
        (m["apiVersion"], m["kind"], "m"): (LIVE if m["kind"] in live_kinds else None)
        for m in (CM, DEP, SVC)
    }
    assert [m["kind"] for m in write_order([CM, DEP, SVC], live)] == expected


def test_a_new_router_deployment_waits_for_its_service_account() -> None:
    """The router's pods name its ServiceAccount: a pod created before it exists is refused
    by admission, so only the predictor's new Deployment jumps the queue."""
    from kubeinfer.core import api, builders, children, config

    spec = api.parse_spec(
        {
            "model": {"name": "m", "format": "onnx", "storageUri": "https://h/m.onnx"},
            "router": {"enabled": True},
        }
    )
    runtime = api.InferenceRuntimeSpec(
        image="i", formats=[api.RuntimeFormat(name=api.ModelFormat.ONNX)]
    )
    owner = builders.Owner(name="m", namespace="ns", uid="u")
    wanted = children.build(owner, spec, "onnxruntime", runtime, config.OperatorConfig())
    order = [(m["kind"], m["metadata"]["name"]) for m in write_order(wanted.apply, {})]
    assert order[0] == ("Deployment", "m-predictor")
    assert order.index(("ServiceAccount", "m-router")) < order.index(("Deployment", "m-router"))
    assert order.index(("ConfigMap", "m-router")) < order.index(("Deployment", "m-router"))
