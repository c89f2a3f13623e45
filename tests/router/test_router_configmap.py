"""The router's own ConfigMap, watched through the local API server: a new weight reaches the
router through the watch at once while its config file never changes (a real kubelet rewrites
a mounted ConfigMap a minute late), a canary variant added that way gets its pods discovered,
a bad document is refused with the previous one kept, and
the router does it with no more than the Role the operator renders (configmaps restricted to
its own name by resourceNames; the list and watch pass it through their field selector)."""

from __future__ import annotations

import copy
import pathlib
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from router_processes import (
    OnnxServer,
    build_repo,
    deployment,
    mlp_request,
    start_onnx,
    start_router,
)

from kubeinfer.core import builders, router
from tests.conftest import ClusterHandle
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster

NAME = "w"


def owner(namespace: str) -> builders.Owner:
    return builders.Owner(name=NAME, namespace=namespace, uid="u")


def unowned(manifest: dict[str, Any]) -> dict[str, Any]:
    # No InferenceService owns them here: the garbage collector would delete them.
    manifest = copy.deepcopy(manifest)
    del manifest["metadata"]["ownerReferences"]
    return manifest


def grant_router_identity(
    cluster: ClusterHandle, namespace: str, path: pathlib.Path, *, configmaps: bool = True
) -> Any:
    """The ServiceAccount, Role and RoleBinding the operator renders for a router (without
    the ConfigMap rule when `configmaps` is false), and a kubeconfig (and an ApiClient) that
    authenticates as that ServiceAccount."""
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    me = owner(namespace)
    role = unowned(router.build_role(me))
    if not configmaps:
        role["rules"] = [r for r in role["rules"] if r["resources"] != ["configmaps"]]
    cluster.core.create_namespaced_service_account(
        namespace, unowned(router.build_service_account(me))
    )
    rbac.create_namespaced_role(namespace, role)
    rbac.create_namespaced_role_binding(namespace, unowned(router.build_role_binding(me)))
    token = cluster.core.create_namespaced_service_account_token(
        router.name(me),
        namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
    ).status.token
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    server = next(c for c in admin["clusters"] if c["name"] == context["context"]["cluster"])
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "sa",
                "clusters": [{"name": "c", "cluster": server["cluster"]}],
                "users": [{"name": "sa", "user": {"token": token}}],
                "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
            }
        )
    )
    return config.new_client_from_config(config_file=str(path))


def config_map(namespace: str, document: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": router.name(owner(namespace))},
        "data": {router.CONFIG_FILE: document},
    }


def router_yaml(namespace: str, stable: int, canary: int | None = None) -> str:
    """A two-variant router.yaml (stable only without a canary weight), pods discovery."""
    variants = [{"name": "stable", "weight": stable, "selector": {"app": "ws"}}]
    if canary is not None:
        variants.append({"name": "canary", "weight": canary, "selector": {"app": "wc"}})
    return yaml.safe_dump(
        {"discovery": {"mode": "pods", "namespace": namespace}, "variants": variants}
    )


def forbidden(call: Any) -> bool:
    try:
        call()
    except ApiException as exc:
        return exc.status == 403
    return False


def test_the_rendered_role_allows_its_own_configmap_by_name_and_no_other(
    cluster: ClusterHandle, namespace: str, tmp_path: pathlib.Path
) -> None:
    """RBAC with resourceNames and a list/watch: allowed when the field selector names that
    one object (the API server turns metadata.name=X into the request's name), refused for
    the collection or any other name."""
    sa = client.CoreV1Api(grant_router_identity(cluster, namespace, tmp_path / "sa.kubeconfig"))
    mine = router.name(owner(namespace))
    cluster.core.create_namespaced_config_map(namespace, config_map(namespace, "variants: []\n"))
    cluster.core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "other"}, "data": {"k": "v"}}
    )
    # The RoleBinding reaches the authorizer's cache within moments of its creation.
    listed = wait_for(
        lambda: (
            not forbidden(
                lambda: sa.list_namespaced_config_map(
                    namespace, field_selector=f"metadata.name={mine}"
                )
            )
        ),
        30,
        "the RoleBinding in effect",
        every=0.1,
    )
    assert listed
    items = sa.list_namespaced_config_map(namespace, field_selector=f"metadata.name={mine}").items
    assert [i.metadata.name for i in items] == [mine]
    assert sa.read_namespaced_config_map(mine, namespace).data == {
        router.CONFIG_FILE: "variants: []\n"
    }
    events = watch.Watch().stream(
        sa.list_namespaced_config_map,
        namespace,
        field_selector=f"metadata.name={mine}",
        timeout_seconds=5,
    )
    first = next(events)
    assert (first["type"], first["object"].metadata.name) == ("ADDED", mine)
    events.close()
    assert forbidden(lambda: sa.list_namespaced_config_map(namespace))
    assert forbidden(
        lambda: sa.list_namespaced_config_map(namespace, field_selector="metadata.name=other")
    )
    assert forbidden(lambda: sa.read_namespaced_config_map("other", namespace))
    assert forbidden(lambda: sa.patch_namespaced_config_map(mine, namespace, {"data": {"x": "y"}}))


@pytest.fixture
def servers() -> Iterator[list[OnnxServer]]:
    started: list[OnnxServer] = []
    yield started
    for server in started:
        server.stop()


def post(url: str, body: bytes) -> int:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


def test_a_configmap_change_reaches_the_router_through_the_watch_with_the_file_unchanged(
    cluster: ClusterHandle, namespace: str, tmp_path: pathlib.Path, servers: list[OnnxServer]
) -> None:
    kubeconfig = tmp_path / "sa.kubeconfig"
    grant_router_identity(cluster, namespace, kubeconfig)
    mine = router.name(owner(namespace))
    # A service without a canary yet: the canary variant arrives with the first step, as
    # when spec.canary is added to a running service.
    started_on = router_yaml(namespace, 100)
    cluster.core.create_namespaced_config_map(namespace, config_map(namespace, started_on))
    repo = build_repo(tmp_path, "mlp")
    for app in ("ws", "wc"):
        cluster.apps.create_namespaced_deployment(namespace, deployment(app, replicas=1))

    def pod_ip(app: str) -> str | None:
        pods = cluster.core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
        return next((p.status.pod_ip for p in pods if p.status.pod_ip), None)

    for app in ("ws", "wc"):
        ip = wait_for(lambda app=app: pod_ip(app), 60, f"{app}'s pod IP", every=0.1)
        servers.append(
            start_onnx(repo, tmp_path / f"{app}.log", address=ip, http_port=8000, metrics_port=8002)
        )
    # The file the router starts on: written once, never again (as a kubelet that has not
    # refreshed the mount yet).
    path = tmp_path / "router.yaml"
    path.write_text(started_on)
    mtime = path.stat().st_mtime_ns
    proc = start_router(
        tmp_path / "router.log",
        f"--config={path}",
        f"--configmap={namespace}/{mine}",
        env={"KUBECONFIG": str(kubeconfig)},
    )
    try:
        wait_for(
            lambda: proc.endpoints()["available"] == ["stable"],
            60,
            "the stable pod Ready in the router",
            every=0.05,
        )
        assert proc.endpoints()["weights"] == {"stable": 100}
        url = proc.url + "/v2/models/mlp/infer"

        def split(requests: int) -> dict[str, float]:
            before = {
                v: proc.metric("kubeinfer_router_requests_total", variant=v)
                for v in ("stable", "canary")
            }
            assert [post(url, mlp_request(1)) for _ in range(requests)] == [200] * requests
            return {
                v: proc.metric("kubeinfer_router_requests_total", variant=v) - before[v]
                for v in before
            }

        assert split(10) == {"stable": 10, "canary": 0}  # no canary variant yet

        # A canary step: written to the API only (the file is never rewritten, checked below),
        # so the router can only have it from its watch. How fast is a benchmark's question.
        cluster.core.patch_namespaced_config_map(
            mine, namespace, {"data": {router.CONFIG_FILE: router_yaml(namespace, 50, 50)}}
        )
        wait_for(
            lambda: proc.endpoints()["weights"] == {"stable": 50, "canary": 50},
            10,
            "the new weights through the watch",
            every=0.02,
        )
        # The new variant's pods are found by a watch of their own, started by that change.
        wait_for(
            lambda: proc.endpoints()["available"] == ["canary", "stable"],
            30,
            "the canary's pod Ready in the router",
            every=0.05,
        )
        # Smooth weighted round-robin: 50/50 is exactly every other request.
        assert split(20) == {"stable": 10, "canary": 10}

        # A bad document: logged, and the router keeps what it runs on.
        cluster.core.patch_namespaced_config_map(
            mine, namespace, {"data": {router.CONFIG_FILE: "variants: [{name: stable\n"}}
        )
        wait_for(
            lambda: "keeping the previous configuration" in proc.log(),
            10,
            "the bad document refused",
            every=0.05,
        )
        assert proc.endpoints()["weights"] == {"stable": 50, "canary": 50}

        # Promotion: all traffic to the canary.
        cluster.core.patch_namespaced_config_map(
            mine, namespace, {"data": {router.CONFIG_FILE: router_yaml(namespace, 0, 100)}}
        )
        wait_for(
            lambda: proc.endpoints()["weights"] == {"stable": 0, "canary": 100},
            10,
            "promotion through the watch",
            every=0.02,
        )
        assert split(10) == {"stable": 0, "canary": 10}
        # All of it came through the API: the file is as it was written.
        assert path.stat().st_mtime_ns == mtime and path.read_text() == started_on
        log = proc.log()
        assert log.count(f"config from configmap {namespace}/{mine} applied") == 2, log
        assert "forbidden" not in log.lower() and f"watch configmap/{mine} failed" not in log, log
    finally:
        proc.stop()


def test_the_watch_recovers_from_errors_and_the_file_serves_meanwhile(
    cluster: ClusterHandle, namespace: str, tmp_path: pathlib.Path
) -> None:
    """A watch refused (here: a Role without the ConfigMap rule, as before an upgrade applies
    the new one) lists again with a back-off; meanwhile the mounted file is the live source;
    once allowed, the watch delivers the ConfigMap's newer document."""
    kubeconfig = tmp_path / "sa.kubeconfig"
    grant_router_identity(cluster, namespace, kubeconfig, configmaps=False)
    mine = router.name(owner(namespace))
    path = tmp_path / "router.yaml"
    path.write_text(router_yaml(namespace, 90, 10))
    cluster.core.create_namespaced_config_map(
        namespace, config_map(namespace, router_yaml(namespace, 90, 10))
    )
    proc = start_router(
        tmp_path / "router.log",
        f"--config={path}",
        f"--configmap={namespace}/{mine}",
        env={"KUBECONFIG": str(kubeconfig)},
    )
    try:
        refused = f"watch configmap/{mine} failed"
        wait_for(lambda: refused in proc.log(), 30, "the watch refused", every=0.05)
        # The watch is down: a changed file applies (the kubelet's copy is all there is).
        path.write_text(router_yaml(namespace, 80, 20))
        wait_for(
            lambda: proc.endpoints()["weights"] == {"stable": 80, "canary": 20},
            10,
            "the file applied while the watch is down",
            every=0.05,
        )
        cluster.core.patch_namespaced_config_map(
            mine, namespace, {"data": {router.CONFIG_FILE: router_yaml(namespace, 70, 30)}}
        )
        client.RbacAuthorizationV1Api(cluster.api).replace_namespaced_role(
            mine, namespace, unowned(router.build_role(owner(namespace)))
        )
        # Allowed now: the next list (within the 5 s back-off) brings the newer document.
        wait_for(
            lambda: proc.endpoints()["weights"] == {"stable": 70, "canary": 30},
            30,
            "the ConfigMap's document once the watch is allowed",
            every=0.05,
        )
        assert f"config from configmap {namespace}/{mine} applied" in proc.log()
    finally:
        proc.stop()
