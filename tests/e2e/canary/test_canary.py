"""End to end: a canary behind kubeinfer-router, on the local cluster with real ONNX servers and
the real router, both run by the local kubelet on pod IPs, under open-loop load.

A canary whose model fails at execution (its Reshape cannot take a 64-feature row: every
request is the server's own 500, after validation) is rolled back on the router's per-variant
metrics: status.canary RolledBack with weight 0, the CanaryRolledBack condition True with
reason ErrorRate, router.yaml's canary weight 0 and the canary Deployment at 0 replicas. A
healthy canary (the same MLP from another artifact, version 2) is promoted through its steps,
and so is one on another runtime (the same artifact on real Triton beside the ONNX server:
canary.runtime, its own config.pbtxt).
Every wait is on a condition; nothing sleeps a fixed time.
"""

from __future__ import annotations

import contextlib
import pathlib
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import yaml
from kubernetes import client
from prometheus_client import parser

from tests.conftest import ClusterHandle
from tests.e2e import load, scenario
from tests.operator_process import OperatorProcess
from tests.waiting import wait_for

ROUTER_PORT = 8080
ROUTER_LABEL = "kubeinfer.io/router"
INTERVAL_S = 5
RATE = 30.0  # requests per second, open loop


def _mkdir(path: pathlib.Path) -> pathlib.Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def manifest(name: str, stable_uri: str, canary: dict[str, Any], *, routers: int = 1) -> str:
    doc = yaml.safe_load(
        scenario.manifest(
            name,
            uri=stable_uri,
            gpus=0,
            max_batch=4,
            device_ms=2,
            cold_start="1s",
            scaling={"minReplicas": 1, "maxReplicas": 1},
        )
    )
    doc["spec"]["router"] = {"enabled": True, "replicas": routers}
    doc["spec"]["canary"] = canary
    return yaml.safe_dump(doc)


def router_ip(cluster: ClusterHandle, namespace: str, name: str) -> str | None:
    return scenario.ready_pod_ip(cluster.core, namespace, f"{ROUTER_LABEL}={name}")


def canary_status(cluster: ClusterHandle, namespace: str, name: str) -> dict[str, Any]:
    return dict((scenario.get(cluster, namespace, name).get("status") or {}).get("canary") or {})


def canary_ready(cluster: ClusterHandle, namespace: str, name: str) -> bool:
    dep = cluster.apps.read_namespaced_deployment(f"{name}-canary", namespace)
    return int(dep.status.ready_replicas or 0) >= 1


def router_weights(cluster: ClusterHandle, namespace: str, name: str) -> dict[str, int]:
    cm = cluster.core.read_namespaced_config_map(f"{name}-router", namespace)
    doc = yaml.safe_load(cm.data["router.yaml"])
    return {v["name"]: int(v["weight"]) for v in doc["variants"]}


def routed(ip: str) -> dict[str, float]:
    """Answers per variant so far, from the router's own counter."""
    with urllib.request.urlopen(f"http://{ip}:{ROUTER_PORT}/metrics", timeout=2) as resp:
        families = parser.text_string_to_metric_families(resp.read().decode())
        out: dict[str, float] = {}
        for family in families:
            if family.name == "kubeinfer_router_requests":
                for sample in family.samples:
                    if sample.name == "kubeinfer_router_requests_total":
                        variant = sample.labels["variant"]
                        out[variant] = out.get(variant, 0.0) + sample.value
        return out


def only_to(ip: str, variant: str, count: int = 10) -> bool:
    """Send ``count`` requests through the router; True when every one went to ``variant``
    (whatever the answer: the failing canary's are 500s)."""
    before = routed(ip)
    for _ in range(count):
        request = urllib.request.Request(
            f"http://{ip}:{ROUTER_PORT}/v2/models/mlp/infer",
            data=load.mlp_request(),
            headers={"Content-Type": "application/json"},
        )
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(request, timeout=10).close()
    after = routed(ip)
    return after.get(variant, 0.0) - before.get(variant, 0.0) == count


def events(cluster: ClusterHandle, namespace: str, name: str) -> list[tuple[str, str]]:
    return [
        (str(e.reason), str(e.message))
        for e in cluster.core.list_namespaced_event(namespace).items
        if e.involved_object.name == name and str(e.reason).startswith("Canary")
    ]


class Load:
    """Open-loop load on the router in a thread, until stopped."""

    def __init__(self, ip: str) -> None:
        self.stop = threading.Event()
        self.result = load.LoadResult()
        self._thread = threading.Thread(
            target=load.run,
            args=(
                load.open_loop(
                    lambda: [f"{ip}:{ROUTER_PORT}"],
                    # Once stopped, the next gap is enormous: the generator ends at once.
                    rate=lambda _t: 1e-9 if self.stop.is_set() else RATE,
                    duration_s=600,
                    deadline_s=10,
                    result=self.result,
                ),
            ),
            daemon=True,
        )

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self._thread.join(timeout=30)


def start(
    cluster: ClusterHandle,
    namespace: str,
    name: str,
    tmp_path: pathlib.Path,
    canary: Any,
    *,
    canary_start_s: float = 120,
    routers: int = 1,
) -> str:
    uri = scenario.model_uri(tmp_path)
    scenario.apply(cluster, namespace, manifest(name, uri, canary, routers=routers))
    ip = wait_for(lambda: router_ip(cluster, namespace, name), 120, "the router pod Ready")
    wait_for(
        lambda: (
            scenario.condition(scenario.get(cluster, namespace, name), "Ready").get("status")
            == "True"
        ),
        120,
        "the service Ready",
    )
    wait_for(lambda: canary_ready(cluster, namespace, name), canary_start_s, "the canary pod Ready")
    return str(ip)


def test_a_failing_canary_is_rolled_back(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str, tmp_path: pathlib.Path
) -> None:
    name, failure_limit = "canary-bad", 2
    canary = {
        "model": {"storageUri": scenario.broken_model(tmp_path / "canary" / "model.onnx")},
        "steps": [20, 50],
        "analysis": {
            "intervalSeconds": INTERVAL_S,
            "maxErrorRate": 0.05,
            "failureLimit": failure_limit,
            "minRequests": 10,
        },
    }
    ip = start(cluster, namespace, name, tmp_path, canary)
    assert router_weights(cluster, namespace, name) == {"stable": 80, "canary": 20}
    with Load(ip) as traffic:
        began = time.monotonic()
        try:
            rolled = wait_for(
                lambda: canary_status(cluster, namespace, name).get("phase") == "RolledBack",
                # The first window may be partial (the canary's traffic began inside it).
                INTERVAL_S * (failure_limit + 1) + 15,
                "the canary rolled back",
            )
        except AssertionError as exc:
            raise AssertionError(
                (str(exc), canary_status(cluster, namespace, name), traffic.result.summary())
            ) from exc
        took = time.monotonic() - began
    assert rolled
    state = canary_status(cluster, namespace, name)
    assert state["weight"] == 0 and state["reason"] == "ErrorRate", state
    assert state["failures"] == failure_limit and state["errorRate"] > 0.05, state
    cond = wait_for(
        lambda: (
            scenario.condition(scenario.get(cluster, namespace, name), "CanaryRolledBack")
            if scenario.condition(scenario.get(cluster, namespace, name), "CanaryRolledBack").get(
                "status"
            )
            == "True"
            else None
        ),
        30,
        "the CanaryRolledBack condition",
    )
    assert cond["reason"] == "ErrorRate" and "error rate" in cond["message"], cond
    wait_for(
        lambda: router_weights(cluster, namespace, name) == {"stable": 100, "canary": 0},
        30,
        "router.yaml with the canary at weight 0",
    )
    wait_for(
        lambda: (
            cluster.apps.read_namespaced_deployment(f"{name}-canary", namespace).spec.replicas == 0
        ),
        30,
        "the canary scaled to 0",
    )
    # The router itself applied it (its ConfigMap watch): nothing goes to the canary.
    wait_for(lambda: only_to(ip, "stable"), 60, "the router sending everything to stable")
    reasons = [r for r, _ in events(cluster, namespace, name)]
    assert "CanaryRolledBack" in reasons and "CanaryCheckFailed" in reasons, reasons
    print(f"\nrolled back {took:.1f} s into the load; {traffic.result.summary()}; {state}")

    # The user drops the canary: its Deployment, its variant and status.canary go.
    cluster.custom.patch_namespaced_custom_object(
        scenario.GROUP,
        scenario.VERSION,
        namespace,
        scenario.PLURAL,
        name,
        {"spec": {"canary": None}},
    )
    wait_for(
        lambda: (
            not canary_status(cluster, namespace, name)
            and router_weights(cluster, namespace, name) == {"stable": 100}
            and not scenario.condition(scenario.get(cluster, namespace, name), "CanaryRolledBack")
            and not cluster.apps.list_namespaced_deployment(
                namespace, field_selector=f"metadata.name={name}-canary"
            ).items
        ),
        30,
        "the canary, its variant, its status and its condition gone",
    )


def test_a_healthy_canary_is_promoted_through_its_steps(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str, tmp_path: pathlib.Path
) -> None:
    name = "canary-good"
    canary = {
        # The same MLP from another artifact: a new version that behaves.
        "model": {"storageUri": scenario.model_uri(_mkdir(tmp_path / "canary")), "version": 2},
        "steps": [20, 50],
        # A busy 2-core host makes latency noisy; this test is about the steps.
        "analysis": {"intervalSeconds": INTERVAL_S, "maxP99Ratio": 20, "minRequests": 10},
    }
    # Two routers: the load goes through one, the analysis adds both routers' windows.
    ip = start(cluster, namespace, name, tmp_path, canary, routers=2)
    wait_for(
        lambda: (
            cluster.apps.read_namespaced_deployment(
                f"{name}-router", namespace
            ).status.ready_replicas
            == 2
        ),
        120,
        "both router pods Ready",
    )
    pdb = client.PolicyV1Api(cluster.api).read_namespaced_pod_disruption_budget(
        f"{name}-router", namespace
    )
    assert pdb.spec.max_unavailable == 1
    seen_weights: set[int] = set()

    def promoted() -> bool:
        state = canary_status(cluster, namespace, name)
        seen_weights.add(int(state.get("weight", -1)))
        return state.get("phase") == "Promoted"

    with Load(ip) as traffic:
        try:
            wait_for(promoted, INTERVAL_S * 6 + 30, "the canary promoted")
        except AssertionError as exc:
            raise AssertionError(
                (str(exc), canary_status(cluster, namespace, name), traffic.result.summary())
            ) from exc
    assert traffic.result.failed == 0, traffic.result.errors[:5]
    assert {50, 100} <= seen_weights, seen_weights
    wait_for(
        lambda: router_weights(cluster, namespace, name) == {"stable": 0, "canary": 100},
        30,
        "router.yaml with all traffic to the canary",
    )
    wait_for(lambda: only_to(ip, "canary"), 60, "the router sending everything to the canary")
    reasons = [r for r, _ in events(cluster, namespace, name)]
    assert "CanaryStep" in reasons and "CanaryPromoted" in reasons, reasons
    cond = scenario.condition(scenario.get(cluster, namespace, name), "CanaryRolledBack")
    assert cond.get("status") == "False", cond


def test_a_canary_on_triton_is_promoted(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str, tmp_path: pathlib.Path
) -> None:
    """canary.runtime: the stable set's artifact on real Triton (2.51, ``make triton``), from
    the canary's own config.pbtxt, beside the ONNX server; the router splits one request
    stream between the two servers and the canary is promoted with no failed request."""
    name = "canary-triton"
    canary = {
        # The stable set's own artifact (start() serves the same file): only the runtime
        # differs.
        "model": {"storageUri": scenario.model_uri(tmp_path)},
        "runtime": "triton",
        "steps": [50],
        "analysis": {"intervalSeconds": INTERVAL_S, "maxP99Ratio": 50, "minRequests": 10},
    }
    # Triton starts in tens of seconds on a busy host, not in one or two.
    ip = start(cluster, namespace, name, tmp_path, canary, canary_start_s=240)
    pod = cluster.apps.read_namespaced_deployment(f"{name}-canary", namespace).spec.template
    assert pod.spec.containers[0].command == ["tritonserver"]
    [volume] = [v for v in pod.spec.volumes if v.name == "model-config"]
    assert [i.path for i in volume.downward_api.items] == ["config.pbtxt"]
    resolved = scenario.condition(scenario.get(cluster, namespace, name), "RuntimeResolved")
    assert resolved["message"].endswith("(the canary by triton)."), resolved
    with Load(ip) as traffic:
        try:
            wait_for(
                lambda: canary_status(cluster, namespace, name).get("phase") == "Promoted",
                INTERVAL_S * 4 + 30,
                "the canary on Triton promoted",
            )
        except AssertionError as exc:
            raise AssertionError(
                (str(exc), canary_status(cluster, namespace, name), traffic.result.summary())
            ) from exc
    assert traffic.result.failed == 0, traffic.result.errors[:5]
    promoted = [m for r, m in events(cluster, namespace, name) if r == "CanaryPromoted"]
    assert promoted and "canary.runtime (triton) into spec.runtime" in promoted[0], promoted
    wait_for(lambda: only_to(ip, "canary"), 60, "the router sending everything to Triton")
