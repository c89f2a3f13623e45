"""Ten load-aware scale-ins under open-loop load lose no request (issue 16, item 5).

Every part is the shipped one except the kubelet: the operator's own choice of the pod to
remove and its marks (``core.scale_in.plan``, written by ``clients.kube.apply_marks``, the
autoscaler's write path), the ReplicaSet controller removing the pod with the lowest
pod-deletion-cost, the router (pods discovery, a subprocess) sending the marked pod no new
work, and real kubeinfer_onnx servers bound to the pods' loopback IPs. kwok plays the
kubelet for these pods (Ready at once, deleted without a grace period), so the test plays
its other half: a pod's server is started when the pod gets its IP and gets SIGTERM (the
server's drain: stop listening, finish what it accepted) the moment its pod is deleted.
"""

from __future__ import annotations

import asyncio
import pathlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from router_processes import (
    OnnxServer,
    Router,
    build_repo,
    deployment,
    mlp_request,
    open_loop,
    replicas,
    start_onnx,
    start_router,
)

from kubeinfer.clients import kube
from kubeinfer.core import scale_in
from tests.conftest import ClusterHandle
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster

SCALE_INS = 10
REPLICAS = 3
INFER = "/v2/models/mlp/infer"


class Pods:
    """The test's half of the kubelet: one real server per live pod of the Deployment, started
    when the pod has an IP, stopped (SIGTERM) when the pod is deleted or gone."""

    def __init__(self, cluster: ClusterHandle, namespace: str, repo: pathlib.Path,
                 logs: pathlib.Path) -> None:  # fmt: skip
        self.cluster, self.namespace, self.repo, self.logs = cluster, namespace, repo, logs
        self.servers: dict[str, OnnxServer] = {}  # pod name -> its server
        self.stopped: list[str] = []

    def sync(self) -> list[str]:
        """Start and stop servers to match the pods; the names of the live pods with a server."""
        pods = self.cluster.core.list_namespaced_pod(self.namespace, label_selector="app=s").items
        live = {p.metadata.name: p for p in pods if not p.metadata.deletion_timestamp}
        for name in list(self.servers):
            if name not in live:
                self.servers.pop(name).stop()
                self.stopped.append(name)
        for name, pod in live.items():
            if name not in self.servers and pod.status.pod_ip:
                self.servers[name] = start_onnx(
                    self.repo, self.logs / f"{name}.log", address=pod.status.pod_ip,
                    http_port=8000, metrics_port=8002,
                )  # fmt: skip
        return sorted(self.servers)

    def close(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.servers.clear()


@pytest.fixture
def pods(cluster: ClusterHandle, namespace: str, tmp_path: pathlib.Path) -> Iterator[Pods]:
    running = Pods(cluster, namespace, build_repo(tmp_path, "mlp"), tmp_path)
    yield running
    running.close()


def upstream_answers(router: Router, key: str) -> float:
    """Answers the router has read from one pod (its per-pod upstream histogram's count)."""
    return router.metric("kubeinfer_router_upstream_duration_seconds_count", pod=key)


async def capacity(url: str, seconds: float = 3.0, callers: int = 8) -> float:
    """Requests per second the router and its pods answer closed-loop: what the load is sized
    from, so the test means the same on a fast and a slow machine."""
    body, done = mlp_request(1), 0
    end = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:

        async def caller() -> None:
            nonlocal done
            while time.monotonic() < end:
                async with session.post(url, data=body) as response:
                    await response.read()
                    done += response.status == 200

        await asyncio.gather(*(caller() for _ in range(callers)))
    return done / seconds


def routable(router: Router) -> int:
    """The pods the router would send new work to (Ready, not draining)."""
    return sum(1 for e in router.endpoints()["endpoints"] if e["ready"] and not e["draining"])


def live_pods(cluster: ClusterHandle, namespace: str) -> list[dict[str, Any]]:
    """The Deployment's pods that are not being deleted, as the API serialises them."""
    pods = cluster.core.list_namespaced_pod(namespace, label_selector="app=s").items
    return [
        cluster.api.sanitize_for_serialization(p) for p in pods if not p.metadata.deletion_timestamp
    ]


def scale_in_once(
    cluster: ClusterHandle, namespace: str, pods: Pods, router: Router
) -> tuple[str, str, float, float]:
    """One scale-in as the autoscaler does it (choose the least loaded pod, mark it, lower
    the replicas), then back up. Returns (pod marked, pod deleted, answers the router read
    from the marked pod beyond those in flight when it reported the pod draining, seconds
    from the mark's write to the router draining the pod)."""
    live = live_pods(cluster, namespace)
    # Every pod is Ready and idle enough; the scrape's load is the autoscaler's concern.
    views = [scale_in.view(p, ready=True, load=None) for p in live]
    plan = scale_in.plan(pods=views, remove=1, manager=kube.SCALER_MANAGER)
    assert plan.outcome is scale_in.Outcome.MARKED and len(plan.chosen) == 1, plan
    chosen = plan.chosen[0]
    key = chosen  # the router keys a discovered pod by its name
    marked_at = time.monotonic()
    for pod, marks in plan.writes.items():
        kube.apply_marks(namespace, pod, dict(marks), uid=plan.uids.get(pod, ""))

    def draining() -> dict[str, Any] | None:
        eps = router.endpoints()["endpoints"]
        return next((e for e in eps if e["key"] == key and e["draining"]), None)

    # On a real node the deleted pod keeps serving through its preStop sleep (the builder's
    # 5 s) while the router and endpoints drop it; kwok deletes at once, so the test waits for
    # the router to drain the marked pod before the scale-in, and checks it did within 5 s.
    seen = wait_for(draining, 30, what=f"the router draining {chosen}", every=0.01)
    drained_in = time.monotonic() - marked_at
    answered_then = upstream_answers(router, key) + seen["in_flight"]
    cluster.apps.patch_namespaced_deployment_scale(
        "s", namespace, {"spec": {"replicas": REPLICAS - 1}}
    )
    stopped = len(pods.stopped)
    wait_for(lambda: pods.sync() and len(pods.stopped) > stopped, 60, what="a pod deleted")
    leaked = upstream_answers(router, key) - answered_then
    cluster.apps.patch_namespaced_deployment_scale("s", namespace, {"spec": {"replicas": REPLICAS}})
    wait_for(lambda: len(pods.sync()) == REPLICAS, 60, what="the replacement pod")
    wait_for(lambda: routable(router) == REPLICAS, 60, what="3 routable")
    return chosen, pods.stopped[-1], leaked, drained_in


def test_ten_scale_ins_under_load_lose_no_request(
    cluster: ClusterHandle, namespace: str, tmp_path: pathlib.Path, pods: Pods
) -> None:
    cluster.apps.create_namespaced_deployment(namespace, deployment("s", replicas=REPLICAS))
    wait_for(lambda: len(pods.sync()) == REPLICAS, 60, what="three pods with servers")
    path = tmp_path / "router.yaml"
    path.write_text(
        f"discovery: {{mode: pods, namespace: {namespace}}}\n"
        "variants: [{name: stable, selector: {app: s}, deployment: s}]\n"
    )
    router = start_router(
        tmp_path / "router.log", "--config", str(path),
        env={"KUBECONFIG": str(cluster.kubeconfig)},
    )  # fmt: skip
    kube._client = cluster.api  # the autoscaler's own write path, against this cluster
    stop = threading.Event()
    results: list[tuple[int, float]] = []
    try:
        wait_for(lambda: routable(router) == REPLICAS, 60, what="3 routable")
        rate = min(0.4 * asyncio.run(capacity(router.url + INFER)), 200.0)

        def load() -> None:  # open loop until the scale-ins are done
            coro = open_loop(router.url + INFER, rate=rate, seconds=600, body=mlp_request(1),
                             stop=stop)  # fmt: skip
            results.extend(asyncio.run(coro))

        loader = threading.Thread(target=load)
        loader.start()
        try:
            wait_for(lambda: len(results) or router.metric("kubeinfer_router_requests_total"),
                     30, what="the load under way")  # fmt: skip
            rounds = [scale_in_once(cluster, namespace, pods, router) for _ in range(SCALE_INS)]
        finally:
            stop.set()
            loader.join(120)
        assert [(m, d) for m, d, _, _ in rounds if m != d] == [], "the ReplicaSet removed another"
        assert [(m, n) for m, _, n, _ in rounds if n > 0] == [], "work reached a draining pod"
        assert max(t for *_, t in rounds) < 5.0, [round(t, 3) for *_, t in rounds]
        failed = [(s, round(lat, 3)) for s, lat in results if s != 200]
        drains = sorted(t for *_, t in rounds)
        print(
            f"{SCALE_INS} scale-ins at {rate:.0f} req/s open loop: {len(results)} requests, "
            f"{len(failed)} failed; mark -> router draining median {drains[len(drains) // 2]:.3f}"
            f" s, max {drains[-1]:.3f} s"
        )
        assert len(results) > 0 and not loader.is_alive()
        assert failed == [], f"{len(failed)} of {len(results)} requests failed: {failed[:10]}"
        assert replicas(cluster.apps, namespace, "s") == REPLICAS
    finally:
        stop.set()
        router.stop()
