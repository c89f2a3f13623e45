"""Truthful status: what the cluster shows -> conditions, replica counts and the URL. Pure.

Owns: the condition types and reasons, and the rule that Ready is True only when the runtime is
resolved, the Deployment is available and no pod is failing or unschedulable. GPUInUse says
whether a service given GPUs computes on them, from what its pods' /metrics said (the
autoscaler records that in status.autoscaler.executionProviders); it informs, and never makes
Ready False: a model served on CPU still answers. A failure is
named by its real cause: the scheduler's reason for a pod it cannot place (GPUs, CPU, memory,
a selector, taints), the termination message of a container that exited (the storage
initializer's one-line error, the runtime's model-load error). Inputs are the raw objects the
API returned (dicts); the output is ``api.InferenceServiceStatus``, the model the CRD's schema
is generated from, so what is written is what the schema publishes.

A rollout is reported apart from Ready (the old pods still serve): ``status.rollout`` is the
strategy the Deployment carries, why, and whether its rollout is under way or done
(``core.rollout``); RolloutStuck is True when the Deployment gave up
(ProgressDeadlineExceeded) or the rollout's new pods cannot be scheduled.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import pydantic

from kubeinfer.core import api, census, metrics, rollout, runtime_failures, storage_uri


class ConditionType(enum.StrEnum):
    READY = "Ready"
    RUNTIME_RESOLVED = "RuntimeResolved"
    DEPLOYMENT_AVAILABLE = "DeploymentAvailable"
    WAITING_FOR_GPU = "WaitingForGPUCapacity"
    PODS_SCHEDULED = "PodsScheduled"
    PODS_HEALTHY = "PodsHealthy"
    GPU_IN_USE = "GPUInUse"
    ROLLOUT_STUCK = "RolloutStuck"
    CANARY_ROLLED_BACK = "CanaryRolledBack"


# Container waiting/terminated reasons that mean the pod will not become Ready on its own.
FAILING_WAIT_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
FAILING_TERMINATED_REASONS = frozenset({"OOMKilled", "Error", "ContainerCannotRun"})
STORAGE_INIT_FAILED = "StorageInitFailed"
# Ready's reason while a healthy Deployment is still bringing replicas up.
REPLICAS_NOT_READY = "ReplicasNotReady"
SCALED_TO_ZERO = "ScaledToZero"
WAKING_UP = "WakingUp"
# Condition reasons for a pod the scheduler refused, by what it lacks.
_UNSCHEDULABLE_REASONS = {
    "gpu": "InsufficientGPU",
    "cpu": "InsufficientCPU",
    "memory": "InsufficientMemory",
    "selector": "NodeSelectorMismatch",
    "taints": "UntoleratedTaint",
    "affinity": "AffinityMismatch",
    "other": "Unschedulable",
}

_PRIORITY = [
    ConditionType.READY,
    ConditionType.RUNTIME_RESOLVED,
    ConditionType.WAITING_FOR_GPU,
    ConditionType.PODS_SCHEDULED,
    ConditionType.PODS_HEALTHY,
    ConditionType.DEPLOYMENT_AVAILABLE,
]


@dataclasses.dataclass(frozen=True)
class Problem:
    """A reason Ready is False, in condition vocabulary."""

    condition: ConditionType
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Observed:
    """Everything the reconciler saw for one InferenceService."""

    generation: int
    runtime_name: str | None
    runtime_problem: Problem | None
    spec_problem: Problem | None
    stopped: bool
    gpu_resource: str
    gpus_per_replica: int
    url: str | None
    selector: str
    deployment: dict[str, Any] | None
    pods: list[dict[str, Any]]
    # Where the Ready pods' models compute, as the autoscaler last recorded it, and whether
    # the runtime says at all (its metric names include an execution provider gauge).
    execution_providers: tuple[api.ProviderUse, ...] = ()
    runtime_reports_provider: bool = False
    # spec.router.enabled with minReplicas 0: zero replicas is a resting state, not an outage
    # (the router holds requests and wakes the service).
    may_scale_to_zero: bool = False
    # ... and the autoscaler last saw it at zero (or woken): replicas not ready yet are a
    # wake in progress (WakingUp), not a first start or an outage.
    waking: bool = False
    # status.canary as the canary engine last wrote it, when spec.canary is set.
    canary: api.CanaryStatus | None = None
    # The canary's runtime, or why it has none (then the canary alone is not deployed: a
    # RuntimeResolved problem that never makes Ready False, the stable set serves).
    canary_runtime_name: str | None = None
    canary_runtime_problem: Problem | None = None


def _condition(
    ctype: ConditionType, ok: bool | None, reason: str, message: str, generation: int
) -> api.Condition:
    """A condition; ``ok`` None is status Unknown (the fact has not been observed)."""
    return api.Condition(
        type=ctype.value,
        status="Unknown" if ok is None else "True" if ok else "False",
        reason=reason,
        message=message,
        observed_generation=generation,
    )


def _last_line(message: str) -> str:
    """The last non-empty line: a program's one-line error ends its log tail."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _container_problem(pod: str, kind: str, cs: dict[str, Any]) -> Problem | None:
    """What a failing container tells a user, in its own words where it left any."""
    state = cs.get("state") or {}
    last = (cs.get("lastState") or {}).get("terminated") or {}
    waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
    said = terminated.get("message") or last.get("message") or ""
    where = f"Pod {pod} {kind} {cs.get('name')}"
    load_error = runtime_failures.model_load_error(said)
    reason = waiting.get("reason") or ""
    crashed = reason in FAILING_WAIT_REASONS or (
        terminated.get("reason") in FAILING_TERMINATED_REASONS
        and (kind == "init container" or terminated.get("exitCode", 0) != 0)
    )
    if load_error and (crashed or terminated.get("exitCode", 0) != 0):
        reason, detail = runtime_failures.MODEL_LOAD_FAILED, load_error
    elif not crashed:
        return None
    elif cs.get("name") == storage_uri.INIT_CONTAINER_NAME and _last_line(said):
        reason, detail = STORAGE_INIT_FAILED, _last_line(said)
    elif last.get("reason") == "OOMKilled" or terminated.get("reason") == "OOMKilled":
        reason, detail = "OOMKilled", _last_line(said)
    elif reason in FAILING_WAIT_REASONS:
        detail = _last_line(said) or waiting.get("message") or last.get("reason") or ""
    else:
        reason = str(terminated.get("reason"))
        detail = f"exit code {terminated.get('exitCode')}" + (
            f": {_last_line(said)}" if _last_line(said) else ""
        )
    return Problem(
        ConditionType.PODS_HEALTHY, reason, f"{where}: {reason}{': ' + detail if detail else ''}."
    )


def pod_failures(pods: list[dict[str, Any]]) -> list[Problem]:
    """Failures a user must act on, with their cause (StorageInitFailed, ModelLoadFailed...)."""
    problems = []
    for pod in pods:
        name = pod.get("metadata", {}).get("name", "?")
        status = pod.get("status") or {}
        for kind, key in (
            ("init container", "initContainerStatuses"),
            ("container", "containerStatuses"),
        ):
            for cs in status.get(key) or []:
                problem = _container_problem(name, kind, cs)
                if problem is not None:
                    problems.append(problem)
    return problems


def _runtime_condition(obs: Observed) -> api.Condition | None:
    p = obs.runtime_problem or (obs.canary_runtime_problem if obs.runtime_name else None)
    if p:
        return _condition(
            ConditionType.RUNTIME_RESOLVED, False, p.reason, p.message, obs.generation
        )
    if obs.runtime_name:
        canary = f" (the canary by {obs.canary_runtime_name})" if obs.canary_runtime_name else ""
        return _condition(
            ConditionType.RUNTIME_RESOLVED,
            True,
            "RuntimeResolved",
            f"Served by InferenceRuntime {obs.runtime_name}{canary}.",
            obs.generation,
        )
    return None


# The autoscaler's decisions (core/scaling/zero.py) after which a service is waking up.
AT_ZERO_DECISIONS = frozenset({"ScaledToZero", "AtZero", "WokenByRouter"})


def waking(status: dict[str, Any]) -> bool:
    """The autoscaler last left the service at zero (or saw it woken), and has not seen a
    Ready replica since: newest first, decisions without one (NoData while the woken replica
    starts) are passed over until one names zero or saw a replica."""
    for decision in reversed((status.get("autoscaler") or {}).get("decisions") or []):
        if decision.get("reason") in AT_ZERO_DECISIONS:
            return True
        if (decision.get("inputs") or {}).get("ready", 0) >= 1:
            return False
    return False


def _at_zero(obs: Observed) -> bool:
    """The Deployment asks for no replica and has none left."""
    spec = (obs.deployment or {}).get("spec") or {}
    return int(spec.get("replicas") or 0) == 0 and not int(
        ((obs.deployment or {}).get("status") or {}).get("replicas") or 0
    )


def _deployment_condition(obs: Observed, ready: int, replicas: int) -> api.Condition:
    gen = obs.generation
    conditions = (obs.deployment or {}).get("status", {}).get("conditions") or []
    available = any(c.get("type") == "Available" and c.get("status") == "True" for c in conditions)
    if obs.deployment is None:
        reason, message, ok = "DeploymentMissing", "The Deployment has not been created yet.", False
    elif obs.stopped:
        reason, message, ok = "Stopped", "Stopped: scaled to zero, GPUs released.", False
    elif obs.may_scale_to_zero and _at_zero(obs):
        reason, message, ok = (
            SCALED_TO_ZERO,
            "Scaled to zero: kubeinfer-router holds requests and scales to 1 on the first.",
            True,
        )
    elif (
        obs.waking
        and ready == 0
        and int((obs.deployment or {}).get("spec", {}).get("replicas") or 0)
    ):
        # Woken from zero: not ready yet, but named, so nobody mistakes it for an outage.
        reason, message, ok = (
            WAKING_UP,
            f"Scaling from zero: {ready} of {replicas} replicas ready; kubeinfer-router holds "
            "requests until one is.",
            False,
        )
    elif available and ready > 0:
        reason, message, ok = (
            "MinimumReplicasAvailable",
            f"{ready} of {replicas} replicas ready.",
            True,
        )
    else:
        reason, message, ok = REPLICAS_NOT_READY, f"{ready} of {replicas} replicas ready.", False
    return _condition(ConditionType.DEPLOYMENT_AVAILABLE, ok, reason, message, gen)


def _scheduling(obs: Observed) -> tuple[list[api.Condition], list[Problem]]:
    """WaitingForGPUCapacity (GPU shortage only) and PodsScheduled (every reason, named)."""
    gen = obs.generation
    refused = census.unschedulable(obs.pods, obs.gpu_resource)
    gpu = [u for u in refused if u.waits_for_gpu]
    problems: list[Problem] = []
    if gpu:
        msg = (
            f"{len(gpu)} pod(s) wait for {obs.gpu_resource} ({obs.gpus_per_replica} per "
            f"replica); e.g. {gpu[0].pod}: {gpu[0].message}"
        )
        waiting = _condition(ConditionType.WAITING_FOR_GPU, True, "InsufficientGPU", msg, gen)
        problems.append(Problem(ConditionType.WAITING_FOR_GPU, "WaitingForGPUCapacity", msg))
    else:
        waiting = _condition(
            ConditionType.WAITING_FOR_GPU,
            False,
            "GPUCapacityAvailable",
            "Every pod that needs a GPU has one.",
            gen,
        )
    other = [u for u in refused if not u.waits_for_gpu]
    if other:
        first = other[0]
        reason = _unschedulable_reason(first)
        msg = f"{len(other)} pod(s) cannot be scheduled; e.g. {first.pod}: {first.message}"
        scheduled = _condition(ConditionType.PODS_SCHEDULED, False, reason, msg, gen)
        problems.append(Problem(ConditionType.PODS_SCHEDULED, reason, msg))
    elif gpu:
        scheduled = _condition(
            ConditionType.PODS_SCHEDULED, False, "InsufficientGPU", waiting.message, gen
        )
    else:
        scheduled = _condition(
            ConditionType.PODS_SCHEDULED, True, "Scheduled", "Every pod has a node.", gen
        )
    return [waiting, scheduled], problems


def _unschedulable_reason(refused: census.Unschedulable) -> str:
    return _UNSCHEDULABLE_REASONS.get(refused.reason) or (
        "Insufficient" + refused.reason.rsplit("/", 1)[-1].title().replace("-", "")
    )


def _rollout_condition(obs: Observed) -> api.Condition:
    """RolloutStuck: the Deployment's own verdict first, then the scheduler's on new pods.

    Only a rollout (``core.rollout.state``) can be stuck: the first pods of a new service are
    not, WaitingForGPUCapacity and PodsScheduled already name their wait. A pod refused while
    one of ours terminates is not stuck either: with no surge, the new pod waits for the GPUs
    the old one is releasing."""
    gen, dep = obs.generation, obs.deployment or {}
    where = rollout.state(dep)
    if where is api.RolloutState.NOT_STARTED:
        # A new service past its deadline waits for capacity; that is not a rollout.
        return _condition(
            ConditionType.ROLLOUT_STUCK, False, "NoRollout", "No rollout is under way.", gen
        )
    exceeded = rollout.deadline_exceeded(dep)
    if exceeded is not None:
        deadline = (dep.get("spec") or {}).get("progressDeadlineSeconds")
        return _condition(
            ConditionType.ROLLOUT_STUCK,
            True,
            "ProgressDeadlineExceeded",
            f"The rollout made no progress for {deadline} s: {exceeded}",
            gen,
        )
    if where is api.RolloutState.COMPLETE:
        return _condition(
            ConditionType.ROLLOUT_STUCK, False, "NoRollout", "No rollout is under way.", gen
        )
    refused = census.unschedulable(obs.pods, obs.gpu_resource)
    releasing = any((p.get("metadata") or {}).get("deletionTimestamp") for p in obs.pods)
    if refused and not releasing:
        first = refused[0]
        return _condition(
            ConditionType.ROLLOUT_STUCK,
            True,
            _unschedulable_reason(first),
            f"{len(refused)} new pod(s) of the rollout cannot be scheduled; e.g. "
            f"{first.pod}: {first.message}",
            gen,
        )
    return _condition(
        ConditionType.ROLLOUT_STUCK, False, "RolloutProgressing", "A rollout is under way.", gen
    )


def _health(obs: Observed) -> tuple[api.Condition, list[Problem]]:
    failures = pod_failures(obs.pods)
    if failures:
        message = " ".join(f.message for f in failures[:3])
        cond = _condition(
            ConditionType.PODS_HEALTHY, False, failures[0].reason, message, obs.generation
        )
        return cond, failures
    ok = _condition(
        ConditionType.PODS_HEALTHY, True, "PodsHealthy", "No pod is failing.", obs.generation
    )
    return ok, []


def recorded_providers(current: dict[str, Any]) -> tuple[api.ProviderUse, ...]:
    """status.autoscaler.executionProviders as the autoscaler wrote it; an entry that does
    not parse is left out (it only ever informs a condition)."""
    uses = []
    for raw in ((current.get("autoscaler") or {}).get("executionProviders")) or []:
        try:
            uses.append(api.ProviderUse.model_validate(raw))
        except pydantic.ValidationError:
            continue
    return tuple(uses)


def _gpu_condition(obs: Observed) -> api.Condition | None:
    """GPUInUse for a service given GPUs: True when every reporting pod computes on a GPU
    provider, False (RunningOnCPU) naming the provider when any runs on CPU."""
    if obs.gpus_per_replica < 1 or obs.stopped or not obs.runtime_reports_provider:
        return None
    uses = obs.execution_providers
    on_cpu = [u for u in uses if u.provider == metrics.CPU_PROVIDER]
    total = sum(u.pods for u in uses)
    gen, gpus = obs.generation, obs.gpus_per_replica
    if not uses:
        return _condition(
            ConditionType.GPU_IN_USE,
            None,
            "NotReported",
            "No serving pod has said where it computes yet: the pods report their execution "
            "provider on /metrics, which the autoscaler reads (not with scaling mode Off).",
            gen,
        )
    if on_cpu:
        cpu = on_cpu[0]
        return _condition(
            ConditionType.GPU_IN_USE,
            False,
            "RunningOnCPU",
            f"{cpu.pods} of {total} pod(s) run the model on {cpu.provider} although gpu.count "
            f"is {gpus} (e.g. {cpu.example}): its image has no GPU build of onnxruntime (set "
            "the InferenceRuntime's gpuImage to the server's gpu variant) or CUDA could not "
            "start; the pod's log says which.",
            gen,
        )
    named = ", ".join(f"{u.pods} on {u.provider}" for u in uses)
    return _condition(
        ConditionType.GPU_IN_USE, True, "RunningOnGPU", f"Pods compute on GPUs: {named}.", gen
    )


def _canary_condition(obs: Observed) -> api.Condition | None:
    """CanaryRolledBack, from the canary engine's status.canary: True with the figures that
    failed once it rolled back; False while it progresses or after its promotion."""
    state = obs.canary
    if state is None:
        return None
    if state.phase is api.CanaryPhase.ROLLED_BACK:
        return _condition(
            ConditionType.CANARY_ROLLED_BACK,
            True,
            state.reason or "ChecksFailed",
            state.message,
            obs.generation,
        )
    reason = "Promoted" if state.phase is api.CanaryPhase.PROMOTED else "Progressing"
    message = state.message or f"Canary at {state.weight} %."
    return _condition(ConditionType.CANARY_ROLLED_BACK, False, reason, message, obs.generation)


def build_status(obs: Observed) -> api.InferenceServiceStatus:
    """The status the reconciler writes (autoscaler keys aside); lastTransitionTime is added
    by :func:`merge_conditions`, which knows the previous status."""
    gen = obs.generation
    deployment_status = (obs.deployment or {}).get("status", {})
    replicas = int(deployment_status.get("replicas") or 0)
    ready = int(deployment_status.get("readyReplicas") or 0)
    problems = [p for p in (obs.spec_problem, obs.runtime_problem) if p is not None]
    conditions: list[api.Condition] = []
    runtime = _runtime_condition(obs)
    if runtime is not None:
        conditions.append(runtime)
    deployment = _deployment_condition(obs, ready, replicas)
    conditions.append(deployment)
    if obs.deployment is not None and not obs.stopped and deployment.status == "False":
        problems.append(
            Problem(ConditionType.DEPLOYMENT_AVAILABLE, deployment.reason, deployment.message)
        )
    scheduling, unplaced = _scheduling(obs)
    health, failures = _health(obs)
    conditions += [*scheduling, health]
    gpu_in_use = _gpu_condition(obs)
    if gpu_in_use is not None:
        conditions.append(gpu_in_use)
    if obs.deployment is not None:
        conditions.append(_rollout_condition(obs))
    canary_cond = _canary_condition(obs)
    if canary_cond is not None:
        conditions.append(canary_cond)
    problems += unplaced + failures
    if obs.stopped and not (obs.spec_problem or obs.runtime_problem):
        ready_cond = _condition(
            ConditionType.READY, False, "Stopped", "spec.stopped is true: no replicas run.", gen
        )
    elif problems:
        # The most specific cause names Ready's reason: "WaitingForGPUCapacity" tells a user
        # more than the "ReplicasNotReady" it causes.
        first = min(problems, key=lambda p: _PRIORITY.index(p.condition))
        ready_cond = _condition(ConditionType.READY, False, first.reason, first.message, gen)
    elif deployment.reason == SCALED_TO_ZERO:
        ready_cond = _condition(
            ConditionType.READY,
            True,
            SCALED_TO_ZERO,
            f"Scaled to zero; serving at {obs.url} through kubeinfer-router, which holds "
            "requests and scales to 1 on the first.",
            gen,
        )
    else:
        ready_cond = _condition(
            ConditionType.READY,
            True,
            "Ready",
            f"{ready} of {replicas} replicas ready; serving at {obs.url}.",
            gen,
        )
    return api.InferenceServiceStatus(
        observed_generation=gen,
        replicas=replicas,
        ready_replicas=ready,
        gpus=replicas * obs.gpus_per_replica,
        selector=obs.selector,
        url=obs.url,
        runtime=obs.runtime_name,
        conditions=[ready_cond, *conditions],
        rollout=rollout.report(obs.deployment),
    )


def to_dict(status: api.InferenceServiceStatus) -> dict[str, Any]:
    """The status as the API stores it (camelCase, absent fields left out)."""
    out: dict[str, Any] = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    return out


def merge_conditions(
    new: list[dict[str, Any]], old: list[dict[str, Any]], now: str
) -> list[dict[str, Any]]:
    """Keep lastTransitionTime when a condition's status did not change (Kubernetes' rule)."""
    previous = {c.get("type"): c for c in old}
    merged = []
    for cond in new:
        before = previous.get(cond["type"])
        stamp = (
            before.get("lastTransitionTime")
            if before and before.get("status") == cond["status"]
            else None
        )
        merged.append({**cond, "lastTransitionTime": stamp or now})
    return merged


def status_differs(desired: dict[str, Any], current: dict[str, Any]) -> bool:
    """True when writing ``desired`` would change the stored status (autoscaler keys aside)."""
    keys = set(desired)
    return any(desired.get(k) != current.get(k) for k in keys)


def ready_condition(status: dict[str, Any]) -> dict[str, Any] | None:
    return find_condition(status, ConditionType.READY)


def find_condition(status: dict[str, Any], ctype: ConditionType) -> dict[str, Any] | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == ctype.value:
            return dict(cond)
    return None


def cpu_fallback_news(desired: dict[str, Any], current: dict[str, Any]) -> dict[str, Any] | None:
    """GPUInUse as it turns False (RunningOnCPU): worth a Warning Event, since Ready stays True
    and nothing else would draw the eye; None when it was already False or is not now."""
    now = find_condition(desired, ConditionType.GPU_IN_USE)
    if now is None or now.get("status") != "False":
        return None
    before = find_condition(current, ConditionType.GPU_IN_USE)
    return None if before is not None and before.get("status") == "False" else now
