"""End to end on the local cluster: the operator scales real ONNX Runtime servers on pod IPs
under a load step, then back down; and it stops piling up pods when GPUs run out."""

from __future__ import annotations

import asyncio
import pathlib
import subprocess
import sys
import time
from typing import Any

import yaml

from tests.conftest import ClusterHandle
from tests.e2e.load import run_load
from tests.e2e.pod_servers import PodServers
from tests.operator_process import OperatorProcess
from tests.waiting import wait_for

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "integration" / "runtime"))
import itertools

from runtime_models import build_mlp

GROUP, VERSION, PLURAL = "kubeinfer.io", "v1alpha1", "inferenceservices"


def manifest(name: str, *, gpus: int, max_replicas: int, target: float = 4) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "InferenceService",
            "metadata": {"name": name},
            "spec": {
                "model": {
                    "name": "mlp",
                    "format": "onnx",
                    "storageUri": "https://127.0.0.1:9/mlp/model.onnx",
                },
                "runtime": "onnxruntime",
                "gpu": {"count": gpus},
                # kwok holds Ready back this long: the model download and load, simulated.
                "podMetadata": {"annotations": {"kubeinfer.io/simulated-cold-start": "3s"}},
                "scaling": {
                    "minReplicas": 1,
                    "maxReplicas": max_replicas,
                    "metric": "QueueDepth",
                    "target": target,
                    "stableWindowSeconds": 12,
                    "scaleDownDelaySeconds": 10,
                },
            },
        }
    )


def get(cluster: ClusterHandle, ns: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, name
    )
    return obj


def replicas(cluster: ClusterHandle, ns: str, name: str) -> int:
    return int(cluster.apps.read_namespaced_deployment(f"{name}-predictor", ns).spec.replicas)


def test_scales_up_under_load_and_back_down(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str, tmp_path: pathlib.Path
) -> None:
    repo = tmp_path / "repo"
    build_mlp(repo / "mlp" / "1" / "model.onnx")
    (tmp_path / "logs").mkdir()
    subprocess.run(
        [str(cluster.tools.kubectl), "apply", "-n", namespace, "-f", "-"],
        # Target 1 in flight per replica: the mlp server answers in well under a millisecond,
        # so 24 closed-loop clients on 2 shared cores keep only a few requests in flight; a
        # higher target made the step too small to be a step on a fast run.
        input=manifest("auto", gpus=1, max_replicas=4, target=1),
        text=True,
        env=cluster.env,
        check=True,
        capture_output=True,
    )
    history: list[tuple[float, int]] = []
    with PodServers(
        cluster.core, namespace, "kubeinfer.io/inferenceservice=auto", repo, tmp_path / "logs"
    ) as servers:
        wait_for(lambda: len(servers.ready_ips()) == 1, 60, "first server ready")
        assert replicas(cluster, namespace, "auto") == 1
        step = time.monotonic()

        async def load_and_watch() -> Any:
            load = asyncio.create_task(
                asyncio.to_thread(
                    lambda: asyncio.run(run_load(servers.ready_ips, concurrency=24, duration_s=25))
                )
            )
            while not load.done():
                history.append((time.monotonic() - step, replicas(cluster, namespace, "auto")))
                await asyncio.sleep(0.5)
            return await load

        result = asyncio.run(load_and_watch())
        first_up = next((t for t, r in history if r > 1), None)
        assert first_up is not None, (
            history,
            [
                (e.reason, e.message)
                for e in cluster.core.list_namespaced_event(namespace).items
                if e.source and e.source.component == "kubeinfer"
            ],
        )
        peak = max(r for _, r in history)
        # Load gone: wait for the scale-down after the stabilization delay.
        wait_for(lambda: replicas(cluster, namespace, "auto") == 1, 120, "scale back to 1")
        down_at = time.monotonic() - step
    obj = get(cluster, namespace, "auto")
    decisions = obj["status"]["autoscaler"]["decisions"]
    events = [
        e
        for e in cluster.core.list_namespaced_event(namespace).items
        if e.involved_object.name == "auto"
    ]
    ups = [e for e in events if e.reason == "ScaledUp"]
    downs = [e for e in events if e.reason == "ScaledDown"]
    print(
        f"\nload step -> first scale-up {first_up:.1f} s; peak {peak} replicas; "
        f"back to 1 at {down_at:.1f} s; requests ok={result.ok} 503={result.rejected_503} "
        f"failed={result.failed}; scale events up={len(ups)} down={len(downs)}; "
        f"learned cold start {obj['status']['autoscaler']['coldStartSeconds']} s"
    )
    assert first_up is not None and first_up < 15, [
        (d["time"], d["reason"], d["desired"], d["inputs"].get("stable"), d["inputs"].get("panic"))
        for d in decisions
    ]
    assert peak >= 2
    assert result.failed == 0, result.errors[:5]
    assert result.ok > 100
    # No flapping: replicas rise, then fall; they never go back up after falling.
    counts = [r for _, r in history]
    fell = False
    for before, after in itertools.pairwise(counts):
        if after < before:
            fell = True
        assert not (fell and after > before), counts
    assert ups and downs

    # Status keeps only the last 10 decisions; the operator's counter has every one.
    def decided(reason: str) -> float:
        return operator.metric(
            "kubeinfer_autoscaler_decisions_total",
            namespace=namespace,
            inferenceservice="auto",
            reason=reason,
        )

    assert sum(decided(r) for r in ("ScaleUp", "PanicScaleUp", "EarlyScaleUp")) >= 1
    assert decided("ScaleDown") >= 1
    # The cold start was learned from pod timestamps (kwok held Ready back 3 s).
    cold_start = obj["status"]["autoscaler"]["coldStartSeconds"]
    assert cold_start is not None and 2 <= cold_start <= 10, cold_start


def test_gpu_exhaustion_blocks_runaway_pending_pods(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str, tmp_path: pathlib.Path
) -> None:
    repo = tmp_path / "repo"
    build_mlp(repo / "mlp" / "1" / "model.onnx")
    (tmp_path / "logs").mkdir()
    # 8 GPUs per replica: a node each; the cluster has 4 such nodes, the policy allows 40.
    # Target 1 in flight per replica, so the load asks for far more than fits. The autoscaler
    # cannot know the cluster is full before a step fails to schedule (1 -> 2 fits, so a next
    # step to 20 is fair), but once pods wait for GPUs it must add none: without that block a
    # 10x step rate would reach 40 within a few ticks.
    subprocess.run(
        [str(cluster.tools.kubectl), "apply", "-n", namespace, "-f", "-"],
        input=manifest("greedy", gpus=8, max_replicas=40, target=1),
        text=True,
        env=cluster.env,
        check=True,
        capture_output=True,
    )
    with PodServers(
        cluster.core, namespace, "kubeinfer.io/inferenceservice=greedy", repo, tmp_path / "logs"
    ) as servers:
        wait_for(lambda: len(servers.ready_ips()) == 1, 60, "first server ready")

        def waiting() -> bool:
            cond = [
                c
                for c in (get(cluster, namespace, "greedy").get("status") or {}).get(
                    "conditions", []
                )
                if c["type"] == "WaitingForGPUCapacity"
            ]
            return bool(cond and cond[0]["status"] == "True")

        samples: list[tuple[float, int, int]] = []  # (t, spec.replicas, unschedulable pods)

        def unschedulable() -> int:
            pods = cluster.core.list_namespaced_pod(
                namespace, label_selector="kubeinfer.io/inferenceservice=greedy"
            ).items
            return sum(
                1
                for p in pods
                if any(
                    c.type == "PodScheduled" and c.status == "False"
                    for c in p.status.conditions or []
                )
            )

        async def load_and_watch() -> None:
            task = asyncio.create_task(
                asyncio.to_thread(
                    lambda: asyncio.run(run_load(servers.ready_ips, concurrency=48, duration_s=30))
                )
            )
            started = time.monotonic()
            while not task.done():
                samples.append(
                    (
                        time.monotonic() - started,
                        replicas(cluster, namespace, "greedy"),
                        unschedulable(),
                    )
                )
                await asyncio.sleep(0.5)
            await task

        asyncio.run(load_and_watch())
        decisions = get(cluster, namespace, "greedy")["status"]["autoscaler"]["decisions"]
    blocked_at = next((t for t, _, stuck in samples if stuck > 0), None)
    assert blocked_at is not None, samples
    assert waiting(), "WaitingForGPUCapacity should be True while pods are unschedulable"
    # Once pods wait for GPUs, the autoscaler adds no more (one 2 s tick of slack for a
    # decision already in flight): no runaway of pending pods however high the load.
    settled = [r for t, r, _ in samples if t >= blocked_at + 2.5]
    assert settled and max(settled) == settled[0], samples
    assert replicas(cluster, namespace, "greedy") < 40, (samples, decisions)
    # The autoscaler itself saw the pods waiting (its signal, not only the scheduler's).
    # Whether it still wanted more by then depends on how much load 2 cores can drive, so
    # the block is asserted through its effect above, not through a decision reason.
    assert (
        operator.metric(
            "kubeinfer_autoscaler_signal",
            namespace=namespace,
            inferenceservice="greedy",
            signal="unschedulable",
        )
        > 0
    ), decisions
