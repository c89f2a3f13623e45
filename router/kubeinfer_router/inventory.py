"""Turn Pods, EndpointSlices or the static list into endpoint specs. Pure: plain dicts in.

Owns what "a routable pod" means for each source:
- Pods (the local cluster, where EndpointSlices cannot hold loopback pod IPs): a podIP, the
  Ready condition True, not Succeeded/Failed. A pod with a deletionTimestamp, or annotated
  `router.kubeinfer.io/draining: "true"` (the scale-in marks it), is draining: no new work,
  its in-flight requests finish.
- EndpointSlices (real clusters): `conditions.ready` (absent means ready); `terminating`
  with `serving` true is draining.
Ports are looked up by name (the runtime's `http` and `metrics` container ports) with a
number as fallback. `router.kubeinfer.io/weight` on a pod scales its capacity.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kubeinfer_router import config

DRAINING_ANNOTATION = "router.kubeinfer.io/draining"
WEIGHT_ANNOTATION = "router.kubeinfer.io/weight"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EndpointSpec:
    key: str  # the pod's name where known (a metric label), else HOST:PORT
    host: str
    port: int
    metrics_port: int | None
    ready: bool = True
    draining: bool = False
    weight: float = 1.0


def _port(named: Mapping[str, int], wanted: str, default: int) -> int:
    if wanted in named:
        return named[wanted]
    return int(wanted) if wanted.isdigit() else default


def from_pod(pod: Mapping[str, Any], *, discovery: config.Discovery) -> EndpointSpec | None:
    """The pod as an endpoint; None while it has no IP (not scheduled or not started)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    ip = status.get("podIP")
    if not ip:
        return None
    annotations = meta.get("annotations") or {}
    conditions = status.get("conditions") or []
    ready = status.get("phase") not in ("Succeeded", "Failed") and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
    )
    named: dict[str, int] = {}
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") and port.get("containerPort"):
                named.setdefault(port["name"], int(port["containerPort"]))
    try:
        weight = float(annotations.get(WEIGHT_ANNOTATION, 1.0))
    except ValueError:
        weight = 1.0
    return EndpointSpec(
        key=meta.get("name") or ip,
        host=ip,
        port=_port(named, discovery.http_port, discovery.default_http_port),
        metrics_port=_port(named, discovery.metrics_port, discovery.default_metrics_port),
        ready=ready,
        draining=bool(meta.get("deletionTimestamp"))
        or annotations.get(DRAINING_ANNOTATION) == "true",
        weight=weight if weight > 0 else 1.0,
    )


def from_pods(
    pods: Iterable[Mapping[str, Any]], *, discovery: config.Discovery
) -> list[EndpointSpec]:
    specs = (from_pod(p, discovery=discovery) for p in pods)
    return [s for s in specs if s is not None]


def from_slices(
    slices: Iterable[Mapping[str, Any]], *, discovery: config.Discovery
) -> list[EndpointSpec]:
    """Every address of every slice of one Service (IPv4 and IPv6 slices alike)."""
    specs: dict[str, EndpointSpec] = {}
    for item in slices:
        if item.get("addressType") not in ("IPv4", "IPv6"):
            continue
        named = {
            p["name"]: int(p["port"])
            for p in item.get("ports") or []
            if p.get("name") and p.get("port")
        }
        port = _port(named, discovery.http_port, discovery.default_http_port)
        metrics_port = _port(named, discovery.metrics_port, discovery.default_metrics_port)
        for endpoint in item.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            terminating = conditions.get("terminating") is True
            serving = conditions.get("serving", conditions.get("ready")) is not False
            ready = conditions.get("ready") is not False
            target = endpoint.get("targetRef") or {}
            for address in endpoint.get("addresses") or []:
                key = target.get("name") or f"{address}:{port}"
                specs[key] = EndpointSpec(
                    key=key,
                    host=address,
                    port=port,
                    metrics_port=metrics_port,
                    # A terminating pod that still serves finishes its work but gets no more.
                    ready=ready or (terminating and serving),
                    draining=terminating,
                )
    return list(specs.values())


def from_static(
    endpoints: Sequence[config.StaticEndpoint], *, ready: Mapping[str, bool]
) -> list[EndpointSpec]:
    """The static list; `ready` maps HOST:PORT to the last probe's answer (absent: not ready)."""
    specs = []
    for e in endpoints:
        key = static_key(e)
        specs.append(
            EndpointSpec(
                key=key,
                host=e.host,
                port=e.port,
                metrics_port=e.metrics_port,
                ready=ready.get(key, False),
                draining=e.draining,
                weight=e.weight,
            )
        )
    return specs


def static_key(e: config.StaticEndpoint) -> str:
    return f"[{e.host}]:{e.port}" if ":" in e.host else f"{e.host}:{e.port}"
