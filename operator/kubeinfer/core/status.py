"""Truthful status: what the cluster shows -> conditions, replica counts and the URL. Pure.

Owns: the condition types and reasons, and the rule that Ready is True only when the runtime is
resolved, the Deployment is available and no pod is failing or waiting for GPUs. Inputs are the
raw objects the API returned (dicts), so the reconciler stays a thin reader and this module is
table-tested without a cluster.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from kubeinfer.core import runtime_failures


class ConditionType(enum.StrEnum):
    READY = "Ready"
    RUNTIME_RESOLVED = "RuntimeResolved"
    DEPLOYMENT_AVAILABLE = "DeploymentAvailable"
    WAITING_FOR_GPU = "WaitingForGPUCapacity"
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


_PRIORITY = [
    ConditionType.READY,
    ConditionType.RUNTIME_RESOLVED,
    ConditionType.WAITING_FOR_GPU,
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
) -> dict[str, Any]:
    return {
        "type": ctype.value,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def gpu_waiting(pods: list[dict[str, Any]], gpu_resource: str) -> list[tuple[str, str]]:
    """(pod name, scheduler message) of pods the scheduler cannot place for lack of GPUs."""
    waiting = []
    for pod in pods:
        if pod.get("metadata", {}).get("deletionTimestamp"):
            continue
        for cond in pod.get("status", {}).get("conditions") or []:
            message = cond.get("message") or ""
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
                and f"Insufficient {gpu_resource}" in message
            ):
                waiting.append((pod["metadata"]["name"], message))
    return waiting


def pod_failures(pods: list[dict[str, Any]]) -> list[Problem]:
    """Failures a user must act on, with the kubelet's reason (CrashLoopBackOff, OOMKilled...)."""
    problems = []
    for pod in pods:
        name = pod.get("metadata", {}).get("name", "?")
        status = pod.get("status", {})
        for kind, key in (
            ("init container", "initContainerStatuses"),
            ("container", "containerStatuses"),
        ):
            for cs in status.get(key) or []:
                state = cs.get("state") or {}
                last = (cs.get("lastState") or {}).get("terminated") or {}
                waiting = state.get("waiting") or {}
                terminated = state.get("terminated") or {}
                reason = waiting.get("reason") or ""
                # The runtime's own words when it exited on a model it could not load.
                load_error = runtime_failures.model_load_error(
                    terminated.get("message") or last.get("message") or ""
                )
                if reason in FAILING_WAIT_REASONS:
                    detail = waiting.get("message") or last.get("reason") or ""
                    if reason == "CrashLoopBackOff" and last.get("reason") == "OOMKilled":
                        reason = "OOMKilled"
                    if reason == "CrashLoopBackOff" and load_error:
                        reason, detail = runtime_failures.MODEL_LOAD_FAILED, load_error
                    problems.append(
                        Problem(
                            ConditionType.PODS_HEALTHY,
                            reason,
                            f"Pod {name} {kind} {cs.get('name')}: {reason}"
                            f"{': ' + detail if detail else ''}.",
                        )
                    )
                elif load_error and terminated.get("exitCode", 0) != 0:
                    problems.append(
                        Problem(
                            ConditionType.PODS_HEALTHY,
                            runtime_failures.MODEL_LOAD_FAILED,
                            f"Pod {name} {kind} {cs.get('name')}: "
                            f"{runtime_failures.MODEL_LOAD_FAILED}: {load_error}.",
                        )
                    )
                elif terminated.get("reason") in FAILING_TERMINATED_REASONS and (
                    kind == "init container" or terminated.get("exitCode", 0) != 0
                ):
                    problems.append(
                        Problem(
                            ConditionType.PODS_HEALTHY,
                            "InitContainerFailed"
                            if kind == "init container"
                            else str(terminated["reason"]),
                            f"Pod {name} {kind} {cs.get('name')} terminated: "
                            f"{terminated.get('reason')} (exit code {terminated.get('exitCode')})"
                            f"{': ' + terminated['message'] if terminated.get('message') else ''}.",
                        )
                    )
    return problems


def build_status(obs: Observed) -> dict[str, Any]:
    """The status subresource (camelCase) for what was observed; lastTransitionTime is added by
    :func:`merge_conditions`, which knows the previous status."""
    gen = obs.generation
    deployment_status = (obs.deployment or {}).get("status", {})
    replicas = int(deployment_status.get("replicas") or 0)
    ready = int(deployment_status.get("readyReplicas") or 0)
    conditions: list[dict[str, Any]] = []
    problems: list[Problem] = []

    if obs.spec_problem:
        problems.append(obs.spec_problem)
    if obs.runtime_problem:
        problems.append(obs.runtime_problem)
        conditions.append(
            _condition(
                ConditionType.RUNTIME_RESOLVED,
                False,
                obs.runtime_problem.reason,
                obs.runtime_problem.message,
                gen,
            )
        )
    elif obs.runtime_name:
        conditions.append(
            _condition(
                ConditionType.RUNTIME_RESOLVED,
                True,
                "RuntimeResolved",
                f"Served by InferenceRuntime {obs.runtime_name}.",
                gen,
            )
        )

    available = any(
        c.get("type") == "Available" and c.get("status") == "True"
        for c in deployment_status.get("conditions") or []
    )
    if obs.deployment is None:
        dep_cond = _condition(
            ConditionType.DEPLOYMENT_AVAILABLE,
            False,
            "DeploymentMissing",
            "The Deployment has not been created yet.",
            gen,
        )
    elif obs.stopped:
        dep_cond = _condition(
            ConditionType.DEPLOYMENT_AVAILABLE,
            False,
            "Stopped",
            "Stopped: scaled to zero, GPUs released.",
            gen,
        )
    elif available and ready > 0:
        dep_cond = _condition(
            ConditionType.DEPLOYMENT_AVAILABLE,
            True,
            "MinimumReplicasAvailable",
            f"{ready} of {replicas} replicas ready.",
            gen,
        )
    else:
        dep_cond = _condition(
            ConditionType.DEPLOYMENT_AVAILABLE,
            False,
            "ReplicasNotReady",
            f"{ready} of {replicas} replicas ready.",
            gen,
        )
    conditions.append(dep_cond)
    if obs.deployment is not None and not obs.stopped and dep_cond["status"] == "False":
        problems.append(
            Problem(ConditionType.DEPLOYMENT_AVAILABLE, dep_cond["reason"], dep_cond["message"])
        )

    waiting = gpu_waiting(obs.pods, obs.gpu_resource)
    if waiting:
        first_pod, first_msg = waiting[0]
        msg = (
            f"{len(waiting)} pod(s) wait for {obs.gpu_resource} "
            f"({obs.gpus_per_replica} per replica); e.g. {first_pod}: {first_msg}"
        )
        conditions.append(
            _condition(ConditionType.WAITING_FOR_GPU, True, "InsufficientGPU", msg, gen)
        )
        problems.append(Problem(ConditionType.WAITING_FOR_GPU, "WaitingForGPUCapacity", msg))
    else:
        conditions.append(
            _condition(
                ConditionType.WAITING_FOR_GPU,
                False,
                "GPUCapacityAvailable",
                "Every pod that needs a GPU has one.",
                gen,
            )
        )

    failures = pod_failures(obs.pods)
    if failures:
        conditions.append(
            _condition(
                ConditionType.PODS_HEALTHY,
                False,
                failures[0].reason,
                " ".join(f.message for f in failures[:3]),
                gen,
            )
        )
        problems.extend(failures)
    else:
        conditions.append(
            _condition(ConditionType.PODS_HEALTHY, True, "PodsHealthy", "No pod is failing.", gen)
        )

    if obs.stopped and not (obs.spec_problem or obs.runtime_problem):
        ready_cond = _condition(
            ConditionType.READY, False, "Stopped", "spec.stopped is true: no replicas run.", gen
        )
    elif problems:
        # The most specific cause names Ready's reason: "WaitingForGPUCapacity" tells a user
        # more than the "ReplicasNotReady" it causes.
        problems.sort(key=lambda p: _PRIORITY.index(p.condition))
        ready_cond = _condition(
            ConditionType.READY, False, problems[0].reason, problems[0].message, gen
        )
    else:
        ready_cond = _condition(
            ConditionType.READY,
            True,
            "Ready",
            f"{ready} of {replicas} replicas ready; serving at {obs.url}.",
            gen,
        )
    conditions.insert(0, ready_cond)

    status: dict[str, Any] = {
        "observedGeneration": gen,
        "replicas": replicas,
        "readyReplicas": ready,
        "gpus": replicas * obs.gpus_per_replica,
        "selector": obs.selector,
        "conditions": conditions,
    }
    if obs.url:
        status["url"] = obs.url
    if obs.runtime_name:
        status["runtime"] = obs.runtime_name
    return status


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
