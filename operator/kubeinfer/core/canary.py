"""The canary's progression: which step, which weight, promoted or rolled back. Pure: no I/O.

Owns: what a verdict (``core.analysis``) does to a canary's state (``api.CanaryStatus``), the
weights the router gets from that state, the canary's replicas, and its Deployment (the
predictor's builder with the canary's model, under its own name and labels). The engine
(``engines.canary``) reads the router's /metrics, calls ``decide`` once per interval with
``now`` and writes status.canary; the reconciler renders the router's weights and the canary
Deployment from that status, so each of them has one writer.

What a user sees, as with Flagger: traffic moves through ``steps``; a failed check counts
toward ``failureLimit``; at the limit the canary is rolled back (weight 0, no replica, the
CanaryRolledBack condition with the figures); after the last step passes it is Promoted (all
traffic to the canary). The operator never rewrites the spec (GitOps tools own it): the user
makes the promotion permanent by moving canary.model into spec.model and removing spec.canary.
A changed spec.canary (another revision) starts over at the first step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

from kubeinfer.core import analysis, api, builders
from kubeinfer.core.config import OperatorConfig

# Canary pods carry this label, never builders.LABEL_ISVC: that label is the predictor's
# selector and what status, the autoscaler and scale-in count serving pods by, so a canary
# pod wearing it would be adopted and scaled as a stable replica (the router's pods follow
# the same rule, core.router).
CANARY_LABEL = "kubeinfer.io/canary"


def name(owner: builders.Owner) -> str:
    return f"{owner.name}-canary"


def pod_selector(owner: builders.Owner) -> dict[str, str]:
    return {CANARY_LABEL: owner.name}


def revision(spec: api.CanarySpec) -> str:
    """What a canary state is about: a changed spec.canary is a new canary."""
    text = json.dumps(spec.model_dump(by_alias=True, mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def start(spec: api.CanarySpec) -> api.CanaryStatus:
    return api.CanaryStatus(
        revision=revision(spec),
        phase=api.CanaryPhase.PROGRESSING,
        step=0,
        weight=spec.steps[0],
        message=f"Canary at {spec.steps[0]} % (step 1 of {len(spec.steps)}).",
    )


def current(spec: api.CanarySpec, recorded: dict[str, Any] | None) -> api.CanaryStatus:
    """The recorded state when it is about this spec.canary, else a fresh start."""
    if recorded:
        try:
            state = api.CanaryStatus.model_validate(recorded)
        except ValueError:
            return start(spec)
        if state.revision == revision(spec) and state.step < len(spec.steps):
            return state
    return start(spec)


def weights(state: api.CanaryStatus) -> dict[str, int]:
    """{variant: weight} for the router: the canary's percent, the rest to stable."""
    return {"stable": 100 - state.weight, "canary": state.weight}


def replicas(state: api.CanaryStatus, stable_replicas: int) -> int:
    """The canary's replicas follow its share of the load: the stable set's replicas times
    its weight, rounded up, at least 1 while it gets any traffic (the router never sends to a
    variant without a Ready pod, so a canary at 0 would get nothing and be judged on nothing);
    0 once rolled back. Promoted: as many as the stable set."""
    if state.weight <= 0:
        return 0
    return max(1, math.ceil(max(stable_replicas, 1) * state.weight / 100))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Decision:
    state: api.CanaryStatus
    events: tuple[Event, ...] = ()


def due(state: api.CanaryStatus, spec: api.CanarySpec, now: float, last: float | None) -> bool:
    """A check is due when the canary is progressing and an interval has passed since the
    last one (``last``: when the engine took its previous snapshot, None before the first)."""
    if state.phase is not api.CanaryPhase.PROGRESSING:
        return False
    return last is not None and now - last >= spec.analysis.interval_seconds


def decide(
    *,
    state: api.CanaryStatus,
    spec: api.CanarySpec,
    stable: analysis.Window,
    canary: analysis.Window,
    now: str,
) -> Decision:
    """One interval's check: the next state and the Events that tell it."""
    if state.phase is not api.CanaryPhase.PROGRESSING:
        return Decision(state=state)
    criteria = analysis.Criteria(
        max_error_rate=spec.analysis.max_error_rate,
        max_p99_ratio=spec.analysis.max_p99_ratio,
        failure_limit=spec.analysis.failure_limit,
        min_requests=spec.analysis.min_requests,
    )
    verdict = analysis.analyze(
        stable=stable, canary=canary, criteria=criteria, failures=state.failures
    )
    figures = {
        "failures": verdict.failures,
        "last_analysis_time": now,
        "requests": canary.requests,
        "error_rate": round(canary.error_rate, 6),
        "p99_seconds": canary.p99_s,
        "stable_p99_seconds": stable.p99_s,
        "message": " ".join(verdict.reasons),
    }
    if verdict.verdict is analysis.Verdict.ROLLBACK:
        reason = (
            "ErrorRate" if canary.error_rate > spec.analysis.max_error_rate else "LatencyRatio"
        )
        after = state.model_copy(
            update={
                **figures,
                "phase": api.CanaryPhase.ROLLED_BACK,
                "weight": 0,
                "reason": reason,
            }
        )
        return Decision(
            state=after,
            events=(Event(type="Warning", reason="CanaryRolledBack", message=after.message),),
        )
    if verdict.verdict is analysis.Verdict.HOLD:
        after = state.model_copy(update=figures)
        failed = verdict.failures > state.failures
        events = (Event(type="Warning", reason="CanaryCheckFailed", message=after.message),)
        return Decision(state=after, events=events if failed else ())
    nxt = state.step + 1
    if nxt >= len(spec.steps):
        after = state.model_copy(
            update={**figures, "phase": api.CanaryPhase.PROMOTED, "weight": 100}
        )
        message = (
            f"{after.message} Every step passed: all traffic goes to the canary. Move "
            "canary.model into spec.model and remove spec.canary to make it the stable set."
        )
        after = after.model_copy(update={"message": message})
        return Decision(
            state=after, events=(Event(type="Normal", reason="CanaryPromoted", message=message),)
        )
    weight = spec.steps[nxt]
    message = f"{figures['message']} Canary at {weight} % (step {nxt + 1} of {len(spec.steps)})."
    after = state.model_copy(update={**figures, "step": nxt, "weight": weight, "message": message})
    return Decision(
        state=after, events=(Event(type="Normal", reason="CanaryStep", message=message),)
    )


def canary_spec(spec: api.InferenceServiceSpec) -> api.InferenceServiceSpec:
    """The service as the canary serves it: spec.model with the canary's artifact."""
    assert spec.canary is not None
    model = spec.model.model_copy(
        update={
            "storage_uri": spec.canary.model.storage_uri,
            "version": spec.canary.model.version or spec.model.version,
        }
    )
    return spec.model_copy(update={"model": model, "canary": None})


def build_deployment(
    owner: builders.Owner,
    spec: api.InferenceServiceSpec,
    runtime_name: str,
    runtime: api.InferenceRuntimeSpec,
    config: OperatorConfig,
    *,
    replicas_: int,
) -> dict[str, Any]:
    """``<name>-canary``: the predictor's Deployment (same builder, same model config: one
    model name, one batching) with the canary's model, its own selector and its replicas (the
    reconciler is its only scaler: no autoscaler touches it)."""
    manifest = builders.build_deployment(owner, canary_spec(spec), runtime_name, runtime, config)
    template = manifest["spec"]["template"]
    pod_labels = {
        k: v for k, v in template["metadata"]["labels"].items() if k != builders.LABEL_ISVC
    }
    template["metadata"]["labels"] = {
        **pod_labels,
        **pod_selector(owner),
        "app.kubernetes.io/component": "canary",
    }
    manifest["metadata"]["name"] = name(owner)
    manifest["metadata"]["labels"] = {
        **manifest["metadata"]["labels"],
        "app.kubernetes.io/component": "canary",
    }
    manifest["spec"]["selector"] = {"matchLabels": pod_selector(owner)}
    manifest["spec"]["replicas"] = replicas_
    return manifest
