"""Free GPUs per node, as the scheduler would count them, and where a pod may use them."""

from __future__ import annotations

from typing import Any

from kubeinfer.core import capacity

GPU = "nvidia.com/gpu"
PRODUCT = "nvidia.com/gpu.product"
GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}


def node(name: str, gpus: int, *, product: str = "H100", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {PRODUCT: product}},
        "spec": spec,
        "status": {"allocatable": {"cpu": "32", GPU: str(gpus)}},
    }


def pod(on: str | None, gpus: int, phase: str = "Running", **extra: Any) -> dict[str, Any]:
    container = {"name": "c", "resources": {"limits": {GPU: str(gpus)}, "requests": {"cpu": "1"}}}
    return {
        "spec": {"nodeName": on, "containers": [container], **extra},
        "status": {"phase": phase},
    }


def free(nodes: list[dict[str, Any]], pods: list[dict[str, Any]], **kw: Any) -> int:
    census = capacity.build_census(nodes, pods)
    return capacity.most_free(
        census,
        resource=kw.get("resource", GPU),
        node_selector=kw.get("selector", {}),
        tolerations=kw.get("tolerations", [GPU_TOLERATION]),
    )


def test_free_is_allocatable_minus_the_pods_bound_there() -> None:
    nodes = [node("a", 8), node("b", 8)]
    assert free(nodes, [pod("a", 8), pod("b", 5)]) == 3
    assert free(nodes, [pod("a", 8), pod("b", 8)]) == 0
    # The most on one node, not the cluster's sum: a pod needs its GPUs on one node.
    assert free(nodes, [pod("a", 6), pod("b", 6)]) == 2


def test_finished_and_unbound_pods_hold_nothing() -> None:
    nodes = [node("a", 1)]
    assert free(nodes, [pod("a", 1, phase="Succeeded"), pod("a", 1, phase="Failed")]) == 1
    assert free(nodes, [pod(None, 1, phase="Pending")]) == 1


def test_init_containers_count_as_the_scheduler_counts_them() -> None:
    init = [{"name": "i", "resources": {"requests": {GPU: "3"}}}]
    # max(sum of containers = 1, biggest init = 3)
    assert free([node("a", 4)], [pod("a", 1, initContainers=init)]) == 1


def test_only_nodes_the_pod_may_use() -> None:
    nodes = [
        node("other-product", 8, product="A100"),
        node("cordoned", 8, unschedulable=True),
        node("tainted", 8, taints=[{"key": "team", "value": "x", "effect": "NoSchedule"}]),
        node("gpu-taint", 2, taints=[{"key": GPU, "effect": "NoSchedule"}]),
        node("soft", 1, taints=[{"key": "team", "value": "x", "effect": "PreferNoSchedule"}]),
    ]
    assert free(nodes, [], selector={PRODUCT: "H100"}) == 2
    assert free(nodes, [], selector={PRODUCT: "H100"}, tolerations=[]) == 1
    team = {"key": "team", "operator": "Equal", "value": "x"}
    assert free(nodes, [], selector={PRODUCT: "H100"}, tolerations=[GPU_TOLERATION, team]) == 8
    assert free(nodes, [], selector={PRODUCT: "A100"}) == 8


def test_other_resources_are_their_own() -> None:
    mig = "nvidia.com/mig-1g.10gb"
    n = node("a", 8)
    n["status"]["allocatable"][mig] = "7"
    assert free([n], [pod("a", 8)], resource=mig) == 7
    assert free([n], [pod("a", 8)]) == 0


def test_tolerates() -> None:
    taint = {"key": "k", "value": "v", "effect": "NoSchedule"}
    assert capacity.tolerates([{"operator": "Exists"}], taint)
    assert capacity.tolerates([{"key": "k", "operator": "Exists"}], taint)
    assert capacity.tolerates([{"key": "k", "value": "v"}], taint)
    assert not capacity.tolerates([{"key": "k", "value": "w"}], taint)
    assert not capacity.tolerates(
        [{"key": "k", "operator": "Exists", "effect": "NoExecute"}], taint
    )
    assert not capacity.tolerates([], taint)
