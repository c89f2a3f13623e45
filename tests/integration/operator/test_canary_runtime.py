"""spec.canary.runtime against the real API server and the operator as a process: admission
(the field's schema and the rule that a canary must differ from the stable set), the canary's
Deployment on the other runtime's image and args with its own model config, status naming
the canary's runtime, and a canary whose runtime does not exist: RuntimeResolved says so, the
stable set stays Ready, and the canary's children are removed.

The pods here are kwok's (GPU nodes, no process runs): what is proven is what the operator
renders and reports. A canary served by real Triton, traffic and promotion included, is
tests/e2e/canary's.
"""

from __future__ import annotations

from typing import Any

import yaml
from kubernetes.client.rest import ApiException

from kubeinfer.core import api
from tests.conftest import ClusterHandle
from tests.integration.operator.test_inferenceservice import (
    GROUP,
    PLURAL,
    VERSION,
    apply_yaml,
    condition,
    get_isvc,
    isvc,
    kubectl,
    wait_condition,
)
from tests.operator_process import REPO, OperatorProcess
from tests.waiting import wait_for

TRITON = yaml.safe_load((REPO / "runtimes" / "defaults" / "triton.yaml").read_text())["spec"]
STABLE_URI = "https://127.0.0.1:9/models/mlp.onnx"


def routed(name: str, canary: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return isvc(name, router={"enabled": True}, canary=canary, **spec)


def refused(cluster: ClusterHandle, namespace: str, body: dict[str, Any]) -> str:
    result = kubectl(
        cluster, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body), check=False
    )
    assert result.returncode != 0, result.stdout
    return result.stderr


def test_admission_of_canary_runtime(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str
) -> None:
    same = {"model": {"storageUri": STABLE_URI}}
    # Same artifact, same version, same runtime: nothing to compare.
    assert api.CANARY_DIFFERS in refused(cluster, namespace, routed("same", same))
    # Written out as nulls, the unset fields are still the stable set's.
    nulls = {"model": {"storageUri": STABLE_URI, "version": None}, "runtime": None}
    assert api.CANARY_DIFFERS in refused(cluster, namespace, routed("nulls", nulls, runtime=None))
    pinned = {**same, "model": {"storageUri": STABLE_URI, "version": 1}, "runtime": "triton"}
    assert api.CANARY_DIFFERS in refused(
        cluster, namespace, routed("pinned", pinned, runtime="triton")
    )
    assert "spec.canary.runtime" in refused(
        cluster, namespace, routed("badname", {**same, "runtime": "Not_A_Name"})
    )
    # Each differing fact alone is accepted (a dry run: nothing to reconcile).
    for name, canary, spec in (
        ("other-runtime", {**same, "runtime": "triton"}, {}),
        ("other-runtime-named", {**same, "runtime": "triton"}, {"runtime": "onnxruntime"}),
        ("other-version", {"model": {"storageUri": STABLE_URI, "version": 2}}, {}),
        ("other-artifact", {"model": {"storageUri": "https://127.0.0.1:9/m2.onnx"}}, {}),
    ):
        body = yaml.safe_dump(routed(name, canary, **spec))
        kubectl(cluster, "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=body)


def test_a_canary_on_triton_beside_the_onnx_server(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str
) -> None:
    canary = {"model": {"storageUri": STABLE_URI}, "runtime": "triton", "steps": [10, 50]}
    apply_yaml(cluster, namespace, yaml.safe_dump(routed("cr", canary)))
    resolved = wait_condition(cluster, namespace, "cr", "RuntimeResolved", "True")
    assert resolved["message"] == "Served by InferenceRuntime onnxruntime (the canary by triton)."
    wait_condition(cluster, namespace, "cr", "Ready", "True")
    uid = get_isvc(cluster, namespace, "cr")["metadata"]["uid"]

    dep = wait_for(
        lambda: (
            cluster.apps.list_namespaced_deployment(
                namespace, field_selector="metadata.name=cr-canary"
            ).items
        ),
        what="the canary Deployment",
    )[0]
    server = dep.spec.template.spec.containers[0]
    assert server.image == TRITON["image"]
    assert (server.command, server.args) == (TRITON["command"], TRITON["args"])
    assert dep.metadata.labels["kubeinfer.io/runtime"] == "triton"
    stable = cluster.apps.read_namespaced_deployment("cr-predictor", namespace)
    assert stable.spec.template.spec.containers[0].command == ["kubeinfer-onnx-server"]
    assert [r.uid for r in dep.metadata.owner_references] == [uid]

    # Each runtime's own model config, in its own pod template (the downwardAPI volume
    # projects the annotation as the runtime's file).
    def model_config(template: Any) -> tuple[str, str]:
        volumes = {v.name: v for v in template.spec.volumes}
        [item] = volumes["model-config"].downward_api.items
        return item.path, template.metadata.annotations["kubeinfer.io/model-config"]

    path, content = model_config(dep.spec.template)
    assert path == "config.pbtxt" and 'name: "mlp"' in content
    assert model_config(stable.spec.template)[0] == "config.json"

    # A runtime that does not exist: the canary goes, its reason is spec.runtime's, and the
    # stable set keeps serving.
    cluster.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "cr", {"spec": {"canary": {"runtime": "later"}}}
    )
    missing = wait_condition(
        cluster, namespace, "cr", "RuntimeResolved", "False", "RuntimeNotFound"
    )
    assert missing["message"].startswith("spec.canary: InferenceRuntime 'later' does not exist.")
    ready = condition(get_isvc(cluster, namespace, "cr"), "Ready")
    assert ready and ready["status"] == "True", ready

    def gone(read: Any, name: str) -> bool:
        try:
            read(name, namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(
        lambda: gone(cluster.apps.read_namespaced_deployment, "cr-canary"),
        what="the unresolved canary's Deployment deleted",
    )
    router_yaml = cluster.core.read_namespaced_config_map("cr-router", namespace)
    variants = yaml.safe_load(router_yaml.data["router.yaml"])["variants"]
    assert [v["name"] for v in variants] == ["stable"]

    # The runtime appears: the canary is deployed on it (every service is reconciled when a
    # runtime changes).
    later = yaml.safe_load((REPO / "runtimes" / "defaults" / "triton.yaml").read_text())
    later["metadata"] = {"name": "later"}
    kubectl(cluster, "apply", "-f", "-", stdin=yaml.safe_dump(later))
    try:
        resolved = wait_condition(cluster, namespace, "cr", "RuntimeResolved", "True")
        assert resolved["message"].endswith("(the canary by later).")
        wait_for(
            lambda: not gone(cluster.apps.read_namespaced_deployment, "cr-canary"),
            what="the canary's Deployment back",
        )
    finally:
        kubectl(cluster, "delete", "inferenceruntime", "later", "--wait=false", check=False)
