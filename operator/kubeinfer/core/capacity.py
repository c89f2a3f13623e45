"""The cluster's free GPUs, node by node, from Node and Pod objects. Pure: no I/O here.

Owns: what "spare GPU capacity for a surge" means - the most free units of a GPU resource on one
node where a service's pod could land (its node selector matches, every NoSchedule/NoExecute
taint is tolerated, the node is not cordoned). Free is allocatable minus what the node's
non-terminated pods request, counted as the scheduler counts it (the larger of the containers'
sum and the biggest init container). A pod needs all its GPUs on one node, so the cluster-wide
sum would overstate the room for one more replica.

Not counted: pods other services have waiting for GPUs (they may take the room first). A surge
that then cannot be placed is caught by the rollout decision (``core.rollout``), which falls
back to no surge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kubeinfer.core import census

_BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})


@dataclasses.dataclass(frozen=True)
class NodeGPUs:
    """One node as a GPU pod sees it: where it is, what it repels, what it has free."""

    name: str
    labels: Mapping[str, str]
    taints: tuple[Mapping[str, Any], ...]
    cordoned: bool
    free: Mapping[str, int]  # resource name -> free units (GPU-like extended resources only)


@dataclasses.dataclass(frozen=True)
class Census:
    nodes: tuple[NodeGPUs, ...]


def _units(quantity: Any) -> int:
    """An extended resource's quantity (always whole units) as an int; anything else is 0."""
    try:
        return int(str(quantity))
    except ValueError:
        return 0


def _extended(resources: Mapping[str, Any] | None) -> dict[str, int]:
    """GPU-like resources (a domain-prefixed name: nvidia.com/gpu, nvidia.com/mig-1g.10gb)."""
    return {k: _units(v) for k, v in (resources or {}).items() if "/" in k}


def pod_requests(pod: Mapping[str, Any]) -> dict[str, int]:
    """The extended resources a pod holds on its node, as the scheduler counts them."""
    spec = pod.get("spec") or {}

    def of(container: Mapping[str, Any]) -> dict[str, int]:
        res = container.get("resources") or {}
        # Extended resources cannot be overcommitted: a limit alone is also the request.
        return {**_extended(res.get("limits")), **_extended(res.get("requests"))}

    total: dict[str, int] = {}
    for container in spec.get("containers") or []:
        for name, n in of(container).items():
            total[name] = total.get(name, 0) + n
    for container in spec.get("initContainers") or []:
        for name, n in of(container).items():
            total[name] = max(total.get(name, 0), n)
    return total


def build_census(nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]) -> Census:
    """Free GPU units per node: allocatable minus the requests of pods bound there."""
    used: dict[str, dict[str, int]] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or census.finished(pod):
            continue
        held = used.setdefault(node, {})
        for name, n in pod_requests(pod).items():
            held[name] = held.get(name, 0) + n
    out = []
    for node in nodes:
        meta, spec = node.get("metadata") or {}, node.get("spec") or {}
        allocatable = _extended((node.get("status") or {}).get("allocatable"))
        held = used.get(meta.get("name", ""), {})
        out.append(
            NodeGPUs(
                name=str(meta.get("name", "")),
                labels=dict(meta.get("labels") or {}),
                taints=tuple(spec.get("taints") or ()),
                cordoned=bool(spec.get("unschedulable")),
                free={k: max(0, n - held.get(k, 0)) for k, n in allocatable.items()},
            )
        )
    return Census(tuple(out))


def tolerates(tolerations: Sequence[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    """Kubernetes' toleration match: key (empty with Exists matches all), value, effect."""
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (
            taint.get("value") or ""
        ):
            return True
    return False


def most_free(
    census: Census,
    *,
    resource: str,
    node_selector: Mapping[str, str],
    tolerations: Sequence[Mapping[str, Any]],
) -> int:
    """The most free units of ``resource`` on one node a pod with this placement may use."""
    best = 0
    for node in census.nodes:
        if node.cordoned or any(node.labels.get(k) != v for k, v in node_selector.items()):
            continue
        blocking = [t for t in node.taints if t.get("effect") in _BLOCKING_EFFECTS]
        if all(tolerates(tolerations, t) for t in blocking):
            best = max(best, node.free.get(resource, 0))
    return best
