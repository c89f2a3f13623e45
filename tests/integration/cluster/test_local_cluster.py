"""The local cluster behaves like a real one: GPU scheduling, loopback addresses, GC, CEL."""

from __future__ import annotations

import ipaddress
import subprocess

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubeinfer_cluster import run
from tests.conftest import ClusterHandle
from tests.waiting import wait_for

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def gpu_deployment(name: str, replicas: int, gpus: int) -> client.V1Deployment:
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels={"app": name}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": name}),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(
                            name="server",
                            image="example.invalid/server:1",
                            resources=client.V1ResourceRequirements(
                                limits={"nvidia.com/gpu": str(gpus)}
                            ),
                        )
                    ]
                ),
            ),
        ),
    )


def test_four_ready_gpu_nodes_on_loopback(cluster: ClusterHandle) -> None:
    nodes = cluster.core.list_node().items
    assert len(nodes) >= 4
    for node in nodes[:4]:
        ready = {c.type: c.status for c in node.status.conditions}["Ready"]
        assert ready == "True", node.metadata.name
        assert node.status.allocatable["nvidia.com/gpu"] == "8"
        internal = [a.address for a in node.status.addresses if a.type == "InternalIP"]
        assert internal and all(ipaddress.ip_address(a) in LOOPBACK for a in internal)
        assert ipaddress.ip_network(node.spec.pod_cidr).subnet_of(LOOPBACK)


def test_gpu_deployment_schedules_with_loopback_pod_ips(
    cluster: ClusterHandle, namespace: str
) -> None:
    cluster.apps.create_namespaced_deployment(namespace, gpu_deployment("gpu", 3, 1))

    def running() -> bool:
        pods = cluster.core.list_namespaced_pod(namespace, label_selector="app=gpu").items
        return len(pods) == 3 and all(p.status.phase == "Running" and p.status.pod_ip for p in pods)

    wait_for(running, what="3 running GPU pods")
    for pod in cluster.core.list_namespaced_pod(namespace, label_selector="app=gpu").items:
        assert ipaddress.ip_address(pod.status.pod_ip) in LOOPBACK
        assert pod.spec.node_name.startswith("gpu-node-")


def test_oversized_gpu_request_stays_pending(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apps.create_namespaced_deployment(namespace, gpu_deployment("huge", 1, 9))

    def failed_scheduling() -> bool:
        events = cluster.core.list_namespaced_event(namespace).items
        return any(
            e.reason == "FailedScheduling" and "Insufficient nvidia.com/gpu" in e.message
            for e in events
        )

    wait_for(failed_scheduling, what="FailedScheduling for nvidia.com/gpu")
    pods = cluster.core.list_namespaced_pod(namespace, label_selector="app=huge").items
    assert [p.status.phase for p in pods] == ["Pending"]


def test_deleting_deployment_collects_replicasets_and_pods(
    cluster: ClusterHandle, namespace: str
) -> None:
    cluster.apps.create_namespaced_deployment(namespace, gpu_deployment("gc", 2, 1))
    wait_for(lambda: len(cluster.core.list_namespaced_pod(namespace).items) == 2, what="2 pods")
    cluster.apps.delete_namespaced_deployment("gc", namespace, propagation_policy="Background")
    wait_for(
        lambda: (
            not cluster.apps.list_namespaced_replica_set(namespace).items
            and not cluster.core.list_namespaced_pod(namespace).items
        ),
        what="garbage collection",
    )


CEL_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.celtest.kubeinfer.io}
spec:
  group: celtest.kubeinfer.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              min: {type: integer}
              max: {type: integer}
            x-kubernetes-validations:
            - rule: self.min <= self.max
              message: min must not exceed max
"""


def test_cel_rule_rejects_bad_object(cluster: ClusterHandle, namespace: str) -> None:
    ext = client.ApiextensionsV1Api(cluster.api)
    crd = yaml.safe_load(CEL_CRD)
    try:
        ext.create_custom_resource_definition(crd)
    except ApiException as exc:
        if exc.status != 409:
            raise
    obj = {
        "apiVersion": "celtest.kubeinfer.io/v1",
        "kind": "Widget",
        "metadata": {"name": "bad"},
        "spec": {"min": 3, "max": 1},
    }

    def rejected() -> str | None:
        try:
            cluster.custom.create_namespaced_custom_object(
                "celtest.kubeinfer.io", "v1", namespace, "widgets", obj
            )
        except ApiException as exc:
            return exc.body if exc.status == 422 else None
        raise AssertionError("a Widget with min > max was accepted")

    body: str | None = None

    def established() -> bool:
        nonlocal body
        try:
            body = rejected()
        except ApiException:
            return False
        return body is not None

    wait_for(established, what="CRD established and rule enforced")
    assert body is not None and "min must not exceed max" in body


def test_down_stops_every_started_process() -> None:
    cluster = run.up("pytest-down-check", nodes=run.NodeSpec(count=1), tie_to_parent=True)
    pids = dict(cluster.pids)
    assert all(run._alive(pid) for pid in pids.values())
    cluster.down()
    assert not any(run._alive(pid) for pid in pids.values()), pids
    assert not run.state_dir("pytest-down-check").exists()


@pytest.mark.parametrize("args", [["get", "nodes", "-o", "name"]])
def test_kubectl_works_with_written_kubeconfig(cluster: ClusterHandle, args: list[str]) -> None:
    out = subprocess.run(
        [str(cluster.tools.kubectl), *args],
        env=cluster.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "node/gpu-node-1" in out
