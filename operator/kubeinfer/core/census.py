"""A service's pods, sorted by what they mean: capacity, capacity on its way, or stuck. Pure.

Owns: reading the scheduler's verdict on a pod (PodScheduled=False and its message) into a
named reason - short of GPUs, short of another resource, no node matching its selector or
affinity, taints it does not tolerate - and the census the autoscaler and status both read.
Only a GPU shortage is "waiting for GPU capacity" (the condition, the alert, the autoscaler's
block); every other reason is named as it is.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any

# A pod in one of these phases has finished: it holds nothing on its node (the scheduler's
# count) and the ReplicaSet controller no longer counts it among the replicas. Such a pod stays
# listed until it is garbage-collected (an evicted pod, for one), so every count skips it.
FINISHED_PHASES = frozenset({"Succeeded", "Failed"})


def finished(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in FINISHED_PHASES


@dataclasses.dataclass(frozen=True)
class Unschedulable:
    pod: str
    # "gpu" for the service's GPU resource; "cpu", "memory", "pods", another resource name;
    # "selector", "taints", "affinity"; or "other".
    reason: str
    message: str

    @property
    def waits_for_gpu(self) -> bool:
        return self.reason == "gpu"


_INSUFFICIENT = re.compile(r"Insufficient ([\w./-]*\w)")
_KINDS = (
    ("didn't match Pod's node affinity/selector", "selector"),
    ("node(s) had untolerated taint", "taints"),
    ("didn't match pod affinity", "affinity"),
    ("didn't match pod anti-affinity", "affinity"),
    ("didn't satisfy existing pods anti-affinity", "affinity"),
    ("didn't match pod topology spread constraints", "affinity"),
)


def scheduling_reason(message: str, gpu_resource: str) -> str:
    """The scheduler's message, reduced to what blocks the pod (the first reason it names)."""
    insufficient = _INSUFFICIENT.findall(message)
    if gpu_resource in insufficient:
        return "gpu"
    if insufficient:
        return str(insufficient[0])
    for fragment, kind in _KINDS:
        if fragment in message:
            return kind
    return "other"


def unschedulable(pods: Sequence[dict[str, Any]], gpu_resource: str) -> list[Unschedulable]:
    """Pods the scheduler refused (PodScheduled=False, Unschedulable), with the reason."""
    out: list[Unschedulable] = []
    for pod in pods:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                message = str(cond.get("message") or "")
                out.append(
                    Unschedulable(
                        pod=str(pod["metadata"]["name"]),
                        reason=scheduling_reason(message, gpu_resource),
                        message=message,
                    )
                )
    return out


def _parse_time(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclasses.dataclass(frozen=True)
class PodCensus:
    """The service's live pods, sorted by what they mean for capacity."""

    ready: dict[str, str]  # pod name -> IP, the pods to scrape
    starting: int  # placed on a node, not Ready yet
    waiting_for_gpu: int  # the scheduler found no node with free GPUs
    stuck: int  # the scheduler refused them for another reason (named in status)
    unplaced: int  # the scheduler has not answered yet
    # (created, ready) timestamps of Ready pods, oldest Ready first, for the cold start.
    cold_starts: list[tuple[float, float]]

    @property
    def live(self) -> int:
        return len(self.ready) + self.starting + self.waiting_for_gpu + self.stuck + self.unplaced


def classify_pods(pods: Sequence[dict[str, Any]], gpu_resource: str) -> PodCensus:
    refused = {u.pod: u for u in unschedulable(pods, gpu_resource)}
    ready: dict[str, str] = {}
    starting = waiting = stuck = unplaced = 0
    pairs: list[tuple[float, float]] = []
    for pod in pods:
        meta, st = pod["metadata"], pod.get("status") or {}
        if meta.get("deletionTimestamp") or finished(pod):
            # An evicted pod (Failed) stays listed until garbage-collected: no capacity.
            continue
        conds = {c.get("type"): c for c in st.get("conditions") or []}
        if conds.get("Ready", {}).get("status") == "True" and st.get("podIP"):
            ready[meta["name"]] = st["podIP"]
            created = _parse_time(meta.get("creationTimestamp"))
            became = _parse_time(conds["Ready"].get("lastTransitionTime"))
            if created is not None and became is not None:
                pairs.append((created, became))
        elif meta["name"] in refused:
            if refused[meta["name"]].waits_for_gpu:
                waiting += 1
            else:
                stuck += 1
        elif conds.get("PodScheduled", {}).get("status") == "True" or (pod.get("spec") or {}).get(
            "nodeName"
        ):
            starting += 1
        else:
            unplaced += 1
    pairs.sort(key=lambda p: p[1])
    return PodCensus(ready, starting, waiting, stuck, unplaced, pairs)
