"""inventory: which Pods and EndpointSlice entries are routable, draining, or not there yet."""

from __future__ import annotations

from typing import Any

from kubeinfer_router import config, inventory

DISCOVERY = config.Discovery(mode=config.DiscoveryMode.PODS)


def pod(
    name: str,
    *,
    ip: str | None = "127.1.0.5",
    ready: bool = True,
    deleting: bool = False,
    annotations: dict[str, str] | None = None,
    phase: str = "Running",
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "annotations": annotations or {}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {
            "containers": [
                {
                    "name": "server",
                    "ports": ports
                    if ports is not None
                    else [
                        {"name": "http", "containerPort": 9000},
                        {"name": "grpc", "containerPort": 9001},
                        {"name": "metrics", "containerPort": 9002},
                    ],
                }
            ]
        },
        "status": {
            "phase": phase,
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_a_ready_pod_with_named_ports() -> None:
    assert inventory.from_pod(pod("a"), discovery=DISCOVERY) == inventory.EndpointSpec(
        key="a", host="127.1.0.5", port=9000, metrics_port=9002
    )


def test_unnamed_ports_fall_back_to_defaults_and_numbers() -> None:
    spec = inventory.from_pod(pod("a", ports=[]), discovery=DISCOVERY)
    assert spec is not None and (spec.port, spec.metrics_port) == (8000, 8002)
    numeric = config.Discovery(mode=config.DiscoveryMode.PODS, http_port="7000")
    spec = inventory.from_pod(pod("a", ports=[]), discovery=numeric)
    assert spec is not None and spec.port == 7000


def test_readiness_draining_and_missing_ip() -> None:
    assert inventory.from_pod(pod("a", ip=None), discovery=DISCOVERY) is None
    specs = inventory.from_pods(
        [
            pod("unready", ready=False),
            pod("deleting", deleting=True),
            pod("marked", annotations={inventory.DRAINING_ANNOTATION: "true"}),
            pod("done", phase="Succeeded"),
            pod("weighted", annotations={inventory.WEIGHT_ANNOTATION: "2.5"}),
            pod("badweight", annotations={inventory.WEIGHT_ANNOTATION: "x"}),
        ],
        discovery=DISCOVERY,
    )
    state = {s.key: (s.ready, s.draining, s.weight) for s in specs}
    assert state == {
        "unready": (False, False, 1.0),
        "deleting": (True, True, 1.0),
        "marked": (True, True, 1.0),
        "done": (False, False, 1.0),
        "weighted": (True, False, 2.5),
        "badweight": (True, False, 1.0),
    }


def test_endpoint_slices() -> None:
    slices = [
        {
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8000}, {"name": "metrics", "port": 8002}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": True},
                 "targetRef": {"kind": "Pod", "name": "p1"}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": False},
                 "targetRef": {"kind": "Pod", "name": "p2"}},
                {"addresses": ["10.0.0.3"],
                 "conditions": {"ready": False, "serving": True, "terminating": True},
                 "targetRef": {"kind": "Pod", "name": "p3"}},
                {"addresses": ["10.0.0.4"], "conditions": {}},
            ],
        },
        {"addressType": "FQDN", "endpoints": [{"addresses": ["x.example"]}]},
    ]  # fmt: skip
    specs = {s.key: s for s in inventory.from_slices(slices, discovery=DISCOVERY)}
    assert set(specs) == {"p1", "p2", "p3", "10.0.0.4:8000"}
    assert (specs["p1"].ready, specs["p1"].draining, specs["p1"].metrics_port) == (
        True,
        False,
        8002,
    )
    assert specs["p2"].ready is False
    assert (specs["p3"].ready, specs["p3"].draining) == (True, True)
    assert specs["10.0.0.4:8000"].ready is True  # absent conditions mean ready


def test_static_endpoints_follow_the_probe() -> None:
    endpoints = (
        config.StaticEndpoint(host="127.0.0.2", port=8000, metrics_port=8002),
        config.StaticEndpoint(host="::1", port=8000, draining=True, weight=2.0),
    )
    specs = inventory.from_static(endpoints, ready={"127.0.0.2:8000": True})
    assert [(s.key, s.ready, s.draining, s.weight) for s in specs] == [
        ("127.0.0.2:8000", True, False, 1.0),
        ("[::1]:8000", False, True, 2.0),
    ]
