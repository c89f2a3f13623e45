"""The rollout strategy decision, table-tested: surge only where a GPU replica has room."""

from __future__ import annotations

from typing import Any

import pytest

from kubeinfer.core import api, builders, rollout

SURGE, NO_SURGE = api.RolloutStrategy.SURGE, api.RolloutStrategy.NO_SURGE


def seen(**kw: Any) -> rollout.Seen:
    base: dict[str, Any] = dict(
        gpus_per_replica=1,
        gpu_resource="nvidia.com/gpu",
        template_changes=True,
        rolling=False,
        live=None,
        spare_gpus=0,
        pod_waits_for_gpu=False,
    )
    base.update(kw)
    return rollout.Seen(**base)


def recorded(strategy: api.RolloutStrategy, reason: str = "Earlier") -> api.RolloutStatus:
    # A decision as the live Deployment carries it (round trip through its annotations).
    decision = rollout.decide(seen(spare_gpus=8 if strategy is SURGE else 0))
    notes = {**rollout.to_annotations(decision), rollout.ANNOTATION_REASON: reason}
    out = rollout.recorded({"metadata": {"annotations": notes}})
    assert out is not None and out.strategy is strategy
    return out


@pytest.mark.parametrize(
    ("kw", "strategy", "reason"),
    [
        # CPU services always surge, whatever the GPUs look like.
        ({"gpus_per_replica": 0, "spare_gpus": 0}, SURGE, "NoGPUs"),
        ({"gpus_per_replica": 0, "spare_gpus": None}, SURGE, "NoGPUs"),
        # A GPU rollout about to start: surge only when one node has a whole replica free.
        ({"spare_gpus": 0}, NO_SURGE, "NoSpareGPUCapacity"),
        ({"gpus_per_replica": 4, "spare_gpus": 3}, NO_SURGE, "NoSpareGPUCapacity"),
        ({"gpus_per_replica": 4, "spare_gpus": 4}, SURGE, "SpareGPUCapacity"),
        ({"spare_gpus": None}, NO_SURGE, "GPUCapacityUnknown"),
        # Being created (no live decision, no rollout): nothing counted, the safe default.
        ({"template_changes": False, "spare_gpus": None}, NO_SURGE, "NoRolloutYet"),
        ({"template_changes": False, "spare_gpus": 8}, NO_SURGE, "NoRolloutYet"),
    ],
)
def test_decide(kw: dict[str, Any], strategy: api.RolloutStrategy, reason: str) -> None:
    decision = rollout.decide(seen(**kw))
    assert (decision.strategy, decision.reason) == (strategy, reason)
    assert decision.message


def test_a_decision_is_kept_while_nothing_new_rolls_out() -> None:
    # Capacity moving underneath (the surge pod itself took the last GPU) changes nothing.
    live = recorded(SURGE)
    assert rollout.decide(seen(live=live, template_changes=False, rolling=True)) == live
    live = recorded(NO_SURGE)
    assert rollout.decide(seen(live=live, template_changes=False, spare_gpus=8)) == live


def test_a_new_template_is_decided_afresh() -> None:
    decision = rollout.decide(seen(live=recorded(NO_SURGE), spare_gpus=8))
    assert decision.strategy is SURGE


def test_a_surge_pod_waiting_for_gpus_turns_the_rollout_to_no_surge() -> None:
    decision = rollout.decide(
        seen(live=recorded(SURGE), template_changes=False, rolling=True, pod_waits_for_gpu=True)
    )
    assert (decision.strategy, decision.reason) == (NO_SURGE, "SurgeWaitsForGPU")
    # With no surge, a pod waiting for GPUs is waiting for the old pod's: nothing to change.
    live = recorded(NO_SURGE)
    kept = seen(live=live, template_changes=False, rolling=True, pod_waits_for_gpu=True)
    assert rollout.decide(kept) == live
    # Outside a rollout, a pod waiting for GPUs is a scale-up, not the surge.
    live = recorded(SURGE)
    assert rollout.decide(seen(live=live, template_changes=False, pod_waits_for_gpu=True)) == live


@pytest.mark.parametrize("gpus", [0, 1, 8])
@pytest.mark.parametrize("spare", [None, 0, 1, 8])
@pytest.mark.parametrize("waits", [False, True])
def test_never_both_zero(gpus: int, spare: int | None, waits: bool) -> None:
    for live in (None, recorded(SURGE), recorded(NO_SURGE)):
        d = rollout.decide(
            seen(gpus_per_replica=gpus, spare_gpus=spare, live=live, pod_waits_for_gpu=waits)
        )
        assert d.max_surge + d.max_unavailable == 1
        assert rollout.strategy_spec(d)["rollingUpdate"] == {
            "maxSurge": d.max_surge,
            "maxUnavailable": d.max_unavailable,
        }


def test_recorded_needs_a_known_strategy() -> None:
    assert rollout.recorded(None) is None
    assert rollout.recorded({"metadata": {}}) is None
    bad = {"metadata": {"annotations": {rollout.ANNOTATION_STRATEGY: "Sideways"}}}
    assert rollout.recorded(bad) is None


def deployment(gen: int = 2, observed: int = 2, **status: int) -> dict[str, Any]:
    return {
        "metadata": {"generation": gen},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": observed, **status},
    }


@pytest.mark.parametrize(
    ("dep", "rolling"),
    [
        (None, False),
        (deployment(replicas=2, updatedReplicas=2, availableReplicas=2), False),
        (deployment(gen=3, replicas=2, updatedReplicas=2, availableReplicas=2), True),
        (deployment(replicas=3, updatedReplicas=1, availableReplicas=2), True),
        (deployment(replicas=2, updatedReplicas=2, availableReplicas=1), True),
    ],
)
def test_rolling(dep: dict[str, Any] | None, rolling: bool) -> None:
    assert rollout.rolling(dep) is rolling


def test_deadline_exceeded_quotes_the_deployment() -> None:
    dep = {
        "status": {
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": 'ReplicaSet "m-abc" has timed out progressing.',
                }
            ]
        }
    }
    assert rollout.deadline_exceeded(dep) == 'ReplicaSet "m-abc" has timed out progressing.'
    assert rollout.deadline_exceeded({"status": {}}) is None


def test_the_deployment_carries_the_decision_and_a_deadline_past_the_model_load() -> None:
    owner = builders.Owner(name="m", namespace="ns", uid="u")
    runtime = api.InferenceRuntimeSpec(
        image="i", formats=[api.RuntimeFormat(name=api.ModelFormat.ONNX)]
    )
    spec = api.parse_spec(
        {
            "model": {"name": "m", "format": "onnx", "storageUri": "https://h/m.onnx"},
            "gpu": {"count": 1},
        }
    )
    decision = rollout.decide(seen(spare_gpus=1))
    dep = builders.build_deployment(owner, spec, "o", runtime, strategy=decision)
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert rollout.recorded(dep) == decision
    # Without a decision: no surge for a GPU service, surge for a CPU one.
    dep = builders.build_deployment(owner, spec, "o", runtime)
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    cpu = spec.model_copy(update={"gpu": api.GPUSpec()})
    dep = builders.build_deployment(owner, cpu, "o", runtime)
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert dep["spec"]["progressDeadlineSeconds"] == max(
        600, runtime.probes.startup_timeout_seconds + rollout.PROGRESS_MARGIN_S
    )
