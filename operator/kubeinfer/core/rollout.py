"""How a Deployment replaces its pods: surge first, or take one down first. Pure: no I/O here.

Owns: the rollout strategy decision, where it is recorded (annotations on the Deployment, so
the reason travels with the strategy it explains and status reads both from one place), and
what "a rollout is under way" means (``state``: what status.rollout and RolloutStuck report).

Why it matters: with maxSurge 1 / maxUnavailable 0 the new pod must be placed before an old one
goes. On a GPU pool with no free GPU the new pod waits for a GPU the old pod holds, and the old
pod waits for the new one to be Ready: a deadlock. So a GPU service surges only when a node that
fits its pods has a whole replica's worth of free GPUs; otherwise one old pod goes first
(maxSurge 0 / maxUnavailable 1: one replica fewer while it is replaced, never both zero, which
the Deployment API rejects). CPU services always surge: CPU is rarely the scarce resource, and a
surge keeps every replica serving.

The decision is taken when a rollout is about to start (the pod template changes), from a
capacity census taken then (and only then: creating a service counts nothing), and then
kept while it runs (a surge pod that took the last free GPU must not flip its own rollout to
"no surge"), unless the surge pod itself is waiting for a GPU: then the decision becomes "no
surge" and the Deployment controller takes an old pod down to make room.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from kubeinfer.core import api

ANNOTATION_STRATEGY = "kubeinfer.io/rollout-strategy"
ANNOTATION_REASON = "kubeinfer.io/rollout-reason"
ANNOTATION_MESSAGE = "kubeinfer.io/rollout-message"

# Image pull, storage initializer and scheduling on top of the model's load time: past this
# the Deployment reports ProgressDeadlineExceeded, which status surfaces as RolloutStuck.
PROGRESS_MARGIN_S = 300
# Kubernetes' own default; a rollout deadline never goes below it.
MIN_PROGRESS_DEADLINE_S = 600


def progress_deadline_seconds(runtime: api.InferenceRuntimeSpec) -> int:
    return max(MIN_PROGRESS_DEADLINE_S, runtime.probes.startup_timeout_seconds + PROGRESS_MARGIN_S)


def _decision(strategy: api.RolloutStrategy, reason: str, message: str) -> api.RolloutStatus:
    surge = strategy is api.RolloutStrategy.SURGE
    return api.RolloutStatus(
        strategy=strategy,
        max_surge=1 if surge else 0,
        max_unavailable=0 if surge else 1,
        reason=reason,
        message=message,
    )


@dataclasses.dataclass(frozen=True)
class Seen:
    """What the decision looks at."""

    gpus_per_replica: int
    gpu_resource: str
    # Applying the spec now changes the pod template: a rollout is about to start.
    template_changes: bool
    # A rollout is under way (core.rollout.rolling on the live Deployment).
    rolling: bool
    # The decision the live Deployment carries; None when it has none (being created).
    live: api.RolloutStatus | None
    # The most free GPUs on one node that fits the pods; None when unknown.
    spare_gpus: int | None
    # A pod of this service waits for GPUs (the scheduler's verdict, core.census).
    pod_waits_for_gpu: bool


def decide(seen: Seen) -> api.RolloutStatus:
    """The strategy to apply, with its reason (a CamelCase word) and a sentence."""
    if seen.gpus_per_replica == 0:
        return _decision(
            api.RolloutStrategy.SURGE,
            "NoGPUs",
            "No GPUs requested: a new pod starts before an old one stops.",
        )
    live = seen.live
    if (
        live is not None
        and live.strategy is api.RolloutStrategy.SURGE
        and seen.rolling
        and seen.pod_waits_for_gpu
    ):
        return _decision(
            api.RolloutStrategy.NO_SURGE,
            "SurgeWaitsForGPU",
            f"The surge pod waits for {seen.gpu_resource}: one old pod stops first to free "
            f"its GPUs.",
        )
    if not seen.template_changes:
        # Nothing new to roll out (or a rollout already under way): keep the decision taken
        # when it started, so capacity moving underneath never rewrites the Deployment. A
        # Deployment being created has no rollout to decide yet: the next template change
        # decides from a census taken then (one taken now would be stale by then anyway).
        return live or _decision(
            api.RolloutStrategy.NO_SURGE,
            "NoRolloutYet",
            "No rollout yet: free GPUs are counted when the pod template next changes; "
            "until then one old pod stops before its replacement starts.",
        )
    need, spare = seen.gpus_per_replica, seen.spare_gpus
    if spare is None:
        return _decision(
            api.RolloutStrategy.NO_SURGE,
            "GPUCapacityUnknown",
            "Free GPUs could not be counted: one old pod stops before its replacement starts.",
        )
    if spare >= need:
        return _decision(
            api.RolloutStrategy.SURGE,
            "SpareGPUCapacity",
            f"A node that fits has {spare} free {seen.gpu_resource} ({need} per replica): "
            f"a new pod starts before an old one stops.",
        )
    return _decision(
        api.RolloutStrategy.NO_SURGE,
        "NoSpareGPUCapacity",
        f"No node that fits has {need} free {seen.gpu_resource} (most free on one node: "
        f"{spare}): one old pod stops before its replacement starts, one replica fewer "
        f"meanwhile.",
    )


def default(gpus_per_replica: int) -> api.RolloutStatus:
    """The decision when nothing has been observed (a builder called on its own)."""
    return decide(
        Seen(
            gpus_per_replica=gpus_per_replica,
            gpu_resource="",
            template_changes=True,
            rolling=False,
            live=None,
            spare_gpus=None,
            pod_waits_for_gpu=False,
        )
    )


def strategy_spec(decision: api.RolloutStatus) -> dict[str, Any]:
    """The Deployment's spec.strategy for a decision."""
    return {
        "type": "RollingUpdate",
        "rollingUpdate": {
            "maxSurge": decision.max_surge,
            "maxUnavailable": decision.max_unavailable,
        },
    }


def to_annotations(decision: api.RolloutStatus) -> dict[str, str]:
    return {
        ANNOTATION_STRATEGY: decision.strategy.value,
        ANNOTATION_REASON: decision.reason,
        ANNOTATION_MESSAGE: decision.message,
    }


def recorded(deployment: Mapping[str, Any] | None) -> api.RolloutStatus | None:
    """The decision a live Deployment carries, from its annotations; None if it has none."""
    notes = ((deployment or {}).get("metadata") or {}).get("annotations") or {}
    try:
        strategy = api.RolloutStrategy(notes.get(ANNOTATION_STRATEGY, ""))
    except ValueError:
        return None
    return _decision(
        strategy, str(notes.get(ANNOTATION_REASON) or ""), str(notes.get(ANNOTATION_MESSAGE) or "")
    )


def revision(deployment: Mapping[str, Any] | None) -> int:
    """The Deployment controller's revision: 1 for a new service's first pods, one more for
    each pod template after that."""
    notes = ((deployment or {}).get("metadata") or {}).get("annotations") or {}
    try:
        return int(notes.get("deployment.kubernetes.io/revision") or 0)
    except ValueError:
        return 0


def state(deployment: Mapping[str, Any] | None) -> api.RolloutState:
    """Where the Deployment's rollouts stand. A rollout is a template change after the first
    (revision 2 on): a new service's first pods are not one, whatever they wait for. It is
    under way while pods of the older template are being replaced (``replacing``: a scale-up
    waiting for capacity afterwards is not a rollout), and Complete after that."""
    if revision(deployment) < 2:
        return api.RolloutState.NOT_STARTED
    if replacing(deployment):
        return api.RolloutState.PROGRESSING
    return api.RolloutState.COMPLETE


def report(deployment: Mapping[str, Any] | None) -> api.RolloutStatus | None:
    """status.rollout: the decision the Deployment carries and where its rollout stands, so a
    finished rollout reads as finished; None when the Deployment carries no decision."""
    decision = recorded(deployment)
    if decision is None:
        return None
    return decision.model_copy(update={"state": state(deployment)})


def rolling(deployment: Mapping[str, Any] | None) -> bool:
    """A rollout is under way: the controller has not caught up with the spec, or old or
    not-yet-available pods remain (kubectl rollout status' rule)."""
    if replacing(deployment):
        return True
    st = (deployment or {}).get("status") or {}
    return int(st.get("availableReplicas") or 0) < int(st.get("updatedReplicas") or 0)


def replacing(deployment: Mapping[str, Any] | None) -> bool:
    """Pods of an older template are being replaced: the controller has not caught up with
    the spec, or old pods remain, or the new ReplicaSet is short of the replicas asked for.
    Unlike ``rolling``, a scale-up whose new pods are not yet available is not replacing:
    its pending pods wait for capacity (WaitingForGPUCapacity names it), not for a rollout."""
    if not deployment:
        return False
    meta, spec = deployment.get("metadata") or {}, deployment.get("spec") or {}
    st = deployment.get("status") or {}
    if int(st.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return True
    updated = int(st.get("updatedReplicas") or 0)
    return updated < int(spec.get("replicas") or 0) or int(st.get("replicas") or 0) > updated


def deadline_exceeded(deployment: Mapping[str, Any] | None) -> str | None:
    """The Deployment's own message when it reports Progressing=False ProgressDeadlineExceeded."""
    for cond in ((deployment or {}).get("status") or {}).get("conditions") or []:
        if (
            cond.get("type") == "Progressing"
            and cond.get("status") == "False"
            and cond.get("reason") == "ProgressDeadlineExceeded"
        ):
            return str(cond.get("message") or "ProgressDeadlineExceeded")
    return None
