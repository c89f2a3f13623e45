"""The canary's progression: which step, which weight, promoted or rolled back. Pure: no I/O.

Owns: what a verdict (``core.analysis``) does to a canary's state (``api.CanaryStatus``), the
weights the router gets from that state, the canary's replicas, its runtime (canary.runtime,
else the service's, resolved by ``builders.choose_runtime`` like spec.runtime), and its
Deployment (the predictor's builder with the canary's model and runtime, under its own name
and labels; its model config rides in its own pod template, as the predictor's does). The engine
(``engines.canary``) reads the router's /metrics, calls ``decide`` once per interval with
``now`` and writes status.canary; the reconciler renders the router's weights and the canary
Deployment from that status, so each of them has one writer.

What a user sees, as with Flagger: traffic moves through ``steps``; a failed check counts
toward ``failureLimit``; at the limit the canary is rolled back (weight 0, no replica, the
CanaryRolledBack condition with the figures); after the last step passes it is Promoted (all
traffic to the canary). The operator never rewrites the spec (GitOps tools own it): the user
makes the promotion permanent by moving canary.model into spec.model (and canary.runtime into
spec.runtime) and removing spec.canary.
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


def config_map_name(owner: builders.Owner) -> str:
    """The canary's model-config ConfigMap of earlier versions (deleted where it is left)."""
    return f"{owner.name}-canary-model-config"


def revision(spec: api.CanarySpec) -> str:
    """What a canary state is about: a changed spec.canary is a new canary."""
    # An unset runtime is left out, so a canary recorded before canary.runtime existed keeps
    # its revision (and its step) across an operator upgrade.
    unset = {"runtime"} if spec.runtime is None else None
    text = json.dumps(spec.model_dump(by_alias=True, mode="json", exclude=unset), sort_keys=True)
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
        reason = "ErrorRate" if canary.error_rate > spec.analysis.max_error_rate else "LatencyRatio"
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
        moves = "canary.model into spec.model"
        if spec.runtime is not None:
            moves += f" and canary.runtime ({spec.runtime}) into spec.runtime"
        message = (
            f"{after.message} Every step passed: all traffic goes to the canary. Move "
            f"{moves} and remove spec.canary to make it the stable set."
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
    """The service as the canary serves it: spec.model with the canary's artifact, on the
    canary's runtime (the service's when canary.runtime is unset)."""
    assert spec.canary is not None
    model = spec.model.model_copy(
        update={
            "storage_uri": spec.canary.model.storage_uri,
            "version": spec.canary.model.version or spec.model.version,
        }
    )
    runtime = spec.canary.runtime or spec.runtime
    return spec.model_copy(update={"model": model, "runtime": runtime, "canary": None})


def choose_runtime(
    spec: api.InferenceServiceSpec, runtimes: dict[str, api.InferenceRuntimeSpec]
) -> tuple[str, api.InferenceRuntimeSpec]:
    """The canary's runtime, by the rules spec.runtime follows (``builders.choose_runtime``:
    named, else by format and priority). Raises ``builders.RuntimeResolutionError`` with the
    same reasons, its message saying it is the canary's and what that leaves running."""
    try:
        return builders.choose_runtime(canary_spec(spec), runtimes)
    except builders.RuntimeResolutionError as exc:
        raise builders.RuntimeResolutionError(
            exc.reason,
            f"spec.canary: {exc} The canary is not deployed; the stable set takes all traffic.",
        ) from exc


def _as_canary(manifest: dict[str, Any]) -> dict[str, Any]:
    manifest["metadata"]["labels"] = {
        **manifest["metadata"]["labels"],
        "app.kubernetes.io/component": "canary",
    }
    return manifest


def build_deployment(
    owner: builders.Owner,
    spec: api.InferenceServiceSpec,
    runtime_name: str,
    runtime: api.InferenceRuntimeSpec,
    config: OperatorConfig,
    *,
    replicas_: int,
) -> dict[str, Any]:
    """``<name>-canary``: the predictor's Deployment (same builder: one model name, one
    batching) with the canary's model on the canary's runtime (``runtime_name``/``runtime``,
    from ``choose_runtime``), its model config (that runtime's format, the canary's version) in
    its own pod template, with its own selector and its replicas (the reconciler is its only
    scaler: no autoscaler touches it)."""
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
    manifest["spec"]["selector"] = {"matchLabels": pod_selector(owner)}
    manifest["spec"]["replicas"] = replicas_
    return _as_canary(manifest)
