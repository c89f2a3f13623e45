"""The router against the local Kubernetes API: Pod discovery, the scale-subresource wake, and
scale from zero end to end (a held request, replicas 0 -> 1 written by the router, kwok's pod
on a loopback IP served by a real kubeinfer_onnx process bound to that IP, the flush)."""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from router_processes import (
    OnnxServer,
    build_repo,
    deployment,
    mlp_request,
    open_loop,
    replicas,
    start_onnx,
    start_router,
)

from kubeinfer_router import config, discovery, inventory, table, waking
from tests.conftest import ClusterHandle
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster


def test_the_wake_writes_zero_to_one_through_the_scale_subresource_and_nothing_else(
    cluster: ClusterHandle, namespace: str
) -> None:
    cluster.apps.create_namespaced_deployment(namespace, deployment("m", replicas=0))
    wake = waking.ScaleWake(api=cluster.api, namespace=namespace, deployments=["m"])
    assert wake.wake_sync() == ["m"]
    assert replicas(cluster.apps, namespace, "m") == 1
    managed = cluster.apps.read_namespaced_deployment("m", namespace).metadata.managed_fields
    ours = [f for f in managed if f.manager == waking.FIELD_MANAGER]
    assert len(ours) == 1 and ours[0].subresource == "scale"
    assert "f:replicas" in str(ours[0].fields_v1)
    # Above zero (the autoscaler's or anyone's count): the router leaves it alone.
    assert wake.wake_sync() == []
    cluster.apps.patch_namespaced_deployment_scale("m", namespace, {"spec": {"replicas": 3}})
    assert wake.wake_sync() == []
    assert replicas(cluster.apps, namespace, "m") == 3


async def test_pod_discovery_follows_ready_pods_and_draining_marks(
    cluster: ClusterHandle, namespace: str
) -> None:
    cfg = config.parse_document(
        {
            "discovery": {"mode": "pods", "namespace": namespace},
            "variants": [{"name": "stable", "selector": {"app": "d"}}],
        }
    )
    endpoints = table.Table(["stable"])
    synced = asyncio.Event()
    watch = discovery.KubeDiscovery(cfg=cfg, endpoints=endpoints, synced=synced, api=cluster.api)
    cluster.apps.create_namespaced_deployment(namespace, deployment("d", replicas=0))
    watch.start()
    try:
        async with asyncio.timeout(30):
            await synced.wait()
        assert endpoints.available == frozenset()
        cluster.apps.patch_namespaced_deployment_scale("d", namespace, {"spec": {"replicas": 2}})

        async def until(check: Any, what: str) -> None:
            async with asyncio.timeout(60):
                while not check():
                    await asyncio.sleep(0.05)

        await until(lambda: len(endpoints.routable["stable"]) == 2, "two ready pods")
        for ep in endpoints.routable["stable"]:
            assert ep.host.startswith("127.") and ep.port == 8000 and ep.metrics_port == 8002
        marked = endpoints.routable["stable"][0].key
        cluster.core.patch_namespaced_pod(
            marked,
            namespace,
            {"metadata": {"annotations": {inventory.DRAINING_ANNOTATION: "true"}}},
        )
        await until(lambda: endpoints.by_variant["stable"][marked].draining, "draining mark")
        assert [e.key for e in endpoints.routable["stable"]] != [marked]
        cluster.core.delete_namespaced_pod(marked, namespace)
        await until(lambda: marked not in endpoints.by_variant["stable"], "deleted pod gone")
    finally:
        watch.stop()


@pytest.fixture
def woken_server() -> Iterator[list[OnnxServer]]:
    servers: list[OnnxServer] = []
    yield servers
    for server in servers:
        server.stop()


async def test_scale_from_zero_on_the_cluster(
    cluster: ClusterHandle,
    namespace: str,
    tmp_path: pathlib.Path,
    woken_server: list[OnnxServer],
) -> None:
    cluster.apps.create_namespaced_deployment(
        namespace, deployment("z", replicas=0, cold_start="6s")
    )
    path = tmp_path / "router.yaml"
    path.write_text(
        f"discovery: {{mode: pods, namespace: {namespace}}}\n"
        "wake: {kind: kubernetes}\n"
        "holdTimeoutSeconds: 90\n"
        "variants: [{name: stable, selector: {app: z}, deployment: z}]\n"
    )
    router = await asyncio.to_thread(
        start_router,
        tmp_path / "router.log",
        "--config",
        str(path),
        env={"KUBECONFIG": str(cluster.kubeconfig)},
    )
    repo = build_repo(tmp_path, "mlp")
    try:
        sent = time.monotonic()
        load = asyncio.create_task(
            open_loop(router.url + "/v2/models/mlp/infer", rate=5, seconds=2, body=mlp_request(1))
        )

        def pod_ip() -> str | None:
            pods = cluster.core.list_namespaced_pod(namespace, label_selector="app=z").items
            return next((p.status.pod_ip for p in pods if p.status.pod_ip), None)

        # The router wrote 0 -> 1; kwok gives the pod a loopback IP at once and Ready after
        # the cold start; the "container" is a real server bound to that IP.
        ip = await asyncio.to_thread(wait_for, pod_ip, 60, "the woken pod's IP")
        woke_in = time.monotonic() - sent
        woken_server.append(
            await asyncio.to_thread(
                start_onnx, repo, tmp_path / "pod.log", address=ip, http_port=8000,
                metrics_port=8002,
            )
        )  # fmt: skip
        results = await load
        assert [status for status, _ in results] == [200] * 10
        assert replicas(cluster.apps, namespace, "z") == 1
        assert router.metric("kubeinfer_router_wake_calls_total", outcome="ok") == 1
        assert woke_in < 30
    finally:
        router.stop()
