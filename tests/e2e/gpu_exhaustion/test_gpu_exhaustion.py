"""End to end: when the cluster runs out of GPUs, pods that wait for them are reported
(WaitingForGPUCapacity True, for as long as any waits) and the autoscaler stops adding more.

Each replica takes 8 GPUs, a whole node; the cluster has 4 such nodes and the policy allows 40
replicas. The load (an open-loop multiple of one replica's measured capacity) asks for far more
than fits. The autoscaler cannot know the cluster is full before a step fails to schedule, but
once pods wait for GPUs it must add none: without that block its step rate would reach 40 in a
few ticks.
"""

from __future__ import annotations

import pathlib
import threading

from tests.conftest import ClusterHandle
from tests.e2e import load, scenario
from tests.operator_process import OperatorProcess
from tests.waiting import wait_for

# One request at a time in 80 ms of emulated device time: about 12 requests/s a replica.
DEVICE_MS = 80
STEP = 6.0  # wants about 6 replicas; 4 fit
LOAD_S = 25.0
# Time for a pod the scheduler refused to reach the condition (watch, debounce, write) and for
# a scale decision already in flight to land: the assertions allow this much, no more.
PROPAGATION_S = 3.0


def test_gpu_exhaustion_is_reported_and_blocks_runaway_scale_up(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str, tmp_path: pathlib.Path
) -> None:
    scenario.apply(
        cluster,
        namespace,
        scenario.manifest(
            "greedy",
            uri=scenario.model_uri(tmp_path),
            gpus=8,
            max_batch=1,
            device_ms=DEVICE_MS,
            mode="Off",
            scaling={
                "minReplicas": 1,
                "maxReplicas": 40,
                "metric": "QueueDepth",
                "target": 1,
                "stableWindowSeconds": 12,
                "scaleDownDelaySeconds": 10,
            },
        ),
    )
    with load.Endpoints(cluster.core, namespace, f"{scenario.LABEL}=greedy") as endpoints:
        [ip] = wait_for(lambda: endpoints(), 90, "the first replica Ready")
        capacity = scenario.measure_then_autoscale(cluster, namespace, "greedy", ip, concurrency=4)
        result = load.LoadResult()
        with scenario.Recorder(cluster, namespace, "greedy") as recorder:
            thread = threading.Thread(
                target=load.run,
                args=(
                    load.open_loop(
                        endpoints,
                        rate=STEP * capacity,
                        duration_s=LOAD_S,
                        # More load than the cluster can serve: a request may give up.
                        deadline_s=15,
                        result=result,
                    ),
                ),
            )
            thread.start()
            thread.join()
    samples = recorder.samples
    decisions = [
        (d["time"], d["reason"], d["current"], d["desired"])
        for d in scenario.get(cluster, namespace, "greedy")["status"]["autoscaler"]["decisions"]
    ]
    print(f"\ncapacity {capacity:.0f} req/s; {result.summary()}; samples {samples[::8]}")
    blocked_at = next((s.t for s in samples if s.unschedulable > 0), None)
    assert blocked_at is not None, samples
    # The condition tells the truth for as long as pods wait: every sample taken while pods
    # were unschedulable (after the propagation allowance) shows it True, and every sample
    # with none waiting (after the same allowance) shows it False.
    for s in samples:
        settled = [p for p in samples if s.t - PROPAGATION_S <= p.t <= s.t]
        if all(p.unschedulable > 0 for p in settled) and s.t >= blocked_at + PROPAGATION_S:
            assert s.waiting_for_gpu, (s, samples)
        if all(p.unschedulable == 0 for p in settled) and s.t >= PROPAGATION_S:
            assert not s.waiting_for_gpu, (s, samples)
    # Once pods wait for GPUs, the autoscaler adds no more: no runaway of pending pods.
    after = [s.replicas for s in samples if s.t >= blocked_at + PROPAGATION_S]
    assert after and max(after) == after[0], (samples, decisions)
    assert max(s.replicas for s in samples) < 40, decisions
    # The autoscaler itself saw the pods waiting (its signal, not only the scheduler's).
    assert (
        operator.metric(
            "kubeinfer_autoscaler_signal",
            namespace=namespace,
            inferenceservice="greedy",
            signal="unschedulable",
        )
        > 0
    ), decisions
