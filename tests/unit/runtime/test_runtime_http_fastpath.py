"""The HTTP fast path: what it serves itself, what goes to aiohttp, and how a connection
waits while aiohttp loads."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kubeinfer_onnx import http_fastpath, http_server, metrics


def protocol(max_bytes: int = 1000) -> http_fastpath.FastProtocol:
    models: Any = None  # reading a head needs no model
    endpoints = http_server.v2_endpoints(
        models,
        registry=metrics.Metrics(),
        max_request_bytes=max_bytes,
        in_flight=http_server.InFlight(),
    )
    return http_fastpath.FastProtocol(
        endpoints=endpoints,
        max_request_bytes=max_bytes,
        fallback=http_fastpath.Fallback(
            endpoints, max_request_bytes=max_bytes, shutdown_timeout=1.0
        ),
    )


def head(*lines: str) -> bytes:
    return "\r\n".join(lines).encode()


def parsed(raw: bytes) -> tuple[str, str, dict[str, str], int | None, bool, str | None] | None:
    """(method, route, params, content length, keep-alive, binary header length)."""
    found = protocol()._parse_head(raw)
    if found is None:
        return None
    route, request, keep_alive = found
    assert request.body is None  # the body is read after the head
    return (
        route.method,
        route.path,
        request.params,
        request.content_length,
        keep_alive,
        request.header_length,
    )


INFER = "/v2/models/{model}/infer"
SERVED = [
    (
        "plain",
        head("POST /v2/models/mlp/infer HTTP/1.1", "Host: x", "Content-Length: 10"),
        ("POST", INFER, {"model": "mlp"}, 10, True, None),
    ),
    (
        "a version, binary header length, HTTP/1.0",
        head(
            "POST /v2/models/m/versions/2/infer HTTP/1.0",
            "Content-Length: 10",
            "Inference-Header-Content-Length: 4",
        ),
        (
            "POST",
            "/v2/models/{model}/versions/{version}/infer",
            {"model": "m", "version": "2"},
            10,
            False,
            "4",
        ),
    ),
    (
        "connection close, header case",
        head("POST /v2/models/mlp/infer HTTP/1.1", "CONNECTION: Close", "content-length: 0"),
        ("POST", INFER, {"model": "mlp"}, 0, False, None),
    ),
    (
        "a readiness probe",
        head("GET /v2/health/ready HTTP/1.1", "Host: x"),
        ("GET", "/v2/health/ready", {}, None, True, None),
    ),
    (
        "model metadata, an empty body",
        head("GET /v2/models/mlp HTTP/1.1", "Content-Length: 0"),
        ("GET", "/v2/models/{model}", {"model": "mlp"}, 0, True, None),
    ),
    (
        "the statistics route, not a model named stats",
        head("GET /v2/models/stats HTTP/1.1"),
        ("GET", "/v2/models/stats", {}, None, True, None),
    ),
    (
        "repository index",
        head("POST /v2/repository/index HTTP/1.1", "Content-Length: 1"),
        ("POST", "/v2/repository/index", {}, 1, True, None),
    ),
]

HANDED_OVER = [
    ("infer is not a GET", head("GET /v2/models/mlp/infer HTTP/1.1", "Content-Length: 1")),
    ("a body on a GET", head("GET /v2/health/ready HTTP/1.1", "Content-Length: 1")),
    ("no length", head("POST /v2/models/mlp/infer HTTP/1.1", "Host: x")),
    ("chunked", head("POST /v2/models/mlp/infer HTTP/1.1", "Transfer-Encoding: chunked")),
    (
        "expect",
        head("POST /v2/models/mlp/infer HTTP/1.1", "Expect: 100-continue", "Content-Length: 1"),
    ),
    ("over the limit", head("POST /v2/models/mlp/infer HTTP/1.1", "Content-Length: 1001")),
    (
        "two lengths",
        head("POST /v2/models/mlp/infer HTTP/1.1", "Content-Length: 1", "Content-Length: 1"),
    ),
    ("escaped path", head("POST /v2/models/m%20x/infer HTTP/1.1", "Content-Length: 1")),
    ("a query", head("POST /v2/models/mlp/infer?x=1 HTTP/1.1", "Content-Length: 1")),
    ("a query on a probe", head("GET /v2/health/ready?x=1 HTTP/1.1")),
    ("no route", head("GET /v2/nothing HTTP/1.1")),
    ("odd route", head("POST /v2/models/a/b/infer HTTP/1.1", "Content-Length: 1")),
    ("an empty model name", head("GET /v2/models//ready HTTP/1.1")),
    ("a trailing slash", head("GET /v2/health/ready/ HTTP/1.1")),
    ("HEAD", head("HEAD /v2/health/ready HTTP/1.1")),
    (
        "upgrade",
        head("POST /v2/models/mlp/infer HTTP/1.1", "Connection: upgrade", "Content-Length: 1"),
    ),
    ("HTTP/2 preface", head("PRI * HTTP/2.0", "", "SM")),
    ("a folded header", head("POST /v2/models/mlp/infer HTTP/1.1", " folded", "Content-Length: 1")),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in SERVED], ids=[c[0] for c in SERVED])
def test_served_here(raw: bytes, expected: object) -> None:
    assert parsed(raw) == expected


@pytest.mark.parametrize("raw", [c[1] for c in HANDED_OVER], ids=[c[0] for c in HANDED_OVER])
def test_handed_to_aiohttp(raw: bytes) -> None:
    assert parsed(raw) is None


def test_metrics_port_serves_only_metrics() -> None:
    endpoints = http_server.metrics_endpoints(registry=None)  # type: ignore[arg-type]
    assert endpoints.match("GET", "/metrics") is not None
    assert endpoints.match("GET", "/v2/health/ready") is None
    assert endpoints.match("POST", "/metrics") is None


class _Transport:
    """Records what the fast path does to a connection while it hands it over."""

    def __init__(self) -> None:
        self.reading = True
        self.protocol: Any = None
        self.closed = False

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class _Aiohttp:
    """Stands in for aiohttp's per-connection protocol: what it was given."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.data = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data


@pytest.mark.parametrize("loaded", [False, True], ids=["aiohttp loading", "aiohttp loaded"])
async def test_hand_over_holds_the_connection_until_aiohttp_is_there(loaded: bool) -> None:
    """A request the fast path does not serve reaches aiohttp whole, with reading paused
    (only this connection waits) until aiohttp is loaded, and resumed after."""
    fast = protocol()
    fallback = fast._fallback
    released, switched = asyncio.Event(), asyncio.Event()
    made: list[_Aiohttp] = []

    def factory() -> _Aiohttp:
        made.append(_Aiohttp())
        switched.set()
        return made[-1]

    async def load() -> Any:
        await released.wait()
        fallback.factory = factory
        return factory

    fallback.load = load  # type: ignore[method-assign]
    if loaded:
        fallback.factory = factory
        released.set()
    transport = _Transport()
    fast.connection_made(transport)
    raw = head("POST /v2/models/mlp/infer HTTP/1.1", "Transfer-Encoding: chunked", "", "")
    fast.data_received(raw[:10])  # the head is not complete: nothing happens yet
    assert transport.protocol is None and transport.reading
    fast.data_received(raw[10:])
    if not loaded:
        assert transport.protocol is None and not transport.reading
        released.set()
        await asyncio.wait_for(switched.wait(), timeout=10)
    assert transport.protocol is made[0] and made[0].transport is transport
    assert made[0].data == raw
    assert transport.reading and not transport.closed
