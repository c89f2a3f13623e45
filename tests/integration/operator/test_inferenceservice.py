"""The operator against the real API server: children, status, validation, drift, restarts."""

from __future__ import annotations

import json
import pathlib
import subprocess
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubeinfer_cluster import run
from tests.conftest import ClusterHandle
from tests.e2e import scenario
from tests.operator_process import REPO, OperatorProcess
from tests.waiting import wait_for

GROUP, VERSION, PLURAL = "kubeinfer.io", "v1alpha1", "inferenceservices"


def kubectl(
    cluster: ClusterHandle, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cluster.tools.kubectl), *args],
        env=cluster.env,
        input=stdin,
        capture_output=True,
        text=True,
        check=check,
    )


def isvc(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {
            "name": "mlp",
            "format": "onnx",
            "storageUri": "https://127.0.0.1:9/models/mlp.onnx",
        },
        "gpu": {"count": 1},
    }
    body.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": body,
    }


def get_isvc(cluster: ClusterHandle, ns: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, name
    )
    return obj


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == ctype:
            return dict(cond)
    return None


def wait_condition(
    cluster: ClusterHandle,
    ns: str,
    name: str,
    ctype: str,
    status: str,
    reason: str | None = None,
    timeout: float = 40,
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        cond = condition(get_isvc(cluster, ns, name), ctype)
        if cond and cond["status"] == status and (reason is None or cond["reason"] == reason):
            return cond
        return None

    result: dict[str, Any] = wait_for(check, timeout, f"{name} {ctype}={status} {reason or ''}")
    return result


def apply_yaml(cluster: ClusterHandle, ns: str, text: str) -> None:
    kubectl(cluster, "apply", "-n", ns, "-f", "-", stdin=text)


def deployment(cluster: ClusterHandle, ns: str, name: str) -> client.V1Deployment:
    return cluster.apps.read_namespaced_deployment(f"{name}-predictor", ns)


def test_quickstart_becomes_ready_with_children(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str
) -> None:
    apply_yaml(cluster, namespace, (REPO / "examples" / "quickstart.yaml").read_text())
    ready = wait_condition(cluster, namespace, "quickstart", "Ready", "True")
    assert "serving at http://quickstart-predictor." in ready["message"]
    obj = get_isvc(cluster, namespace, "quickstart")
    assert obj["status"]["runtime"] == "onnxruntime"
    assert obj["status"]["readyReplicas"] == 1 and obj["status"]["gpus"] == 1
    dep = deployment(cluster, namespace, "quickstart")
    server = dep.spec.template.spec.containers[0]
    assert server.resources.limits["nvidia.com/gpu"] == "1"
    assert dep.spec.template.spec.node_selector == {
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"
    }
    assert server.readiness_probe.http_get.path == "/v2/health/ready"
    assert server.security_context.read_only_root_filesystem is True
    assert [c.name for c in dep.spec.template.spec.init_containers] == ["storage-initializer"]
    uid = obj["metadata"]["uid"]
    for child in (dep, cluster.core.read_namespaced_service("quickstart-predictor", namespace)):
        refs = child.metadata.owner_references
        assert refs and refs[0].uid == uid and refs[0].controller
    # minReplicas 1: no PodDisruptionBudget could be honoured.
    with pytest.raises(ApiException) as err:
        client.PolicyV1Api(cluster.api).read_namespaced_pod_disruption_budget(
            "quickstart-predictor", namespace
        )
    assert err.value.status == 404
    # Every pod landed on a GPU node with a loopback IP.
    pods = cluster.core.list_namespaced_pod(namespace).items
    assert pods and all(p.status.pod_ip.startswith("127.1.") for p in pods)

    def events() -> dict[str, str]:
        listed = cluster.core.list_namespaced_event(namespace).items
        return {e.reason: e.type for e in listed if e.involved_object.name == "quickstart"}

    # One Event per create (posted in the background, so it may land after the status):
    # "Created" names the children; the coming up to Ready is told by status alone
    # (reconcilers.inferenceservice.announce), no "Ready" Event repeats it. Unless a problem
    # was told on the way (a GPU another test still holds: WaitingForGPUCapacity, a Warning):
    # then its end is told too, and Ready is an Event.
    wait_for(lambda: "Created" in events(), 30, "the Created Event")
    told = events()
    assert "ReplicasNotReady" not in told, told
    if "Warning" not in told.values():
        assert "Ready" not in told, told


@pytest.mark.parametrize(
    "example,name",
    [
        ("triton-gpu.yaml", "resnet-trt"),
        ("onnx-cpu.yaml", "onnx-cpu"),
        ("mig.yaml", "embedder-mig"),
        ("tensor-parallel.yaml", "llm-tp4"),
        ("triton-pytorch.yaml", "ranker"),
        ("inference-pool.yaml", "ranker-gw"),
    ],
)
def test_every_example_becomes_ready(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str, example: str, name: str
) -> None:
    # pvc:// needs a bound claim before the scheduler places the pod; the controller-manager's
    # PV binder binds this pre-provisioned volume (kwok never mounts it).
    if example == "onnx-cpu.yaml":
        pv_name = f"models-{namespace}"
        cluster.core.create_persistent_volume(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": pv_name},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadOnlyMany"],
                    "storageClassName": "",
                    "hostPath": {"path": "/nonexistent"},
                },
            }
        )
        apply_yaml(
            cluster,
            namespace,
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "models"},
                    "spec": {
                        "accessModes": ["ReadOnlyMany"],
                        "storageClassName": "",
                        "volumeName": pv_name,
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            ),
        )
    apply_yaml(cluster, namespace, (REPO / "examples" / example).read_text())
    wait_condition(cluster, namespace, name, "Ready", "True", timeout=60)
    dep = deployment(cluster, namespace, name)
    spec = yaml.safe_load_all((REPO / "examples" / example).read_text())
    manifest = next(d for d in spec if d["kind"] == "InferenceService")["spec"]
    gpu = manifest.get("gpu", {})
    limits = dep.spec.template.spec.containers[0].resources.limits or {}
    if gpu.get("count"):
        assert limits[gpu.get("resourceName", "nvidia.com/gpu")] == str(gpu["count"])
    else:
        assert not any(k.startswith("nvidia.com/") for k in limits)
    expected_replicas = manifest.get("replicas") or manifest.get("scaling", {}).get(
        "minReplicas", 1
    )
    assert dep.spec.replicas == expected_replicas
    has_pdb = manifest.get("scaling", {}).get("minReplicas", 1) >= 2
    pdbs = client.PolicyV1Api(cluster.api).list_namespaced_pod_disruption_budget(namespace).items
    assert bool(pdbs) == has_pdb
    if example == "onnx-cpu.yaml":  # requests equal to limits: the API server calls it so
        pods = cluster.core.list_namespaced_pod(namespace).items
        assert pods and {p.status.qos_class for p in pods} == {"Guaranteed"}


def test_a_guaranteed_server_with_a_model_download_is_a_guaranteed_pod(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str
) -> None:
    """The storage initializer counts in the pod's QoS class (the API server computes it):
    it takes the server's figures, or the static CPU manager would never pin the server. The
    server is told its CPU limit; a Burstable service keeps the small initializer."""
    whole = {"limits": {"cpu": "1", "memory": "512Mi"}}
    apply_yaml(cluster, namespace, yaml.safe_dump(isvc("whole", gpu={"count": 0}, resources=whole)))
    apply_yaml(cluster, namespace, yaml.safe_dump(isvc("shared", gpu={"count": 0})))

    def qos() -> dict[str, str] | None:
        pods = cluster.core.list_namespaced_pod(namespace).items
        by_service = {p.metadata.labels.get("kubeinfer.io/inferenceservice"): p for p in pods}
        if set(by_service) != {"whole", "shared"}:
            return None
        return {name: p.status.qos_class for name, p in by_service.items()}

    assert wait_for(qos, 40, "a pod of each service") == {
        "whole": "Guaranteed",
        "shared": "Burstable",
    }
    server = deployment(cluster, namespace, "whole").spec.template.spec.containers[0]
    limit = next(e for e in server.env if e.name == "KUBEINFER_CPU_LIMIT_MILLICORES")
    assert limit.value_from.resource_field_ref.resource == "limits.cpu"


def test_gpu_exhaustion_sets_waiting_condition_and_clears_on_new_node(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str
) -> None:
    apply_yaml(cluster, namespace, yaml.safe_dump(isvc("big", gpu={"count": 12})))
    cond = wait_condition(cluster, namespace, "big", "WaitingForGPUCapacity", "True")
    assert "Insufficient nvidia.com/gpu" in cond["message"]
    ready = condition(get_isvc(cluster, namespace, "big"), "Ready")
    assert ready and ready["status"] == "False" and ready["reason"] == "WaitingForGPUCapacity"
    run.add_node(cluster.kubeconfig, 9, run.NodeSpec(gpus_per_node=16, mig_slices=0))
    try:
        wait_condition(cluster, namespace, "big", "WaitingForGPUCapacity", "False", timeout=90)
        wait_condition(cluster, namespace, "big", "Ready", "True", timeout=60)
    finally:
        cluster.apps.delete_collection_namespaced_deployment(namespace)
        cluster.core.delete_node("gpu-node-9")


@pytest.mark.parametrize(
    "spec,message",
    [
        (
            {"scaling": {"minReplicas": 5, "maxReplicas": 2}},
            "scaling.minReplicas must be less than or equal to scaling.maxReplicas",
        ),
        (
            # A period too short for its 288 buckets to hold a scrape each.
            {"scaling": {"forecastPeriodSeconds": 300}},
            "scaling.forecastPeriodSeconds must be 0 (off) or at least 600",
        ),
        (
            # Scale to zero needs the router: at zero replicas nothing else answers.
            {"scaling": {"minReplicas": 0}},
            "scaling.minReplicas 0 needs router.enabled",
        ),
        (
            # A canary needs the router: it splits the traffic and measures each variant.
            {"canary": {"model": {"storageUri": "https://h/m2.onnx"}}},
            "canary needs router.enabled",
        ),
        (
            {
                "router": {"enabled": True},
                "canary": {"model": {"storageUri": "https://h/m2.onnx"}, "steps": [50, 20]},
            },
            "canary.steps must increase",
        ),
        (
            {"model": {"name": "m", "format": "onnx", "storageUri": "ftp://x/y"}},
            "spec.model.storageUri",
        ),
        ({"gpu": {"count": -1}}, "spec.gpu.count"),
        (
            {
                "model": {"name": "m", "format": "tensorrt", "storageUri": "s3://bucket/k"},
                "gpu": {"count": 0},
            },
            "gpu.count must be at least 1 for model.format tensorrt",
        ),
        (
            {"model": {"name": "m", "format": "jax", "storageUri": "s3://bucket/k"}},
            "spec.model.format",
        ),
        (
            # The storage initializer would refuse it: refused at admission instead of a
            # pod crash-looping on it.
            {"model": {"name": "m", "format": "onnx", "storageUri": "http://models.example/m"}},
            "model.storageUri: http:// is accepted for loopback hosts only",
        ),
        ({"gpu": {"count": 1, "resourceName": "amd.com/gpu"}}, "spec.gpu.resourceName"),
        (
            {"batching": {"maxBatchSize": 4, "preferredBatchSizes": [8]}},
            "preferredBatchSizes must not exceed maxBatchSize",
        ),
        (
            {"model": {"name": "m", "format": "pytorch", "storageUri": "s3://bucket/k"}},
            "model.inputs and model.outputs are required for model.format pytorch and python",
        ),
        (
            {"gpu": {"count": 2, "parallelism": "Model"}},
            "gpu.parallelism Model needs model.format python",
        ),
        (
            {
                "model": {
                    "name": "m",
                    "format": "onnx",
                    "storageUri": "s3://bucket/k",
                    "inputs": [{"name": "x", "datatype": "FP32", "dims": [0]}],
                }
            },
            "spec.model.inputs[0]",
        ),
        (
            {
                "model": {
                    "name": "m",
                    "format": "onnx",
                    "storageUri": "s3://bucket/k",
                    "outputs": [{"name": "y", "datatype": "STRING", "dims": [1]}],
                }
            },
            "spec.model.outputs[0].datatype",
        ),
    ],
)
def test_invalid_manifests_are_rejected_naming_the_field(
    cluster: ClusterHandle,
    namespace: str,
    operator: OperatorProcess,
    spec: dict[str, Any],
    message: str,
) -> None:
    result = kubectl(
        cluster,
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=yaml.safe_dump(isvc("bad", **spec)),
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr


def test_unknown_runtime_and_missing_secret_become_conditions(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str, tmp_path: pathlib.Path
) -> None:
    apply_yaml(cluster, namespace, yaml.safe_dump(isvc("noruntime", runtime="nope")))
    cond = wait_condition(
        cluster, namespace, "noruntime", "RuntimeResolved", "False", "RuntimeNotFound"
    )
    assert "'nope'" in cond["message"]
    # A missing credentials Secret is reported the way a cluster reports it: the pod cannot
    # start its storage initializer (the operator never reads Secrets: no RBAC for them).
    body = scenario.manifest(
        "nosecret",
        uri=scenario.model_uri(tmp_path),
        gpus=0,
        max_batch=4,
        device_ms=0,
        scaling={},
    )
    spec = yaml.safe_load(body)
    spec["spec"]["model"]["credentialsSecret"] = "missing"
    apply_yaml(cluster, namespace, yaml.safe_dump(spec))
    cond = wait_condition(
        cluster, namespace, "nosecret", "Ready", "False", "CreateContainerConfigError"
    )
    assert 'secret "missing" not found' in cond["message"], cond
    assert not cluster.apps.list_namespaced_deployment(
        namespace, label_selector=f"{scenario.LABEL}=noruntime"
    ).items
    # The operator keeps serving others.
    apply_yaml(cluster, namespace, yaml.safe_dump(isvc("fine")))
    wait_condition(cluster, namespace, "fine", "Ready", "True")
    events = cluster.core.list_namespaced_event(namespace).items
    assert any(e.reason == "CreateContainerConfigError" and e.type == "Warning" for e in events)


def test_deletion_collects_every_child(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str
) -> None:
    apply_yaml(cluster, namespace, yaml.safe_dump(isvc("gone", scaling={"minReplicas": 2})))
    wait_condition(cluster, namespace, "gone", "Ready", "True")
    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "gone")
    policy = client.PolicyV1Api(cluster.api)
    wait_for(
        lambda: (
            not cluster.apps.list_namespaced_deployment(namespace).items
            and not cluster.core.list_namespaced_service(namespace).items
            and not policy.list_namespaced_pod_disruption_budget(namespace).items
            and not cluster.core.list_namespaced_pod(namespace).items
        ),
        60,
        "garbage collection of every child",
    )


def test_drift_is_repaired(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str
) -> None:
    apply_yaml(cluster, namespace, yaml.safe_dump(isvc("drift")))
    wait_condition(cluster, namespace, "drift", "Ready", "True")
    kubectl(
        cluster,
        "-n",
        namespace,
        "patch",
        "deployment",
        "drift-predictor",
        "--type=json",
        "-p",
        json.dumps(
            [
                {
                    "op": "remove",
                    "path": "/spec/template/spec/containers/0/resources/limits/nvidia.com~1gpu",
                }
            ]
        ),
    )
    wait_for(
        lambda: (
            (
                deployment(cluster, namespace, "drift")
                .spec.template.spec.containers[0]
                .resources.limits
                or {}
            ).get("nvidia.com/gpu")
            == "1"
        ),
        what="GPU limit restored",
    )
    cluster.core.delete_namespaced_service("drift-predictor", namespace)
    wait_for(
        lambda: cluster.core.list_namespaced_service(namespace).items, what="Service recreated"
    )


def test_restart_makes_zero_writes_and_apply_twice_is_a_noop(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str
) -> None:
    manifest = yaml.safe_dump(isvc("steady", scaling={"minReplicas": 1, "maxReplicas": 5}))
    apply_yaml(cluster, namespace, manifest)
    wait_condition(cluster, namespace, "steady", "Ready", "True")
    # The scaling path moves replicas (as the autoscaler would); re-applying the manifest
    # must keep them and the generation.
    from kubeinfer.clients import kube  # the same write path the autoscaler uses

    kube._client = cluster.api
    kube.set_scale(namespace, "steady-predictor", 3)
    wait_for(
        lambda: get_isvc(cluster, namespace, "steady")["status"].get("readyReplicas") == 3,
        what="3 ready replicas",
    )
    generation = get_isvc(cluster, namespace, "steady")["metadata"]["generation"]
    apply_yaml(cluster, namespace, manifest)
    diff = kubectl(cluster, "diff", "-n", namespace, "-f", "-", stdin=manifest, check=False)
    assert diff.returncode == 0, diff.stdout

    def ticks() -> float:
        """The autoscaler's decisions on this service since the operator process started."""
        return operator.metric(
            "kubeinfer_autoscaler_decisions_total", namespace=namespace, inferenceservice="steady"
        )

    # Re-applying changes nothing, so no event comes to wait for: two autoscaler ticks are
    # the window in which a wrong reaction (replicas reset to the manifest's) would show.
    after_apply = ticks()
    wait_for(lambda: ticks() >= after_apply + 2, what="two autoscaler ticks after the apply")
    assert deployment(cluster, namespace, "steady").spec.replicas == 3
    assert get_isvc(cluster, namespace, "steady")["metadata"]["generation"] == generation
    # The autoscaler has recorded what it saw (it holds 3: these pods serve no metrics).
    wait_for(
        lambda: (
            (get_isvc(cluster, namespace, "steady")["status"].get("autoscaler") or {}).get(
                "desiredReplicas"
            )
            == 3
        ),
        what="autoscaler status",
    )
    operator.restart()
    # The restarted operator has handled its initial listings (a reconcile) and the
    # autoscaler has ticked twice: any write a restart would cause has been made by then.
    wait_for(
        lambda: ticks() >= 2 and operator.metric("kubeinfer_reconcile_duration_seconds_count") >= 1,
        what="a reconcile and two autoscaler ticks after the restart",
        tolerate_errors=True,
    )
    writes = operator.metric("kubeinfer_api_writes_total", namespace=namespace)
    events = [
        f"{e.reason}: {e.message}"
        for e in cluster.core.list_namespaced_event(namespace).items
        if e.source and e.source.component == "kubeinfer"
    ]
    if writes:
        (operator.log_dir / "restart-debug.txt").write_text(
            operator.metrics_text("kubeinfer_api_writes_total")
            + "\n"
            + "\n".join(events)
            + "\n"
            + json.dumps(get_isvc(cluster, namespace, "steady")["status"], indent=1)
            + "\n".join(
                f"{q.metadata.name} {q.spec.node_name} {q.status.phase} "
                f"{[(c.type, c.status, c.reason) for c in q.status.conditions or []]}"
                for q in cluster.core.list_namespaced_pod(namespace).items
            )
            + "\n".join(
                f"{n.metadata.name} {[(c.type, c.status) for c in n.status.conditions]}"
                for n in cluster.core.list_node().items
            )
            + kubectl(
                cluster,
                "get",
                "rs,pods,inferenceruntimes",
                "-n",
                namespace,
                "-o",
                "yaml",
                "--show-managed-fields",
            ).stdout
            + operator.log()
        )
    assert writes == 0, (operator.metrics_text("kubeinfer_api_writes_total"), events[-4:])
    assert deployment(cluster, namespace, "steady").spec.replicas == 3


def test_stopped_frees_gpus_and_off_mode_follows_kubectl_scale(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str
) -> None:
    apply_yaml(
        cluster, namespace, yaml.safe_dump(isvc("manual", scaling={"mode": "Off"}, replicas=1))
    )
    wait_condition(cluster, namespace, "manual", "Ready", "True")
    kubectl(cluster, "-n", namespace, "scale", "kisvc", "manual", "--replicas=3")
    wait_for(
        lambda: deployment(cluster, namespace, "manual").spec.replicas == 3,
        what="kubectl scale kisvc reaches the Deployment",
    )
    kubectl(
        cluster,
        "-n",
        namespace,
        "patch",
        "kisvc",
        "manual",
        "--type=merge",
        "-p",
        '{"spec": {"stopped": true}}',
    )
    wait_condition(cluster, namespace, "manual", "Ready", "False", "Stopped")
    wait_for(
        lambda: not cluster.core.list_namespaced_pod(namespace).items, 60, "pods gone after stop"
    )
    assert deployment(cluster, namespace, "manual").spec.replicas == 0


def test_printer_columns(cluster: ClusterHandle, operator: OperatorProcess, namespace: str) -> None:
    apply_yaml(cluster, namespace, yaml.safe_dump(isvc("cols")))
    wait_condition(cluster, namespace, "cols", "Ready", "True")
    out = kubectl(cluster, "get", "kisvc", "-n", namespace).stdout
    header, row = out.splitlines()[:2]
    assert header.split()[:6] == ["NAME", "READY", "RUNTIME", "REPLICAS", "GPUS", "URL"]
    assert row.split()[:5] == ["cols", "True", "onnxruntime", "1", "1"]


def test_crds_are_small_enough_for_client_side_apply() -> None:
    for path in pathlib.Path(REPO / "crds").glob("*.yaml"):
        # kubectl's client-side apply stores the object in a 256 KiB annotation.
        assert path.stat().st_size < 64 * 1024, path
