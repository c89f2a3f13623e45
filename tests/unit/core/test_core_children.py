"""The reconciler's pure decisions: which children to apply or delete, and replicas."""

from __future__ import annotations

import copy
from typing import Any

from kubeinfer.core import api, builders, children, config

OWNER = builders.Owner(name="m", namespace="ns", uid="u")
RUNTIME = api.InferenceRuntimeSpec(
    image="ghcr.io/kubeinfer/onnx-server:1",
    formats=[api.RuntimeFormat(name=api.ModelFormat.ONNX)],
    batching_config=api.BatchingConfigKind.KUBEINFER_JSON,
)


def spec(**scaling: Any) -> api.InferenceServiceSpec:
    return api.parse_spec(
        {
            "model": {"name": "m", "format": "onnx", "storageUri": "https://h/m.onnx"},
            "scaling": scaling,
        }
    )


def wanted(**scaling: Any) -> children.Wanted:
    return children.build(OWNER, spec(**scaling), "onnxruntime", RUNTIME, config.OperatorConfig())


def live_copies(w: children.Wanted) -> dict[children.Key, dict[str, Any]]:
    """What the API server would hold after applying: our fields plus its own."""
    out = {}
    for manifest in w.apply:
        held = copy.deepcopy(manifest)
        held["metadata"]["resourceVersion"] = "7"
        held.setdefault("status", {})["observedGeneration"] = 1
        out[children.key_of(manifest)] = held
    return out


def test_everything_missing_is_applied_and_the_deployment_is_a_create() -> None:
    w = wanted()
    plan = children.differences(w, {})
    # Two objects per service: the model config rides in the pod template (no ConfigMap).
    assert [m["kind"] for m in plan.apply] == ["Deployment", "Service"]
    assert plan.creates_deployment and plan.delete == []


def test_a_batching_change_rolls_the_pods_with_the_new_config() -> None:
    """The runtime reads its model config once, at start: a new config must be a new pod
    template, and the file the new pods read is the annotation the template carries."""
    before = wanted()
    after = children.build(
        OWNER,
        api.parse_spec(
            {
                "model": {"name": "m", "format": "onnx", "storageUri": "https://h/m.onnx"},
                "batching": {"maxBatchSize": 4},
            }
        ),
        "onnxruntime",
        RUNTIME,
        config.OperatorConfig(),
    )
    live = live_copies(before)
    [deployment] = [m for m in after.apply if m["kind"] == "Deployment"]
    assert children.template_changes(deployment, live[before.deployment_key])
    annotation = deployment["spec"]["template"]["metadata"]["annotations"]
    assert '"max_batch_size": 4' in annotation[builders.CONFIG_ANNOTATION]
    plan = children.differences(after, live)
    assert [m["kind"] for m in plan.apply] == ["Deployment"]


def test_nothing_is_written_when_the_live_copies_hold_our_fields() -> None:
    w = wanted()
    plan = children.differences(w, live_copies(w))
    assert plan.apply == [] and not plan.creates_deployment


def test_a_hand_edited_field_is_put_back() -> None:
    w = wanted()
    live = live_copies(w)
    deployment = live[w.deployment_key]
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = "hand/edit:1"
    plan = children.differences(w, live)
    assert [m["kind"] for m in plan.apply] == ["Deployment"]


def test_a_pdb_no_longer_wanted_is_deleted() -> None:
    with_pdb = wanted(minReplicas=2, maxReplicas=4)
    live = live_copies(with_pdb)
    without = wanted(minReplicas=1)
    plan = children.differences(without, live)
    assert [c.kind for c in plan.delete] == ["PodDisruptionBudget"]


def test_an_older_versions_model_config_map_is_deleted() -> None:
    w = wanted()
    live: dict[children.Key, dict[str, Any] | None] = {**live_copies(w)}
    live[("v1", "ConfigMap", "m-model-config")] = {"metadata": {"name": "m-model-config"}}
    plan = children.differences(w, live)
    assert plan.apply == []
    assert [(c.kind, c.name) for c in plan.delete] == [("ConfigMap", "m-model-config")]


def test_replicas_start_at_the_minimum_then_stay_inside_the_bounds() -> None:
    s = spec(minReplicas=2, maxReplicas=5)
    assert children.replicas(s, {"spec": {"replicas": 1}}, created=True) == 2
    # The autoscaler moved it to 4: re-applying the same manifest keeps it.
    assert children.replicas(s, {"spec": {"replicas": 4}}, created=False) == 4
    assert children.replicas(s, {"spec": {"replicas": 9}}, created=False) == 5


def test_a_rollout_starts_only_when_the_pod_template_changes() -> None:
    w = wanted()
    live = live_copies(w)[w.deployment_key]
    [deployment] = [m for m in w.apply if m["kind"] == "Deployment"]
    assert not children.template_changes(deployment, None)  # being created: first pods
    assert not children.template_changes(deployment, live)
    # The strategy is not the template: changing it rolls nothing.
    other = copy.deepcopy(deployment)
    other["spec"]["strategy"]["rollingUpdate"] = {"maxSurge": 0, "maxUnavailable": 1}
    assert not children.template_changes(other, live)
    other["spec"]["template"]["spec"]["containers"][0]["image"] = "new:2"
    assert children.template_changes(other, live)
