"""`DEMO=canary make demo`: a canary behind kubeinfer-router, rolled back on its own metrics.

What it shows, after demo.py has started the cluster and the operator:
1. a service with the router on and a canary at 20 % of the traffic whose model loads and
   validates but fails at execution (every request it gets is the server's own 500);
2. open-loop load through the router, and each second what status.canary and router.yaml
   say (phase, weight, failed checks, the canary's error rate, its replicas);
3. the automatic rollback: weight 0, the canary Deployment at 0 replicas, CanaryRolledBack
   True with its figures, and the Events of each check; the stable model kept serving.
"""

from __future__ import annotations

import pathlib
import threading
import time
from collections.abc import Callable
from typing import Any

import yaml
from kubernetes import client

from tests.e2e import load, scenario

NAME = "fraud"
ROUTER_PORT = 8080
INTERVAL_S, FAILURE_LIMIT = 5, 2
RATE = 30.0  # requests per second through the router, open loop


def manifest(work: pathlib.Path) -> str:
    doc = yaml.safe_load(
        scenario.manifest(
            NAME,
            uri=scenario.model_uri(work),
            gpus=0,
            max_batch=4,
            device_ms=2,
            cold_start="1s",
            scaling={"minReplicas": 1, "maxReplicas": 1},
        )
    )
    doc["spec"]["router"] = {"enabled": True}
    doc["spec"]["canary"] = {
        "model": {"storageUri": scenario.broken_model(work / "canary" / "model.onnx")},
        "steps": [20, 50],
        "analysis": {
            "intervalSeconds": INTERVAL_S,
            "maxErrorRate": 0.05,
            "failureLimit": FAILURE_LIMIT,
            "minRequests": 10,
        },
    }
    return yaml.safe_dump(doc)


def run(
    *,
    kubectl: Callable[..., str],
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    custom: client.CustomObjectsApi,
    work: pathlib.Path,
    step: Callable[[str], None],
) -> None:
    step("Applying a service with the router and a canary at 20 % (its model fails at run time)")
    text = manifest(work)
    print(
        yaml.safe_dump({"spec": {k: yaml.safe_load(text)["spec"][k] for k in ("router", "canary")}})
    )
    print(kubectl("apply", "-f", "-", stdin=text))

    def obj() -> dict[str, Any]:
        found: dict[str, Any] = custom.get_namespaced_custom_object(
            scenario.GROUP, scenario.VERSION, "default", scenario.PLURAL, NAME
        )
        return found

    def ready_ip(selector: str) -> str | None:
        return scenario.ready_pod_ip(core, "default", selector)

    def wait(what: str, check: Callable[[], Any], limit_s: float = 180) -> Any:
        deadline = time.monotonic() + limit_s
        while not (found := check()):
            if time.monotonic() > deadline:
                raise SystemExit(f"gave up waiting for {what} after {limit_s:.0f} s")
            time.sleep(0.5)
        return found

    step("Waiting for the router, the stable pod and the canary pod")
    ip = wait("the router", lambda: ready_ip(f"kubeinfer.io/router={NAME}"))
    wait("the service Ready", lambda: scenario.condition(obj(), "Ready").get("status") == "True")
    wait("the canary pod", lambda: ready_ip(f"kubeinfer.io/canary={NAME}"))
    print(kubectl("get", "deploy,pods", "-o", "wide"))

    step(f"Open-loop load through the router ({ip}:{ROUTER_PORT}, {RATE:.0f} req/s)")
    print(f"a check every {INTERVAL_S} s; {FAILURE_LIMIT} failed checks roll the canary back")
    stop, result = threading.Event(), load.LoadResult()
    traffic = threading.Thread(
        target=load.run,
        args=(
            load.open_loop(
                lambda: [f"{ip}:{ROUTER_PORT}"],
                rate=lambda _t: 1e-9 if stop.is_set() else RATE,
                duration_s=600,
                deadline_s=10,
                result=result,
            ),
        ),
        daemon=True,
    )
    traffic.start()
    began, shown = time.monotonic(), ""
    try:
        while True:
            state = (obj().get("status") or {}).get("canary") or {}
            canary = apps.read_namespaced_deployment(f"{NAME}-canary", "default")
            line = (
                f"phase {state.get('phase', '-')}  weight {state.get('weight', '-')}  "
                f"failed checks {state.get('failures', 0)}  canary error rate "
                f"{state.get('errorRate', 0):.0%}  canary replicas {canary.spec.replicas}"
            )
            if line != shown:
                print(f"{time.monotonic() - began:6.1f}  {line}", flush=True)
                shown = line
            if state.get("phase") == "RolledBack" and canary.spec.replicas == 0:
                break
            if time.monotonic() - began > 120:
                raise SystemExit(f"no rollback after 120 s: {state}")
            time.sleep(0.5)
    finally:
        stop.set()
        traffic.join(timeout=30)
    print(f"load: {result.summary()}")
    cm = core.read_namespaced_config_map(f"{NAME}-router", "default")
    weights = {v["name"]: v["weight"] for v in yaml.safe_load(cm.data["router.yaml"])["variants"]}
    print(f"router.yaml weights now: {weights}")
    print(kubectl("get", "events", "--field-selector", f"involvedObject.name={NAME}"))
    step(f"kubectl describe kisvc {NAME} (CanaryRolledBack and status.canary)")
    print(kubectl("describe", "kisvc", NAME))
