"""The router's configuration: one schema for the file the operator renders and for the flags.

Owns the field names (camelCase, as they will sit in a ConfigMap), their defaults and their
validation. `parse_document` turns a mapping (read from JSON or YAML by the caller, with flag
overrides already merged in) into a frozen `RouterConfig`, or raises ConfigError naming the
field. No I/O here: reading the file is `cli`'s job.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any


class ConfigError(ValueError):
    """The configuration is invalid; the message names the field."""


class Policy(enum.StrEnum):
    # Power of two choices over (in-flight + queued + 1) / capacity: the router's default.
    LEAST_WAIT = "least-wait"
    # Power of two choices over the router's own in-flight count only (Knative's activator).
    INFLIGHT_P2C = "inflight-p2c"
    # A uniform random pick (what a Service through kube-proxy does); a baseline.
    RANDOM = "random"


class DiscoveryMode(enum.StrEnum):
    STATIC = "static"
    PODS = "pods"
    ENDPOINT_SLICES = "endpointslices"


class WakeKind(enum.StrEnum):
    NONE = "none"
    KUBERNETES = "kubernetes"  # patch the Deployment's scale subresource 0 -> 1
    WEBHOOK = "webhook"  # POST to a URL (benchmarks, or any other scaler)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StaticEndpoint:
    host: str
    port: int
    metrics_port: int | None = None  # None: no queue scrape, in-flight counts only
    weight: float = 1.0
    draining: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class Variant:
    name: str
    weight: int = 100
    selector: Mapping[str, str] = dataclasses.field(default_factory=dict)  # pods mode
    service: str | None = None  # endpointslices mode: the Service whose slices to watch
    deployment: str | None = None  # the wake hook's scale target
    endpoints: tuple[StaticEndpoint, ...] = ()  # static mode
    # This variant's queue-depth metric, when its runtime names it otherwise (a canary on
    # another runtime); None: the router's queueMetric.
    queue_metric: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Discovery:
    mode: DiscoveryMode = DiscoveryMode.STATIC
    namespace: str = "default"
    # Container port names (pods mode) or EndpointSlice port names; numbers when unnamed.
    http_port: str = "http"
    metrics_port: str = "metrics"
    default_http_port: int = 8000
    default_metrics_port: int = 8002
    # Static mode: probe /v2/health/ready to decide readiness (off: always Ready).
    probe: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class Wake:
    kind: WakeKind = WakeKind.NONE
    url: str | None = None
    namespace: str | None = None  # default: the discovery namespace


@dataclasses.dataclass(frozen=True, kw_only=True)
class RouterConfig:
    listen_host: str = "0.0.0.0"
    listen_port: int = 8080
    policy: Policy = Policy.LEAST_WAIT
    discovery: Discovery = dataclasses.field(default_factory=Discovery)
    variants: tuple[Variant, ...] = ()
    wake: Wake = dataclasses.field(default_factory=Wake)
    scrape_interval_s: float = 0.25
    queue_metric: str = "nv_inference_pending_request_count"
    max_queued: int = 100
    hold_timeout_s: float = 120.0
    max_in_flight: int = 1000
    retries: int = 2
    # Long enough for one SYN retransmit (1 s) when a pod's accept backlog overflows.
    connect_timeout_s: float = 3.0
    max_connections_per_endpoint: int = 128
    request_timeout_s: float = 300.0
    retry_after_s: int = 1
    max_request_bytes: int = 64 * 1024 * 1024
    shutdown_grace_s: float = 30.0

    def queue_metric_of(self, variant: str) -> str:
        """The metric holding `variant`'s pods' queue depth."""
        for v in self.variants:
            if v.name == variant and v.queue_metric:
                return v.queue_metric
        return self.queue_metric


def _get(doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = doc.get(key, default)
    if value is default:
        return value
    # bool is an int in Python; a number field given `true` is a mistake, not 1.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ConfigError(f"{key}: expected {_kind_name(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{key}: expected {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _positive(name: str, value: float, *, zero_ok: bool = False) -> None:
    if value < 0 or (value == 0 and not zero_ok):
        raise ConfigError(f"{name}: must be {'>= 0' if zero_ok else '> 0'}, got {value}")


def _enum(enum_type: type[enum.StrEnum], name: str, value: Any) -> Any:
    try:
        return enum_type(value)
    except ValueError:
        choices = ", ".join(m.value for m in enum_type)
        raise ConfigError(f"{name}: {value!r} is not one of {choices}") from None


def parse_address(text: str, *, field: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [ADDR]:PORT) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{field}: expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _static_endpoint(raw: Any, field: str) -> StaticEndpoint:
    if isinstance(raw, str):
        raw = {"address": raw}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{field}: expected an address or a mapping, got {raw!r}")
    host, port = parse_address(_get(raw, "address", str, ""), field=f"{field}.address")
    metrics_port = _get(raw, "metricsPort", int, None)
    weight = float(_get(raw, "weight", (int, float), 1.0))
    _positive(f"{field}.weight", weight)
    return StaticEndpoint(
        host=host,
        port=port,
        metrics_port=metrics_port,
        weight=weight,
        draining=_get(raw, "draining", bool, False),
    )


def _variant(raw: Any, index: int) -> Variant:
    field = f"variants[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{field}: expected a mapping, got {raw!r}")
    name = _get(raw, "name", str, "")
    if not name:
        raise ConfigError(f"{field}.name: required")
    weight = _get(raw, "weight", int, 100)
    _positive(f"{field}.weight", weight, zero_ok=True)
    selector = _get(raw, "selector", Mapping, {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in selector.items()):
        raise ConfigError(f"{field}.selector: labels and values must be strings")
    endpoints = _get(raw, "endpoints", list, [])
    return Variant(
        name=name,
        weight=weight,
        selector=dict(selector),
        service=_get(raw, "service", str, None),
        deployment=_get(raw, "deployment", str, None),
        queue_metric=_get(raw, "queueMetric", str, None) or None,
        endpoints=tuple(
            _static_endpoint(e, f"{field}.endpoints[{i}]") for i, e in enumerate(endpoints)
        ),
    )


def _discovery(raw: Mapping[str, Any]) -> Discovery:
    defaults = Discovery()
    return Discovery(
        mode=_enum(DiscoveryMode, "discovery.mode", raw.get("mode", defaults.mode)),
        namespace=_get(raw, "namespace", str, defaults.namespace),
        http_port=str(_get(raw, "httpPort", (str, int), defaults.http_port)),
        metrics_port=str(_get(raw, "metricsPort", (str, int), defaults.metrics_port)),
        default_http_port=_get(raw, "defaultHttpPort", int, defaults.default_http_port),
        default_metrics_port=_get(raw, "defaultMetricsPort", int, defaults.default_metrics_port),
        probe=_get(raw, "probe", bool, defaults.probe),
    )


def _wake(raw: Mapping[str, Any]) -> Wake:
    kind = _enum(WakeKind, "wake.kind", raw.get("kind", WakeKind.NONE))
    url = _get(raw, "url", str, None)
    if kind is WakeKind.WEBHOOK and not url:
        raise ConfigError("wake.url: required for the webhook hook")
    return Wake(kind=kind, url=url, namespace=_get(raw, "namespace", str, None))


def parse_document(doc: Mapping[str, Any]) -> RouterConfig:
    """Validate a configuration document (file content with flag overrides merged in)."""
    d = RouterConfig()
    listen_host, listen_port = d.listen_host, d.listen_port
    if "listen" in doc:
        listen_host, listen_port = parse_address(_get(doc, "listen", str, ""), field="listen")
    discovery = _discovery(_get(doc, "discovery", Mapping, {}))
    variants = tuple(_variant(v, i) for i, v in enumerate(_get(doc, "variants", list, [])))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ConfigError(f"variants: names must be unique, got {names}")
    if variants and not any(v.weight for v in variants):
        raise ConfigError("variants: at least one weight must be > 0")
    for v in variants:
        if discovery.mode is DiscoveryMode.PODS and not v.selector:
            raise ConfigError(f"variants[{v.name}].selector: required in pods discovery")
        if discovery.mode is DiscoveryMode.ENDPOINT_SLICES and not v.service:
            raise ConfigError(f"variants[{v.name}].service: required in endpointslices mode")
    config = RouterConfig(
        listen_host=listen_host,
        listen_port=listen_port,
        policy=_enum(Policy, "policy", doc.get("policy", d.policy)),
        discovery=discovery,
        variants=variants,
        wake=_wake(_get(doc, "wake", Mapping, {})),
        scrape_interval_s=float(
            _get(doc, "scrapeIntervalSeconds", (int, float), d.scrape_interval_s)
        ),
        queue_metric=_get(doc, "queueMetric", str, d.queue_metric),
        max_queued=_get(doc, "maxQueued", int, d.max_queued),
        hold_timeout_s=float(_get(doc, "holdTimeoutSeconds", (int, float), d.hold_timeout_s)),
        max_in_flight=_get(doc, "maxInFlight", int, d.max_in_flight),
        retries=_get(doc, "retries", int, d.retries),
        connect_timeout_s=float(
            _get(doc, "connectTimeoutSeconds", (int, float), d.connect_timeout_s)
        ),
        request_timeout_s=float(
            _get(doc, "requestTimeoutSeconds", (int, float), d.request_timeout_s)
        ),
        max_connections_per_endpoint=_get(
            doc, "maxConnectionsPerEndpoint", int, d.max_connections_per_endpoint
        ),
        retry_after_s=_get(doc, "retryAfterSeconds", int, d.retry_after_s),
        max_request_bytes=_get(doc, "maxRequestBytes", int, d.max_request_bytes),
        shutdown_grace_s=float(_get(doc, "shutdownGraceSeconds", (int, float), d.shutdown_grace_s)),
    )
    for name, value, zero_ok in (
        ("scrapeIntervalSeconds", config.scrape_interval_s, False),
        ("maxQueued", config.max_queued, True),
        ("holdTimeoutSeconds", config.hold_timeout_s, True),
        ("maxInFlight", config.max_in_flight, False),
        ("retries", config.retries, True),
        ("connectTimeoutSeconds", config.connect_timeout_s, False),
        ("requestTimeoutSeconds", config.request_timeout_s, False),
        ("maxConnectionsPerEndpoint", config.max_connections_per_endpoint, False),
        ("retryAfterSeconds", config.retry_after_s, True),
        ("maxRequestBytes", config.max_request_bytes, False),
        ("shutdownGraceSeconds", config.shutdown_grace_s, True),
    ):
        _positive(name, value, zero_ok=zero_ok)
    if not variants:
        raise ConfigError("variants: at least one is required (or give --endpoint / --selector)")
    return config


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two documents; mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def endpoint_flag(text: str) -> tuple[str, dict[str, Any]]:
    """`[VARIANT=]HOST:PORT[:METRICS_PORT]` -> (variant, a static endpoint document).

    The variant defaults to `stable`; an IPv6 host goes in brackets (`[::1]:8000:8002`).
    """
    variant, sep, rest = text.partition("=")
    if not sep:
        variant, rest = "stable", text
    host, bracket, ports = rest[1:].partition("]") if rest.startswith("[") else ("", "", "")
    parts = [f"[{host}]", *ports.lstrip(":").split(":")] if bracket else rest.split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts[1:]):
        raise ConfigError(f"--endpoint: expected [VARIANT=]HOST:PORT[:METRICS_PORT], got {text!r}")
    doc: dict[str, Any] = {"address": f"{parts[0]}:{parts[1]}"}
    if len(parts) == 3:
        doc["metricsPort"] = int(parts[2])
    parse_address(doc["address"], field=f"--endpoint {text}")
    return variant, doc


def variants_from_endpoint_flags(flags: Sequence[str]) -> list[dict[str, Any]]:
    """Group --endpoint flags into variant documents, in first-seen order."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for flag in flags:
        variant, doc = endpoint_flag(flag)
        grouped.setdefault(variant, []).append(doc)
    return [{"name": name, "endpoints": eps} for name, eps in grouped.items()]
