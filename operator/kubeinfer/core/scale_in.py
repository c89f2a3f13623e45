"""Load-aware scale-in: which pods a scale-in removes, as annotations to write. Pure.

Owns: the choice of the pods to remove (the least loaded Ready pods, by the tick's scrape),
the marks that make it so - ``controller.kubernetes.io/pod-deletion-cost`` (the ReplicaSet
controller deletes the lowest cost first) and ``router.kubeinfer.io/draining`` (the router
sends a draining pod no new work and lets its in-flight requests finish) - the rule for
clearing marks on pods that were marked but survived, and backing off when another field
manager owns the deletion cost or the API server refused our marks on a pod (a 409 from a
manager the store had not seen yet, a 422 invalid value, an admission webhook's no). No I/O
here: the autoscaler engine reads the pods, calls ``plan`` and writes the returned
annotations (server-side apply as its own field manager, without force) just before it
lowers the replica count.

Why marks, not a delete: the Deployment controller alone removes pods; pod-deletion-cost is
its documented hook (beta since 1.22), and it is read when the ReplicaSet scales, so it is
written just before the scale. The ReplicaSet controller removes unscheduled, pending and
not-Ready pods before any Ready one, whatever their cost: only the Ready pods beyond those
are chosen here. During a rollout the Deployment controller splits a scale-in across its
ReplicaSets proportionally, so a marked pod of the other ReplicaSet may survive; the
survivor's marks are then cleared once the scale-in has settled.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping, Sequence
from typing import Any

from kubeinfer.core import census

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
# The router reads the same key (kubeinfer_router.inventory.DRAINING_ANNOTATION; the packages
# are independent, a unit test keeps the two equal).
DRAINING = "router.kubeinfer.io/draining"
# Every pod we do not mark has no deletion cost (0): we back off whenever another manager owns
# the annotation on any pod, so any negative value ranks a marked pod first.
MARKED_COST = "-1"
# Pods named in a status message at most (the rest are counted): the history keeps ten records.
NAMED = 4


@dataclasses.dataclass(frozen=True, kw_only=True)
class PodView:
    """One live (not terminating) pod of the service, as the scale-in reads it."""

    name: str
    # The engine's write carries it as a precondition (a new pod under the same name is not
    # the one chosen).
    uid: str = ""
    ready: bool
    # Requests queued + executing at the tick's scrape; None when the scrape did not answer.
    load: float | None
    annotations: Mapping[str, str]
    # For each of the two marks, the field managers that own it (metadata.managedFields).
    owners: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)

    def owned_by(self, manager: str) -> bool:
        """Whether ``manager`` owns either mark on this pod (and so may remove it)."""
        return any(manager in managers for managers in self.owners.values())


class Outcome(enum.StrEnum):
    MARKED = "Marked"  # the chosen pods get marks, stale ones are cleared
    CLEARED = "Cleared"  # no scale-in: marks left on survivors are removed
    # Another manager owns the deletion cost, or the API server refused our marks: no marks.
    BACKED_OFF = "BackedOff"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    outcome: Outcome
    # The pods chosen for removal, least loaded first.
    chosen: tuple[str, ...] = ()
    # Pod name -> the complete set of annotations our field manager applies to it (an empty
    # mapping removes the marks we own). Only pods whose marks change are listed.
    writes: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    # The uid of each pod in ``writes``, the write's precondition.
    uids: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # One sentence for the decision record and the Event; empty when there is nothing to say.
    summary: str = ""


def owners(managed_fields: Sequence[Mapping[str, Any]] | None) -> dict[str, frozenset[str]]:
    """For each of the two marks, the managers whose managedFields entry owns it."""
    found: dict[str, set[str]] = {DELETION_COST: set(), DRAINING: set()}
    for entry in managed_fields or ():
        fields = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:annotations")
        for key, managers in found.items():
            if f"f:{key}" in (fields or {}):
                managers.add(str(entry.get("manager") or ""))
    return {key: frozenset(managers) for key, managers in found.items()}


def mark_fields(managed_fields: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """The managedFields entries that own a mark, cut down to the marks: what the watch-fed
    store keeps of a pod's managedFields (the rest is often half a pod's size, never read)."""
    keys = [f"f:{DELETION_COST}", f"f:{DRAINING}"]
    kept = []
    for entry in managed_fields or ():
        fields = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:annotations")
        owned: dict[str, Any] = {k: {} for k in keys if k in (fields or {})}
        if owned:
            kept.append(
                {
                    "manager": entry.get("manager"),
                    "operation": entry.get("operation"),
                    "fieldsV1": {"f:metadata": {"f:annotations": owned}},
                }
            )
    return kept


def view(pod: Mapping[str, Any], *, ready: bool, load: float | None) -> PodView:
    """A pod dict (from the API or the store) as the scale-in reads it."""
    meta = pod.get("metadata") or {}
    return PodView(
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        ready=ready,
        load=load,
        annotations=dict(meta.get("annotations") or {}),
        owners=owners(meta.get("managedFields")),
    )


def live(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The pods the ReplicaSet controller counts: not terminating, not finished."""
    return [
        p
        for p in pods
        if not (p.get("metadata") or {}).get("deletionTimestamp") and not census.finished(p)
    ]


def removal(*, live: int, current: int, desired: int) -> int | None:
    """How many pods this tick's scale-in removes; None while an earlier one is carried out.

    ``live`` counts the service's pods that are not terminating. The ReplicaSet controller
    removes ``live - desired`` of them (not ``current - desired``: pods it has yet to create
    are simply not created). With no scale-in now but more live pods than ``current``, the
    controller has not yet removed what an earlier tick asked for: the marks stay until it has.
    """
    if desired < current:
        return max(0, live - desired)
    return None if live > current else 0


def _names(pods: Sequence[str]) -> str:
    shown = ", ".join(pods[:NAMED])
    return shown if len(pods) <= NAMED else f"{shown} and {len(pods) - NAMED} more"


def _load(pod: PodView) -> str:
    return "load unknown" if pod.load is None else f"{pod.load:g} in flight"


def _foreign(pods: Sequence[PodView], manager: str) -> list[str]:
    """'pod (manager)' for each pod whose deletion cost another manager owns. A cost with no
    owner on record counts as foreign: we cannot tell that it is ours."""
    out = []
    for p in pods:
        others = sorted(p.owners.get(DELETION_COST, frozenset()) - {manager})
        if not others and DELETION_COST in p.annotations and not p.owned_by(manager):
            others = ["unknown"]
        if others:
            out.append(f"{p.name} ({', '.join(others)})")
    return out


def refusal(*, plan: Plan, pod: str, why: str) -> Plan:
    """``plan`` after the API server refused its write to ``pod``: backed off (the chosen pods
    are dropped; marks written before the refusal are cleared by the next plan, which backs
    off too while the pod is named in ``refused``)."""
    return dataclasses.replace(
        plan,
        outcome=Outcome.BACKED_OFF,
        chosen=(),
        summary=f"Not choosing the pods to remove: the API server refused the scale-in marks on "
        f"{pod} ({why}).",
    )


def plan(
    *,
    pods: Sequence[PodView],
    remove: int,
    manager: str,
    refused: Mapping[str, str] | None = None,
) -> Plan:
    """The marks for a scale-in of ``remove`` pods (0: none, clear what is left).

    Chosen: the least loaded Ready pods, a pod already marked by us first (the router has been
    draining it: switching would waste that), a pod whose scrape failed last (it may be too
    busy to answer), ties by name. Not-Ready pods are never marked: the ReplicaSet controller
    removes them first anyway, so they count towards ``remove``.

    Backing off (another manager owns the deletion cost on any pod, or the API server
    refused our marks on one: ``refused``, pod name -> why) marks nothing; marks our own
    manager wrote earlier are still removed, since a server-side apply removes only the
    fields its manager owns, and a pod left marked draining would get no traffic. A refused
    pod is not written again at all while it lives: the same write would be refused again.
    """
    refusals = {p.name: why for p in pods if (why := (refused or {}).get(p.name)) is not None}
    clears: dict[str, Mapping[str, str]] = {
        p.name: {} for p in pods if p.owned_by(manager) and p.name not in refusals
    }
    foreign = _foreign(pods, manager)
    if foreign or refusals:
        reasons = []
        if foreign:
            reasons.append(f"another field manager owns {DELETION_COST} on {_names(foreign)}")
        if refusals:
            named = [f"{name} ({why})" for name, why in sorted(refusals.items())]
            reasons.append(f"the API server refused the scale-in marks on {_names(named)}")
        return Plan(
            outcome=Outcome.BACKED_OFF,
            writes=clears,
            uids={p.name: p.uid for p in pods if p.name in clears},
            summary=f"Not choosing the pods to remove: {'; '.join(reasons)}.",
        )
    ready = [p for p in pods if p.ready]
    # The ReplicaSet controller takes the pods that are not Ready first.
    count = min(len(ready), max(0, remove - (len(pods) - len(ready))))
    ranked = sorted(
        ready,
        key=lambda p: (
            not p.owned_by(manager),
            p.load is None,
            p.load if p.load is not None else math.inf,
            p.name,
        ),
    )
    chosen = ranked[:count]
    marks = {DELETION_COST: MARKED_COST, DRAINING: "true"}
    writes = dict(clears)
    for p in chosen:
        # A chosen pod is not cleared; it is written only when its marks are not all in place.
        writes.pop(p.name, None)
        if not all(
            p.annotations.get(k) == v and manager in p.owners.get(k, frozenset())
            for k, v in marks.items()
        ):
            writes[p.name] = marks
    uids = {p.name: p.uid for p in pods if p.name in writes}
    if remove <= 0:
        cleared = sorted(writes)
        return Plan(
            outcome=Outcome.CLEARED,
            writes=writes,
            uids=uids,
            summary=f"Cleared the scale-in marks of {_names(cleared)}." if cleared else "",
        )
    if chosen:
        listed = [f"{p.name} ({_load(p)})" for p in chosen]
        summary = f"Removing the least loaded: {_names(listed)}."
    else:
        summary = "Removing pods that are not Ready (the ReplicaSet controller's first choice)."
    return Plan(
        outcome=Outcome.MARKED,
        chosen=tuple(p.name for p in chosen),
        writes=writes,
        uids=uids,
        summary=summary,
    )
