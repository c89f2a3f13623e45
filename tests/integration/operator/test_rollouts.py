"""GPU-safe rollouts on the real API server, scheduler and Deployment controller.

Each test gets its own GPU node pool (one kwok node with a product label no other node has, so
the service's pods can land only there and nothing else lands there). On a pool with no free
GPU, the hard-coded maxSurge 1 of old deadlocked: the surge pod waited for the GPU the old pod
held, and the old pod waited for the surge pod to be Ready. The operator now takes the old pod
down first there, and surges where a node has room; status.rollout names which and why.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from kubeinfer_cluster import run
from tests.conftest import ClusterHandle
from tests.integration.operator.test_inferenceservice import (
    apply_yaml,
    condition,
    get_isvc,
    isvc,
    wait_condition,
)
from tests.operator_process import OperatorProcess
from tests.waiting import wait_for

GROUP, VERSION, PLURAL = "kubeinfer.io", "v1alpha1", "inferenceservices"


@pytest.fixture
def pool(cluster: ClusterHandle, request: pytest.FixtureRequest) -> Iterator[str]:
    """A one-node GPU pool with ``gpus`` GPUs (indirect parameter); yields its product label."""
    gpus: int = request.param
    product = f"test-pool-{uuid.uuid4().hex[:8]}"
    # Node indexes 20-21 are this module's (pod CIDR 127.1.N.0/24); one pool at a time.
    index = 20 + gpus % 2
    name = run.add_node(
        cluster.kubeconfig,
        index,
        run.NodeSpec(count=1, gpus_per_node=gpus, gpu_product=product, mig_slices=0),
    )

    def node_ready() -> bool:
        node = cluster.core.read_node(name)
        return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])

    wait_for(node_ready, 60, f"node {name} Ready")
    try:
        yield product
    finally:
        cluster.core.delete_node(name)


def rollout_status(cluster: ClusterHandle, ns: str, name: str) -> dict[str, Any]:
    st: dict[str, Any] = (get_isvc(cluster, ns, name).get("status") or {}).get("rollout") or {}
    return st


def finished(cluster: ClusterHandle, ns: str, name: str) -> dict[str, Any] | None:
    st = rollout_status(cluster, ns, name)
    return st if st.get("state") == "Complete" else None


def rolled_out(cluster: ClusterHandle, ns: str, name: str, template_hash: str) -> bool:
    """The Deployment finished: one up-to-date available replica, no old pod left, and the pod
    that serves is from a new ReplicaSet."""
    dep = cluster.apps.read_namespaced_deployment(f"{name}-predictor", ns)
    st = dep.status
    done = (
        (st.observed_generation or 0) >= dep.metadata.generation
        and st.updated_replicas == 1
        and st.replicas == 1
        and st.available_replicas == 1
    )
    pods = cluster.core.list_namespaced_pod(
        ns, label_selector=f"kubeinfer.io/inferenceservice={name}"
    ).items
    hashes = {p.metadata.labels.get("pod-template-hash") for p in pods}
    return done and len(pods) == 1 and template_hash not in hashes


def serve_then_roll(cluster: ClusterHandle, ns: str, name: str, product: str) -> str:
    """One replica holding one GPU of the pool, Ready; then a new model version. Returns the
    pod-template-hash of the replica before the rollout."""
    apply_yaml(
        cluster,
        ns,
        yaml.safe_dump(
            isvc(
                name,
                gpu={"count": 1, "product": product},
                scaling={"mode": "Off"},
                replicas=1,
            )
        ),
    )
    wait_condition(cluster, ns, name, "Ready", "True", timeout=60)
    # Created, never rolled: nothing was counted yet, and the safe strategy stands.
    st = rollout_status(cluster, ns, name)
    assert (st["state"], st["strategy"], st["reason"]) == (
        "NotStarted",
        "NoSurge",
        "NoRolloutYet",
    ), st
    [before] = cluster.core.list_namespaced_pod(
        ns, label_selector=f"kubeinfer.io/inferenceservice={name}"
    ).items
    assert before.spec.node_name and before.status.phase == "Running"
    cluster.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, name, {"spec": {"model": {"version": 2}}}
    )
    template_hash: str = before.metadata.labels["pod-template-hash"]
    return template_hash


@pytest.mark.parametrize("pool", [1], indirect=True)
def test_a_full_gpu_pool_rolls_out_without_deadlock(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str, pool: str
) -> None:
    old = serve_then_roll(cluster, namespace, "full", pool)

    def no_surge() -> dict[str, Any] | None:
        st = rollout_status(cluster, namespace, "full")
        return st if st.get("reason") == "NoSpareGPUCapacity" else None

    st = wait_for(no_surge, 30, "status.rollout NoSpareGPUCapacity")
    assert st["strategy"] == "NoSurge" and (st["maxSurge"], st["maxUnavailable"]) == (0, 1)
    assert "most free on one node: 0" in st["message"]
    dep = cluster.apps.read_namespaced_deployment("full-predictor", namespace)
    update = dep.spec.strategy.rolling_update
    assert (update.max_surge, update.max_unavailable) == (0, 1)
    # With a surge the new pod would wait for the only GPU forever; here it gets it.
    wait_for(lambda: rolled_out(cluster, namespace, "full", old), 90, "the rollout to finish")
    # Finished: status.rollout says so, and still why the rollout went without a surge.
    done = wait_for(lambda: finished(cluster, namespace, "full"), 30, "status.rollout Complete")
    assert done["reason"] == "NoSpareGPUCapacity", done
    [pod] = cluster.core.list_namespaced_pod(
        namespace, label_selector="kubeinfer.io/inferenceservice=full"
    ).items
    init = pod.spec.init_containers[0]
    assert "--version=2" in init.args
    wait_condition(cluster, namespace, "full", "Ready", "True", timeout=60)
    stuck = condition(get_isvc(cluster, namespace, "full"), "RolloutStuck")
    assert stuck and stuck["status"] == "False", stuck


@pytest.mark.parametrize("pool", [2], indirect=True)
def test_a_pool_with_a_free_gpu_surges(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str, pool: str
) -> None:
    old = serve_then_roll(cluster, namespace, "roomy", pool)

    def surge() -> dict[str, Any] | None:
        st = rollout_status(cluster, namespace, "roomy")
        # The decision of this rollout, not the one recorded at creation.
        dep = cluster.apps.read_namespaced_deployment("roomy-predictor", namespace)
        revision = (dep.metadata.annotations or {}).get("deployment.kubernetes.io/revision")
        return st if st.get("strategy") == "Surge" and revision == "2" else None

    st = wait_for(surge, 30, "status.rollout Surge for revision 2")
    assert st["reason"] == "SpareGPUCapacity" and (st["maxSurge"], st["maxUnavailable"]) == (1, 0)
    # Counted when the rollout started: the serving replica holds one of the two GPUs.
    assert "has 1 free nvidia.com/gpu" in st["message"], st
    dep = cluster.apps.read_namespaced_deployment("roomy-predictor", namespace)
    update = dep.spec.strategy.rolling_update
    assert (update.max_surge, update.max_unavailable) == (1, 0)
    wait_for(lambda: rolled_out(cluster, namespace, "roomy", old), 90, "the rollout to finish")
    done = wait_for(lambda: finished(cluster, namespace, "roomy"), 30, "status.rollout Complete")
    assert done["reason"] == "SpareGPUCapacity", done
