"""classify_pods(): how the autoscaler and status read the service's pods as capacity."""

from __future__ import annotations

from typing import Any

import pytest

from kubeinfer.core import census


def pod(
    name: str,
    *,
    ready: bool = False,
    scheduled: str | None = None,
    node: str | None = None,
    deleting: bool = False,
    why: str = "",
) -> dict[str, Any]:
    conditions: list[dict[str, str]] = []
    if scheduled is not None:
        refused = {"reason": "Unschedulable", "message": why} if scheduled == "False" else {}
        conditions.append({"type": "PodScheduled", "status": scheduled, **refused})
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


GPU = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu. preemption: 0/4 nodes are available."
CPU = "0/4 nodes are available: 4 Insufficient cpu."


def test_a_finished_pod_is_no_capacity() -> None:
    # Evicted (Failed) or completed pods stay listed, bound to their node, until the garbage
    # collector removes them: neither serving nor on their way.
    for phase in ("Failed", "Succeeded"):
        done = {**pod("e", scheduled="True", node="n1"), "status": {"phase": phase}}
        seen = census.classify_pods([done, pod("a", ready=True, node="n1")], "nvidia.com/gpu")
        assert (seen.live, seen.starting, list(seen.ready)) == (1, 0, ["a"])


def test_each_pod_lands_in_one_bucket() -> None:
    seen = census.classify_pods(
        [
            pod("a", ready=True, scheduled="True", node="n1"),
            pod("b", scheduled="True", node="n1"),  # placed, starting
            pod("c", node="n2"),  # bound, kubelet has not reported yet: starting
            pod("d", scheduled="False", why=GPU),  # no node has a free GPU
            pod("g", scheduled="False", why=CPU),  # no node has room: not for lack of GPUs
            pod("e"),  # the scheduler has not answered
            pod("f", ready=True, scheduled="True", node="n1", deleting=True),
        ],
        "nvidia.com/gpu",
    )
    assert seen.ready == {"a": "127.1.1.5"}
    assert (seen.starting, seen.waiting_for_gpu, seen.stuck, seen.unplaced) == (2, 1, 1, 1)
    assert seen.live == 6
    assert seen.cold_starts == [(seen.cold_starts[0][0], seen.cold_starts[0][0] + 7)]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (GPU, "gpu"),
        (CPU, "cpu"),
        ("0/4 nodes are available: 2 Insufficient memory, 2 Insufficient nvidia.com/gpu.", "gpu"),
        (
            "0/4 nodes are available: 4 node(s) didn't match Pod's node affinity/selector.",
            "selector",
        ),
        ("0/4 nodes are available: 4 node(s) had untolerated taint {dedicated: infra}.", "taints"),
        (
            "0/1 nodes are available: 1 Insufficient nvidia.com/mig-1g.10gb.",
            "nvidia.com/mig-1g.10gb",
        ),
        ("something new", "other"),
    ],
)
def test_the_scheduler_reason_is_named(message: str, reason: str) -> None:
    assert census.scheduling_reason(message, "nvidia.com/gpu") == reason
