"""Truthful status: what the cluster shows -> conditions, replica counts and the URL. Pure.

Owns: the condition types and reasons, and the rule that Ready is True only when the runtime is
resolved, the Deployment is available and no pod is failing or unschedulable. A failure is
named by its real cause: the scheduler's reason for a pod it cannot place (GPUs, CPU, memory,
a selector, taints), the termination message of a container that exited (the storage
initializer's one-line error, the runtime's model-load error). Inputs are the raw objects the
API returned (dicts); the output is ``api.InferenceServiceStatus``, the model the CRD's schema
is generated from, so what is written is what the schema publishes.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from kubeinfer.core import api, census, runtime_failures, storage_uri


class ConditionType(enum.StrEnum):
    READY = "Ready"
    RUNTIME_RESOLVED = "RuntimeResolved"
    DEPLOYMENT_AVAILABLE = "DeploymentAvailable"
    WAITING_FOR_GPU = "WaitingForGPUCapacity"
    PODS_SCHEDULED = "PodsScheduled"
    PODS_HEALTHY = "PodsHealthy"


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


def _condition(
    ctype: ConditionType, ok: bool, reason: str, message: str, generation: int
) -> api.Condition:
    return api.Condition(
        type=ctype.value,
        status="True" if ok else "False",
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
    if obs.runtime_problem:
        p = obs.runtime_problem
        return _condition(
            ConditionType.RUNTIME_RESOLVED, False, p.reason, p.message, obs.generation
        )
    if obs.runtime_name:
        return _condition(
            ConditionType.RUNTIME_RESOLVED,
            True,
            "RuntimeResolved",
            f"Served by InferenceRuntime {obs.runtime_name}.",
            obs.generation,
        )
    return None


def _deployment_condition(obs: Observed, ready: int, replicas: int) -> api.Condition:
    gen = obs.generation
    conditions = (obs.deployment or {}).get("status", {}).get("conditions") or []
    available = any(c.get("type") == "Available" and c.get("status") == "True" for c in conditions)
    if obs.deployment is None:
        reason, message, ok = "DeploymentMissing", "The Deployment has not been created yet.", False
    elif obs.stopped:
        reason, message, ok = "Stopped", "Stopped: scaled to zero, GPUs released.", False
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
        reason = _UNSCHEDULABLE_REASONS.get(first.reason) or (
            "Insufficient" + first.reason.rsplit("/", 1)[-1].title().replace("-", "")
        )
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
    for cond in status.get("conditions") or []:
        if cond.get("type") == ConditionType.READY.value:
            return dict(cond)
    return None
