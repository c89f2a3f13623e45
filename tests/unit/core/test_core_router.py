"""kubeinfer-router's children (core/router.py), the routed Service, and the API rule that
scaling to zero needs the router."""

from __future__ import annotations

import pathlib
from typing import Any

import pydantic
import pytest
import yaml

from kubeinfer.core import api, builders, children, config, router

OWNER = builders.Owner(name="m", namespace="ns", uid="u")
RUNTIME = api.InferenceRuntimeSpec(
    image="ghcr.io/kubeinfer/onnx-server:1",
    formats=[api.RuntimeFormat(name=api.ModelFormat.ONNX)],
    batching_config=api.BatchingConfigKind.KUBEINFER_JSON,
)
CONFIG = config.OperatorConfig(init_image="ghcr.io/kubeinfer/operator:9")


def spec(**extra: Any) -> api.InferenceServiceSpec:
    return api.parse_spec(
        {"model": {"name": "m", "format": "onnx", "storageUri": "https://h/m.onnx"}, **extra}
    )


ROUTED = {"router": {"enabled": True}, "scaling": {"minReplicas": 0}}


def by_kind(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name)


def test_min_replicas_zero_without_the_router_is_refused_naming_the_field() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"scaling\.minReplicas 0 needs router"):
        spec(scaling={"minReplicas": 0})
    assert spec(**ROUTED).scaling.min_replicas == 0


def test_the_defaults_live_in_the_api() -> None:
    s = spec()
    assert not s.router.enabled
    assert s.router.max_queued == 100 and s.router.hold_timeout_seconds == 120
    assert s.scaling.scale_to_zero_after_seconds == 300


def test_the_router_config_finds_the_serving_pods_and_wakes_their_deployment() -> None:
    s = spec(router={"enabled": True, "maxQueued": 7, "holdTimeoutSeconds": 9})
    cm = router.build_config_map(OWNER, s, RUNTIME)
    assert cm["metadata"]["name"] == "m-router"
    doc = yaml.safe_load(cm["data"][router.CONFIG_FILE])
    assert doc["discovery"] == {
        "mode": "pods",
        "namespace": "ns",
        "httpPort": "http",
        "metricsPort": "metrics",
    }
    (variant,) = doc["variants"]
    assert variant["selector"] == builders.selector(OWNER)
    assert variant["deployment"] == builders.child_name(OWNER)
    assert doc["wake"] == {"kind": "kubernetes"}
    assert (doc["maxQueued"], doc["holdTimeoutSeconds"]) == (7, 9)
    assert doc["queueMetric"] == RUNTIME.metrics.queue_depth


def test_the_router_config_is_what_the_router_itself_accepts() -> None:
    kubeinfer_router_config = pytest.importorskip("kubeinfer_router.config")
    doc = router.build_config(OWNER, spec(**ROUTED), RUNTIME)
    parsed = kubeinfer_router_config.parse_document(doc)
    assert parsed.wake.kind.value == "kubernetes"
    assert parsed.max_queued == 100


def test_router_pods_are_not_serving_pods() -> None:
    s = spec(**ROUTED, podMetadata={"labels": {"team": "a", builders.LABEL_ISVC: "x"}})
    dep = router.build_deployment(OWNER, s, RUNTIME, CONFIG)
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert builders.LABEL_ISVC not in pod_labels
    assert pod_labels["team"] == "a"
    assert dep["spec"]["selector"]["matchLabels"] == router.pod_selector(OWNER)
    assert not set(builders.selector(OWNER).items()) <= set(pod_labels.items())
    # The object itself is a child the operator's watches see.
    assert dep["metadata"]["labels"][builders.LABEL_ISVC] == "m"
    assert dep["metadata"]["ownerReferences"] == [OWNER.reference()]


def test_the_router_runs_on_the_operator_image_with_its_own_identity() -> None:
    dep = router.build_deployment(OWNER, spec(**ROUTED), RUNTIME, CONFIG)
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == CONFIG.init_image
    assert container["command"] == [router.COMMAND]
    assert container["args"] == [
        f"--config={router.CONFIG_DIR}/{router.CONFIG_FILE}",
        f"--listen=0.0.0.0:{router.HTTP_PORT}",
        "--configmap=ns/m-router",  # watched, so a new weight applies at once
    ]
    assert pod["serviceAccountName"] == "m-router"
    assert {"name": "config", "configMap": {"name": "m-router"}} in pod["volumes"]


def test_the_role_grants_only_what_the_router_uses_on_its_own_objects() -> None:
    role = router.build_role(OWNER)
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": ["apps"],
            "resources": ["deployments/scale"],
            "verbs": ["get", "patch"],
            "resourceNames": ["m-predictor"],
        },
        # Its own ConfigMap only: the router watches it by a field selector on that name.
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "verbs": ["get", "list", "watch"],
            "resourceNames": ["m-router"],
        },
    ]
    binding = router.build_role_binding(OWNER)
    assert binding["roleRef"]["name"] == "m-router"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "m-router", "namespace": "ns"}
    ]


def test_a_routed_service_selects_the_router_pods() -> None:
    w = children.build(OWNER, spec(**ROUTED), "onnxruntime", RUNTIME, CONFIG)
    service = by_kind(w.apply, "Service", "m-predictor")
    assert service["spec"]["selector"] == router.pod_selector(OWNER)
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    kinds = {(m["kind"], m["metadata"]["name"]) for m in w.apply}
    assert {
        ("ServiceAccount", "m-router"),
        ("Role", "m-router"),
        ("RoleBinding", "m-router"),
        ("ConfigMap", "m-router"),
        ("Deployment", "m-router"),
    } <= kinds
    # One router: no PodDisruptionBudget (one pod cannot stay up through its own eviction).
    assert [(c.kind, c.name) for c in w.absent if c.name == "m-router"] == [
        ("PodDisruptionBudget", "m-router")
    ]


def test_switching_the_router_off_deletes_its_children_and_the_service_selects_the_pods() -> None:
    on = children.build(OWNER, spec(**ROUTED), "onnxruntime", RUNTIME, CONFIG)
    live = {children.key_of(m): m for m in on.apply}
    off = children.build(OWNER, spec(), "onnxruntime", RUNTIME, CONFIG)
    plan = children.differences(off, live)
    # Everything the router had (one router: no PodDisruptionBudget to delete).
    assert {(c.kind, c.name) for c in plan.delete} == {
        (kind, "m-router") for _, kind in router.KINDS if kind != "PodDisruptionBudget"
    }
    service = by_kind(plan.apply, "Service", "m-predictor")
    assert service["spec"]["selector"] == builders.selector(OWNER)


def test_a_service_that_may_scale_to_zero_starts_with_one_replica() -> None:
    assert builders.initial_replicas(spec(**ROUTED)) == 1
    assert builders.clamp_replicas(spec(**ROUTED), 0) == 0


def test_the_scale_to_zero_example_is_valid() -> None:
    repo = pathlib.Path(__file__).resolve().parents[3]
    doc = yaml.safe_load((repo / "examples" / "scale-to-zero.yaml").read_text())
    parsed = api.parse_spec(doc["spec"])
    assert parsed.router.enabled and parsed.scaling.min_replicas == 0


def test_two_routers_are_spread_and_kept_one_at_a_time_and_back_to_one_drops_the_budget() -> None:
    two = spec(router={"enabled": True, "replicas": 2})
    w = children.build(OWNER, two, "onnxruntime", RUNTIME, CONFIG)
    dep = by_kind(w.apply, "Deployment", "m-router")
    assert dep["spec"]["replicas"] == 2
    [spread] = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"  # a one-node cluster runs both
    assert spread["labelSelector"]["matchLabels"] == router.pod_selector(OWNER)
    pdb = by_kind(w.apply, "PodDisruptionBudget", "m-router")
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": router.pod_selector(OWNER)},
    }
    assert pdb["metadata"]["ownerReferences"] == [OWNER.reference()]
    live = {children.key_of(m): m for m in w.apply}
    one = children.build(OWNER, spec(**ROUTED), "onnxruntime", RUNTIME, CONFIG)
    plan = children.differences(one, live)
    assert [(c.kind, c.name) for c in plan.delete] == [("PodDisruptionBudget", "m-router")]
    dep = by_kind(one.apply, "Deployment", "m-router")
    assert dep["spec"]["replicas"] == 1
    assert "topologySpreadConstraints" not in dep["spec"]["template"]["spec"]
