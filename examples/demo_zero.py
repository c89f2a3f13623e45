"""`DEMO=scale-to-zero make demo`: scale to zero and back through kubeinfer-router.

What it shows, after demo.py has started the cluster and the operator:
1. examples/scale-to-zero.yaml applied (the model built here, its pods run for real, the idle
   period cut to 15 s): the operator deploys `sentiment-router` in front of the service;
2. the idle period passing and the autoscaler taking the last replica away (ScaledToZero),
   Ready staying True;
3. one request sent to the router while no replica exists: held, the router writing
   replicas 0 -> 1 itself, and the answer once the replica is Ready;
4. the autoscaler's decisions (ScaledToZero, AtZero, WokenByRouter) in `kubectl describe`.
"""

from __future__ import annotations

import json
import pathlib
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import yaml
from kubernetes import client

from kubeinfer_cluster.kubelet import plan
from tests.e2e import load, scenario

REPO = pathlib.Path(__file__).resolve().parents[1]
NAME = "sentiment"
IDLE_S = 15


def manifest(model_uri: str) -> str:
    doc = yaml.safe_load((REPO / "examples" / "scale-to-zero.yaml").read_text())
    spec = doc["spec"]
    spec["model"].update(name="mlp", storageUri=model_uri)
    spec["scaling"].update(
        scaleToZeroAfterSeconds=IDLE_S, stableWindowSeconds=6, scaleDownDelaySeconds=0
    )
    spec["podMetadata"] = {
        "labels": {plan.RUN_LABEL: "true"},
        "annotations": {plan.COLD_START_ANNOTATION: "3s"},
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
    step("Applying examples/scale-to-zero.yaml (router enabled, minReplicas 0)")
    print(f"as applied here: the model is built on this machine; the idle period is {IDLE_S} s")
    print(kubectl("apply", "-f", "-", stdin=manifest(scenario.model_uri(work))))

    def state() -> tuple[int, str, str]:
        try:
            dep = apps.read_namespaced_deployment(f"{NAME}-predictor", "default")
        except client.ApiException as exc:
            if exc.status == 404:  # the operator has not created it yet
                return -1, "-", ""
            raise
        obj = custom.get_namespaced_custom_object(
            "kubeinfer.io", "v1alpha1", "default", "inferenceservices", NAME
        )
        ready = scenario.condition(obj, "Ready")
        return int(dep.spec.replicas or 0), ready.get("status", "-"), ready.get("reason", "")

    def follow(until: Callable[[tuple[int, str, str]], bool], limit_s: float) -> None:
        started, shown = time.monotonic(), None
        while True:
            now = state()
            if now != shown:
                print(
                    f"{time.monotonic() - started:6.1f}  replicas {now[0]}  Ready {now[1]} "
                    f"({now[2]})",
                    flush=True,
                )
                shown = now
            if until(now):
                return
            if time.monotonic() - started > limit_s:
                raise SystemExit(f"gave up after {limit_s:.0f} s: {now}")
            time.sleep(0.5)

    def router_ip() -> str | None:
        return scenario.ready_pod_ip(core, "default", f"kubeinfer.io/router={NAME}")

    step("Waiting for the service and its router")
    follow(lambda s: s[0] == 1 and s[1] == "True" and router_ip() is not None, 180)
    ip = router_ip()
    print(kubectl("get", "deploy,pods", "-o", "wide"))
    step(f"No requests: the autoscaler scales to zero after {IDLE_S} s without demand")
    follow(lambda s: s[0] == 0 and s[2] == "ScaledToZero", IDLE_S + 90)

    step(f"One request to the router ({ip}:8080) while no replica exists")
    answer: dict[str, Any] = {}

    def send() -> None:
        started = time.monotonic()
        request = urllib.request.Request(
            f"http://{ip}:8080/v2/models/mlp/infer",
            data=load.mlp_request(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=150) as resp:
            body = json.loads(resp.read())
            answer.update(status=resp.status, outputs=[o["name"] for o in body["outputs"]])
        answer["seconds"] = time.monotonic() - started

    sender = threading.Thread(target=send)
    sender.start()
    follow(lambda s: s[0] == 1 and bool(answer), 150)
    sender.join()
    print(
        f"answered {answer.get('status')} after {answer.get('seconds', 0):.1f} s (held while the "
        "replica started). The operator's own replica writes (its Events) went 1 -> 0 only; "
        "the router wrote 0 -> 1:"
    )
    print(kubectl("get", "events", "--field-selector", f"involvedObject.name={NAME}"))
    step("kubectl describe kisvc sentiment (decisions: ScaledToZero, AtZero, WokenByRouter)")
    print(kubectl("describe", "kisvc", NAME))
