"""The HTTP infer fast path's request-head reading: what it serves itself, what goes to aiohttp."""

from __future__ import annotations

from typing import Any

import pytest

from kubeinfer_onnx import http_fastpath, http_server


def protocol(max_bytes: int = 1000) -> http_fastpath.InferProtocol:
    models: Any = None  # reading a head needs no model
    return http_fastpath.InferProtocol(
        models=models,
        max_request_bytes=max_bytes,
        in_flight=http_server.InFlight(),
        fallback=object,
    )


def head(*lines: str) -> bytes:
    return "\r\n".join(lines).encode()


SERVED = [
    (
        "plain",
        head("POST /v2/models/mlp/infer HTTP/1.1", "Host: x", "Content-Length: 10"),
        (("mlp", None), 10, True, None),
    ),
    (
        "a version, binary header length, HTTP/1.0",
        head(
            "POST /v2/models/m/versions/2/infer HTTP/1.0",
            "Content-Length: 10",
            "Inference-Header-Content-Length: 4",
        ),
        (("m", "2"), 10, False, "4"),
    ),
    (
        "connection close, header case",
        head("POST /v2/models/mlp/infer HTTP/1.1", "CONNECTION: Close", "content-length: 0"),
        (("mlp", None), 0, False, None),
    ),
]

HANDED_OVER = [
    ("a GET", head("GET /v2/models/mlp/infer HTTP/1.1", "Content-Length: 1")),
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
    ("not infer", head("POST /v2/repository/index HTTP/1.1", "Content-Length: 1")),
    ("odd route", head("POST /v2/models/a/b/infer HTTP/1.1", "Content-Length: 1")),
    (
        "upgrade",
        head("POST /v2/models/mlp/infer HTTP/1.1", "Connection: upgrade", "Content-Length: 1"),
    ),
    ("HTTP/2 preface", head("PRI * HTTP/2.0", "", "SM")),
    ("a folded header", head("POST /v2/models/mlp/infer HTTP/1.1", " folded", "Content-Length: 1")),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in SERVED], ids=[c[0] for c in SERVED])
def test_served_here(raw: bytes, expected: object) -> None:
    assert protocol()._parse_head(raw) == expected


@pytest.mark.parametrize("raw", [c[1] for c in HANDED_OVER], ids=[c[0] for c in HANDED_OVER])
def test_handed_to_aiohttp(raw: bytes) -> None:
    assert protocol()._parse_head(raw) is None
