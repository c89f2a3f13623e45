"""classify_pods(): how the autoscaler reads the service's pods as capacity."""

from __future__ import annotations

from typing import Any

from kubeinfer.engines.autoscaler import classify_pods


def pod(
    name: str,
    *,
    ready: bool = False,
    scheduled: str | None = None,
    node: str | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    conditions = []
    if scheduled is not None:
        conditions.append({"type": "PodScheduled", "status": scheduled})
    if ready:
        conditions.append(
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-29T10:00:07Z"}
        )
    meta: dict[str, Any] = {"name": name, "creationTimestamp": "2026-11-29T10:00:00Z"}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-29T10:00:09Z"
    return {
        "metadata": meta,
        "spec": {"nodeName": node} if node else {},
        "status": {"conditions": conditions, "podIP": "127.1.1.5" if ready else None},
    }


def test_each_pod_lands_in_one_bucket() -> None:
    census = classify_pods(
        [
            pod("a", ready=True, scheduled="True", node="n1"),
            pod("b", scheduled="True", node="n1"),  # placed, starting
            pod("c", node="n2"),  # bound, kubelet has not reported yet: starting
            pod("d", scheduled="False"),  # no node has room
            pod("e"),  # the scheduler has not answered
            pod("f", ready=True, scheduled="True", node="n1", deleting=True),
        ]
    )
    assert census.ready == {"a": "127.1.1.5"}
    assert (census.starting, census.unschedulable, census.unplaced) == (2, 1, 1)
    assert census.live == 5
    assert census.cold_starts == [(census.cold_starts[0][0], census.cold_starts[0][0] + 7)]
