"""Status rules: Ready tells the truth, with the most specific reason."""

from __future__ import annotations

from typing import Any

import pytest

from kubeinfer.core import api, rollout, status

AVAILABLE = {
    "status": {
        "replicas": 2,
        "readyReplicas": 2,
        "conditions": [{"type": "Available", "status": "True"}],
    }
}


def built(obs: status.Observed) -> dict[str, Any]:
    """The status as the reconciler writes it."""
    return status.to_dict(status.build_status(obs))


def observed(**kw: Any) -> status.Observed:
    base: dict[str, Any] = dict(
        generation=3,
        runtime_name="onnxruntime",
        runtime_problem=None,
        spec_problem=None,
        stopped=False,
        gpu_resource="nvidia.com/gpu",
        gpus_per_replica=1,
        url="http://x",
        selector="a=b",
        deployment=AVAILABLE,
        pods=[],
    )
    base.update(kw)
    return status.Observed(**base)


def cond(st: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next(c for c in st["conditions"] if c["type"] == ctype)


def pod(name: str, **status_: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": status_}


def test_ready_when_everything_is_right() -> None:
    st = built(observed())
    assert cond(st, "Ready")["status"] == "True"
    assert st["readyReplicas"] == 2 and st["gpus"] == 2 and st["observedGeneration"] == 3


def test_gpu_starvation_names_the_reason() -> None:
    waiting = pod(
        "p1",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/4 nodes: 4 Insufficient nvidia.com/gpu.",
            }
        ],
    )
    st = built(observed(pods=[waiting], deployment={"status": {"replicas": 1}}))
    assert cond(st, "WaitingForGPUCapacity")["status"] == "True"
    ready = cond(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "WaitingForGPUCapacity")


@pytest.mark.parametrize(
    "container_status,reason",
    [
        (
            {
                "name": "server",
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"reason": "OOMKilled"}},
            },
            "OOMKilled",
        ),
        (
            {"name": "server", "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
            "CrashLoopBackOff",
        ),
        (
            {
                "name": "server",
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}},
            },
            "ImagePullBackOff",
        ),
    ],
)
def test_pod_failures_surface(container_status: dict[str, Any], reason: str) -> None:
    st = built(observed(pods=[pod("p", containerStatuses=[container_status])]))
    assert cond(st, "PodsHealthy")["reason"] == reason
    assert cond(st, "Ready")["status"] == "False"


def test_storage_initializer_failure_names_its_cause() -> None:
    """Bad credentials: Ready says why (the initializer's one-line error), not only
    CrashLoopBackOff."""
    failing = pod(
        "p",
        initContainerStatuses=[
            {
                "name": "storage-initializer",
                "state": {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": "back-off 20s restarting failed container",
                    }
                },
                "lastState": {
                    "terminated": {
                        "reason": "Error",
                        "exitCode": 4,
                        "message": "INFO fetching s3://models/m.onnx\n"
                        "kubeinfer storage-init: error: s3://models/m.onnx: AccessDenied\n",
                    }
                },
            }
        ],
    )
    st = built(observed(pods=[failing]))
    assert cond(st, "PodsHealthy")["reason"] == "StorageInitFailed"
    assert cond(st, "Ready")["reason"] == "StorageInitFailed"
    assert cond(st, "Ready")["message"].endswith(
        "StorageInitFailed: kubeinfer storage-init: error: s3://models/m.onnx: AccessDenied."
    )


def test_another_init_container_failure_keeps_the_kubelet_reason() -> None:
    failing = pod(
        "p",
        initContainerStatuses=[
            {
                "name": "other",
                "state": {
                    "terminated": {"reason": "Error", "exitCode": 3, "message": "object not found"}
                },
            }
        ],
    )
    st = built(observed(pods=[failing]))
    assert cond(st, "PodsHealthy")["reason"] == "Error"
    assert "exit code 3: object not found" in cond(st, "PodsHealthy")["message"]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("0/4 nodes are available: 4 Insufficient cpu.", "InsufficientCPU"),
        ("0/4 nodes are available: 4 Insufficient memory.", "InsufficientMemory"),
        (
            "0/4 nodes are available: 4 node(s) didn't match Pod's node affinity/selector.",
            "NodeSelectorMismatch",
        ),
        ("0/4 nodes are available: 4 node(s) had untolerated taint {a: b}.", "UntoleratedTaint"),
    ],
)
def test_every_unschedulable_reason_is_named_and_only_gpus_wait_for_gpus(
    message: str, reason: str
) -> None:
    stuck = pod("p")
    stuck["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
    ]
    st = built(observed(pods=[stuck], deployment={"status": {"replicas": 1}}))
    assert cond(st, "PodsScheduled")["reason"] == reason
    assert cond(st, "Ready")["reason"] == reason and message in cond(st, "Ready")["message"]
    assert cond(st, "WaitingForGPUCapacity")["status"] == "False"


def test_runtime_problem_and_stopped() -> None:
    problem = status.Problem(status.ConditionType.RUNTIME_RESOLVED, "NoRuntimeForFormat", "m")
    st = built(observed(runtime_problem=problem, runtime_name=None))
    assert cond(st, "Ready")["reason"] == "NoRuntimeForFormat"
    st = built(observed(stopped=True))
    assert cond(st, "Ready")["reason"] == "Stopped"


def test_transition_time_kept_while_status_unchanged() -> None:
    old = [{"type": "Ready", "status": "True", "lastTransitionTime": "T0"}]
    new = [{"type": "Ready", "status": "True"}]
    assert status.merge_conditions(new, old, "T1")[0]["lastTransitionTime"] == "T0"
    flipped = [{"type": "Ready", "status": "False"}]
    assert status.merge_conditions(flipped, old, "T1")[0]["lastTransitionTime"] == "T1"


# --- rollouts -------------------------------------------------------------------------------


def rolling_deployment(revision: str = "2", **status_: Any) -> dict[str, Any]:
    """A Deployment in the middle of a rollout: one old pod left, the new one not available."""
    return {
        "metadata": {
            "generation": 2,
            "annotations": {
                "deployment.kubernetes.io/revision": revision,
                **rollout.to_annotations(rollout.default(1)),
            },
        },
        "spec": {"replicas": 1, "progressDeadlineSeconds": 900},
        "status": {
            "observedGeneration": 2,
            "replicas": 2,
            "updatedReplicas": 1,
            "availableReplicas": 1,
            **status_,
        },
    }


REFUSED = pod(
    "m-new",
    conditions=[
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
        }
    ],
)


def test_status_names_the_rollout_strategy_the_deployment_carries() -> None:
    st = built(observed(deployment=rolling_deployment()))
    assert st["rollout"] == {
        "state": "Progressing",
        "strategy": "NoSurge",
        "maxSurge": 0,
        "maxUnavailable": 1,
        "reason": "GPUCapacityUnknown",
        "message": rollout.default(1).message,
    }
    # A Deployment with no decision recorded (made by an older operator): no claim.
    assert "rollout" not in built(observed())


def test_status_rollout_reads_as_done_once_the_rollout_has_finished() -> None:
    # Every pod replaced and available: the strategy and its reason stay (why the last
    # rollout went as it did), marked Complete, not reported as if still under way.
    done = rolling_deployment(replicas=1, updatedReplicas=1, availableReplicas=1)
    st = built(observed(deployment=done))
    assert st["rollout"]["state"] == "Complete"
    assert st["rollout"]["reason"] == "GPUCapacityUnknown"
    assert cond(st, "RolloutStuck")["reason"] == "NoRollout"
    # A new service's first pods: no rollout yet, whatever they wait for.
    first = built(observed(deployment=rolling_deployment(revision="1")))
    assert first["rollout"]["state"] == "NotStarted"


def test_a_new_pod_the_scheduler_refuses_during_a_rollout_is_a_stuck_rollout() -> None:
    st = built(observed(deployment=rolling_deployment(), pods=[REFUSED]))
    stuck = cond(st, "RolloutStuck")
    assert stuck["status"] == "True" and stuck["reason"] == "InsufficientGPU"
    assert "m-new" in stuck["message"] and "4 Insufficient nvidia.com/gpu" in stuck["message"]


def test_not_stuck_while_an_old_pod_releases_its_gpus_or_on_the_first_start() -> None:
    releasing = {"metadata": {"name": "m-old", "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    st = built(observed(deployment=rolling_deployment(), pods=[REFUSED, releasing]))
    assert cond(st, "RolloutStuck")["status"] == "False"
    # Revision 1 is the service's first pods: WaitingForGPUCapacity says why they wait.
    st = built(observed(deployment=rolling_deployment(revision="1"), pods=[REFUSED]))
    assert cond(st, "RolloutStuck")["reason"] == "NoRollout"
    st = built(observed(deployment=rolling_deployment()))
    assert cond(st, "RolloutStuck")["reason"] == "RolloutProgressing"


def test_a_scale_up_waiting_for_gpus_after_a_rollout_is_not_a_stuck_rollout() -> None:
    # Revision 2, every pod of the current template, one more asked for than is available:
    # the autoscaler's new pod waits for a GPU (WaitingForGPUCapacity), nothing is replaced.
    dep = rolling_deployment(replicas=3, updatedReplicas=3, availableReplicas=2)
    dep["spec"]["replicas"] = 3
    stuck = cond(built(observed(deployment=dep, pods=[REFUSED])), "RolloutStuck")
    assert stuck["status"] == "False" and stuck["reason"] == "NoRollout"


def test_the_deployments_deadline_is_a_stuck_rollout() -> None:
    dep = rolling_deployment(
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "m-predictor-7f" has timed out progressing.',
            }
        ]
    )
    stuck = cond(built(observed(deployment=dep)), "RolloutStuck")
    assert stuck["status"] == "True" and stuck["reason"] == "ProgressDeadlineExceeded"
    assert "900 s" in stuck["message"] and "timed out progressing" in stuck["message"]


def test_a_new_service_past_its_deadline_is_not_a_stuck_rollout() -> None:
    # Its first pods wait for capacity (WaitingForGPUCapacity says so); nothing is rolling.
    dep = rolling_deployment(
        revision="1",
        conditions=[
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        ],
    )
    stuck = cond(built(observed(deployment=dep, pods=[REFUSED])), "RolloutStuck")
    assert stuck["status"] == "False" and stuck["reason"] == "NoRollout"


# ---- GPUInUse: does a service given GPUs compute on them? ------------------------------------

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def use(provider: str, pods: int, example: str) -> api.ProviderUse:
    return api.ProviderUse(provider=provider, pods=pods, example=example)


@pytest.mark.parametrize(
    ("uses", "state", "reason", "says"),
    [
        ((use(CUDA, 2, "p0"),), "True", "RunningOnGPU", "2 on CUDAExecutionProvider"),
        (
            (use(CPU, 1, "p1"), use(CUDA, 2, "p0")),
            "False",
            "RunningOnCPU",
            "1 of 3 pod(s) run the model on CPUExecutionProvider although gpu.count is 1 (e.g. p1)",
        ),
        ((use(CPU, 2, "p0"),), "False", "RunningOnCPU", "gpu variant"),
        ((), "Unknown", "NotReported", "execution provider on /metrics"),
    ],
)
def test_gpu_in_use_names_where_the_model_computes(
    uses: tuple[api.ProviderUse, ...], state: str, reason: str, says: str
) -> None:
    st = built(observed(execution_providers=uses, runtime_reports_provider=True))
    gpu = cond(st, "GPUInUse")
    assert (gpu["status"], gpu["reason"]) == (state, reason)
    assert says in gpu["message"]
    # It informs and never takes Ready away: a model on CPU still answers.
    assert cond(st, "Ready")["status"] == "True"


@pytest.mark.parametrize(
    "kw",
    [
        {"gpus_per_replica": 0},
        {"stopped": True},
        {"runtime_reports_provider": False},  # Triton: a GPU model there fails, never falls back
    ],
)
def test_no_gpu_condition_without_gpus_in_use(kw: dict[str, Any]) -> None:
    base = {"execution_providers": (use(CPU, 1, "p0"),), "runtime_reports_provider": True}
    st = built(observed(**{**base, **kw}))
    assert "GPUInUse" not in {c["type"] for c in st["conditions"]}


def test_recorded_providers_come_from_the_autoscalers_status() -> None:
    current = {
        "autoscaler": {
            "executionProviders": [
                {"provider": CPU, "pods": 2, "example": "p0"},
                {"provider": CUDA, "pods": 0, "example": "p9"},  # invalid: left out
            ]
        }
    }
    assert status.recorded_providers(current) == (use(CPU, 2, "p0"),)
    assert status.recorded_providers({}) == ()
    # The CRD publishes what the autoscaler writes (the schema is generated from the model).
    dumped = api.AutoscalerStatus(execution_providers=[use(CPU, 2, "p0")]).model_dump(
        by_alias=True, mode="json"
    )
    assert dumped["executionProviders"] == [{"provider": CPU, "pods": 2, "example": "p0"}]


def gpu_status(state: str | None) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True"}]
    if state is not None:
        conditions.append({"type": "GPUInUse", "status": state, "reason": "R", "message": "M"})
    return {"conditions": conditions}


@pytest.mark.parametrize(
    ("before", "now", "warn"),
    [
        (None, "False", True),  # first report says CPU
        ("Unknown", "False", True),
        ("True", "False", True),  # a pod restarted without its GPU
        ("False", "False", False),  # already told
        ("False", "True", False),
        (None, "Unknown", False),
        ("True", None, False),  # gpu.count went to 0
    ],
)
def test_a_warning_event_when_gpu_in_use_turns_false(
    before: str | None, now: str | None, warn: bool
) -> None:
    news = status.cpu_fallback_news(gpu_status(now), gpu_status(before))
    assert (news is not None) is warn
    if warn:
        assert news == {"type": "GPUInUse", "status": "False", "reason": "R", "message": "M"}


AT_ZERO = {
    "spec": {"replicas": 0},
    "status": {"replicas": 0, "conditions": [{"type": "Available", "status": "True"}]},
}
WOKEN = {
    "spec": {"replicas": 1},
    "status": {"replicas": 1, "readyReplicas": 0, "conditions": []},
}


def test_a_routed_service_at_zero_is_ready_and_a_wake_is_named() -> None:
    st = built(observed(deployment=AT_ZERO, may_scale_to_zero=True))
    assert (cond(st, "Ready")["status"], cond(st, "Ready")["reason"]) == ("True", "ScaledToZero")
    # Woken by the router, the replica not ready yet: named, not a bare ReplicasNotReady.
    st = built(observed(deployment=WOKEN, may_scale_to_zero=True, waking=True))
    assert (cond(st, "Ready")["status"], cond(st, "Ready")["reason"]) == ("False", "WakingUp")
    # The first start of such a service is an ordinary start.
    st = built(observed(deployment=WOKEN, may_scale_to_zero=True, waking=False))
    assert cond(st, "Ready")["reason"] == "ReplicasNotReady"
    # Without the router zero replicas is no resting state.
    st = built(observed(deployment=AT_ZERO))
    assert cond(st, "Ready")["status"] == "False"


def test_waking_reads_the_autoscalers_decisions_since_a_replica_was_ready() -> None:
    def decided(*reasons: tuple[str, int]) -> dict[str, Any]:
        return {
            "autoscaler": {
                "decisions": [{"reason": r, "inputs": {"ready": float(n)}} for r, n in reasons]
            }
        }

    assert status.waking(decided(("AtMin", 1), ("ScaledToZero", 1)))
    assert status.waking(decided(("AtZero", 0)))
    assert not status.waking(decided(("ScaledToZero", 1), ("WokenByRouter", 0), ("AtMin", 1)))
    assert not status.waking({})
    # The woken replica still starting: decisions without a Ready pod keep it waking...
    assert status.waking(decided(("WokenByRouter", 0), ("NoData", 0), ("NoData", 0)))
    # ...until one saw a Ready replica; and a first start (NoData alone) is no wake.
    assert not status.waking(decided(("WokenByRouter", 0), ("Hold", 1)))
    assert not status.waking(decided(("NoData", 0)))
