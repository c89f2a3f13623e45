"""End to end: scale to zero through kubeinfer-router, on the local cluster with a real ONNX
server and the real router, both run by the local kubelet on pod IPs.

A service with router.enabled and minReplicas 0: the operator deploys <name>-router in front
of it; after scaleToZeroAfterSeconds without demand the autoscaler takes the last replica
away (ScaledToZero); a request sent to the router while no replica exists is held, the
router (field manager kubeinfer-router) writes replicas 0 -> 1, the request is answered
200 by the server that came up, and after another idle period the service is back at zero.
The router authenticates as its own ServiceAccount (the Role the operator made), not as the
test's admin. Every wait is on a condition; nothing sleeps a fixed time.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.conftest import ClusterHandle
from tests.e2e import load, scenario
from tests.operator_process import OperatorProcess, install
from tests.waiting import wait_for

NAME = "zero"
IDLE_S = 10
ROUTER_PORT = 8080
ROUTER_LABEL = "kubeinfer.io/router"


def manifest(uri: str) -> str:
    doc = yaml.safe_load(
        scenario.manifest(
            NAME,
            uri=uri,
            gpus=0,
            max_batch=4,
            device_ms=5,
            cold_start="1s",
            scaling={
                "minReplicas": 0,
                "maxReplicas": 1,
                "stableWindowSeconds": 6,
                "scaleDownDelaySeconds": 0,
                "scaleToZeroAfterSeconds": IDLE_S,
            },
        )
    )
    doc["spec"]["router"] = {"enabled": True, "maxQueued": 10, "holdTimeoutSeconds": 120}
    return yaml.safe_dump(doc)


def router_ip(cluster: ClusterHandle, namespace: str) -> str | None:
    return scenario.ready_pod_ip(cluster.core, namespace, f"{ROUTER_LABEL}={NAME}")


def serving_pods(cluster: ClusterHandle, namespace: str) -> int:
    pods = cluster.core.list_namespaced_pod(namespace, label_selector=f"{scenario.LABEL}={NAME}")
    return len(pods.items)


def router_metric(ip: str, name: str) -> float:
    with urllib.request.urlopen(f"http://{ip}:{ROUTER_PORT}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name)] in " {"
    )


def reasons(cluster: ClusterHandle, namespace: str) -> list[str]:
    status = scenario.get(cluster, namespace, NAME).get("status") or {}
    return [d["reason"] for d in (status.get("autoscaler") or {}).get("decisions", [])]


def operator_scales(cluster: ClusterHandle, namespace: str) -> list[str]:
    """The operator's own replica writes, from its Events: the autoscaler's (ScaledUp,
    ScaledDown) and the reconciler's (Scaled); each names "current -> desired"."""
    return [
        str(e.message)
        for e in cluster.core.list_namespaced_event(namespace).items
        if e.involved_object.name == NAME and e.reason in ("ScaledUp", "ScaledDown", "Scaled")
    ]


def describe(cluster: ClusterHandle, namespace: str) -> Any:
    obj = scenario.get(cluster, namespace, NAME)
    auto = (obj.get("status") or {}).get("autoscaler") or {}
    pods = [
        (p.metadata.name, p.status.phase, p.status.pod_ip)
        for p in cluster.core.list_namespaced_pod(namespace).items
    ]
    return auto.get("decisions", [])[-4:], auto.get("signals"), pods


def test_scale_to_zero_and_back_through_the_router(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str, tmp_path: pathlib.Path
) -> None:
    scenario.apply(cluster, namespace, manifest(scenario.model_uri(tmp_path)))
    ip = wait_for(lambda: router_ip(cluster, namespace), 120, "the router pod Ready")
    # The service starts with one replica (its model proves it loads), Ready through the router.
    wait_for(
        lambda: (
            scenario.condition(scenario.get(cluster, namespace, NAME), "Ready").get("status")
            == "True"
            and scenario.replicas(cluster, namespace, NAME) == 1
        ),
        120,
        "the service Ready with one replica",
    )
    # Idle: the autoscaler takes the last replica away after the idle period.
    try:
        wait_for(
            lambda: (
                scenario.replicas(cluster, namespace, NAME) == 0
                and serving_pods(cluster, namespace) == 0
            ),
            IDLE_S + 60,
            "the scale to zero and the last serving pod gone",
        )
    except AssertionError as exc:
        raise AssertionError((str(exc), describe(cluster, namespace))) from exc
    assert "ScaledToZero" in reasons(cluster, namespace)
    # At zero the service is still Ready: the router answers for it.
    wait_for(
        lambda: (
            scenario.condition(scenario.get(cluster, namespace, NAME), "Ready").get("reason")
            == "ScaledToZero"
        ),
        30,
        "Ready with reason ScaledToZero",
    )

    # A request at zero: held by the router, which wakes the service; answered 200.
    answer: dict[str, Any] = {}

    def send() -> None:
        started = time.monotonic()
        request = urllib.request.Request(
            f"http://{ip}:{ROUTER_PORT}/v2/models/mlp/infer",
            data=load.mlp_request(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=150) as resp:
                answer.update(status=resp.status, body=json.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            answer.update(status=exc.code, body=exc.read().decode(errors="replace"))
        answer["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=send)
    thread.start()
    wait_for(
        lambda: router_metric(ip, "kubeinfer_router_held_requests") >= 1 or answer,
        30,
        "the request held at the router",
    )
    assert not answer, f"answered before any replica existed: {answer}"
    wait_for(lambda: scenario.replicas(cluster, namespace, NAME) == 1, 30, "the wake 0 -> 1")
    thread.join(timeout=150)
    assert answer.get("status") == 200, answer
    assert [o["name"] for o in answer["body"]["outputs"]], answer
    # The router wrote the wake: the operator's writes (each announced by an Event) took
    # replicas 1 -> 0 and never 0 -> 1, and the router's wake hook ran without error. (On
    # this API server a write through /scale to a Deployment made by server-side apply leaves
    # no managedFields entry owning spec.replicas, the autoscaler's 1 -> 0 neither, so the
    # writer is read from the Events rather than from managedFields.)
    scales = operator_scales(cluster, namespace)
    assert any("1 -> 0" in m for m in scales), scales
    assert not any("0 -> 1" in m for m in scales), scales
    assert router_metric(ip, 'kubeinfer_router_wake_calls_total{outcome="ok"}') >= 1
    wait_for(
        lambda: "WokenByRouter" in reasons(cluster, namespace),
        30,
        "the autoscaler seeing the wake",
    )

    # And back to zero after another idle period.
    wait_for(
        lambda: scenario.replicas(cluster, namespace, NAME) == 0,
        IDLE_S + 60,
        "the scale back to zero",
    )
    seconds, history = answer["seconds"], reasons(cluster, namespace)
    print(f"\nheld request answered in {seconds:.1f} s; decisions {history}")


def test_min_replicas_zero_without_the_router_is_refused_by_the_api_server(
    cluster: ClusterHandle, namespace: str, tmp_path: pathlib.Path
) -> None:
    install(cluster.tools.kubectl, cluster.env)
    doc = yaml.safe_load(manifest("file:///nowhere/model.onnx"))
    del doc["spec"]["router"]
    proc = subprocess.run(
        [str(cluster.tools.kubectl), "apply", "-n", namespace, "-f", "-"],
        input=yaml.safe_dump(doc),
        text=True,
        env=cluster.env,
        capture_output=True,
    )
    assert proc.returncode != 0
    assert "scaling.minReplicas 0 needs router.enabled" in proc.stderr, proc.stderr


def test_switching_the_router_on_and_off_creates_and_deletes_its_children(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str
) -> None:
    """The reconciler's side of spec.router: children with owner references, the Service's
    selector moved to the router pods and back, everything of the router's deleted when it is
    switched off. Pods here are kwok's (no run label): nothing needs to serve."""
    name = "toggle"
    doc = {
        "apiVersion": f"{scenario.GROUP}/{scenario.VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "m", "format": "onnx", "storageUri": "https://h.example/m.onnx"},
            "router": {"enabled": True},
        },
    }
    scenario.apply(cluster, namespace, yaml.safe_dump(doc))
    router = f"{name}-router"
    rbac = client.RbacAuthorizationV1Api(cluster.core.api_client)

    def children() -> dict[str, Any]:
        found: dict[str, Any] = {}
        for kind, read in (
            ("Deployment", cluster.apps.read_namespaced_deployment),
            ("ConfigMap", cluster.core.read_namespaced_config_map),
            ("ServiceAccount", cluster.core.read_namespaced_service_account),
            ("Role", rbac.read_namespaced_role),
            ("RoleBinding", rbac.read_namespaced_role_binding),
        ):
            try:
                found[kind] = read(router, namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        return found

    def selector() -> dict[str, str]:
        svc = cluster.core.read_namespaced_service(f"{name}-predictor", namespace)
        return dict(svc.spec.selector or {})

    made = wait_for(lambda: len(children()) == 5 and children(), 60, "the router's children")
    owner_uid = scenario.get(cluster, namespace, name)["metadata"]["uid"]
    for kind, obj in made.items():
        assert [r.uid for r in obj.metadata.owner_references or []] == [owner_uid], kind
    wait_for(lambda: selector() == {ROUTER_LABEL: name}, 30, "the Service on the router pods")

    cluster.custom.patch_namespaced_custom_object(
        scenario.GROUP,
        scenario.VERSION,
        namespace,
        scenario.PLURAL,
        name,
        {"spec": {"router": {"enabled": False}}},
    )
    wait_for(lambda: not children(), 60, "the router's children deleted")
    wait_for(
        lambda: selector() == {scenario.LABEL: name}, 30, "the Service back on the serving pods"
    )
