"""Hostile v2 requests against both protocols of the ONNX Runtime server: generated wrong
types, shapes, sizes and encodings, invalid JSON, lying binary header lengths, truncated bodies,
huge declared shapes, and slow senders. The promise: never a crash, never a 5xx other than 503,
gRPC answers only INVALID_ARGUMENT / NOT_FOUND / UNAVAILABLE / RESOURCE_EXHAUSTED, slow senders
block nobody, memory stays bounded."""

from __future__ import annotations

import json
import pathlib
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.reliability.conftest import Figures, Server, rss_mib, start_server

MAX_BODY = 1024 * 1024
ALLOWED_GRPC = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
SETTINGS = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def hostile_server(
    reliability_repo: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    server = start_server(
        reliability_repo,
        tmp_path_factory.mktemp("logs") / "hostile.log",
        "--max-request-bytes",
        str(MAX_BODY),
        "--max-queue-size",
        "32",
        "--intra-op-threads",
        "1",
    )
    yield server
    assert server.stop() == 0, server.log()[-3000:]


def raw_http(
    server: Server,
    path: str,
    body: bytes,
    headers: dict[str, str],
    *,
    declared_length: int | None = None,
    half_close: bool = True,
    timeout: float = 15,
) -> int | None:
    """One request over a fresh socket; a declared length above the body leaves it truncated
    (the write side is shut). Returns the status, or None when the server closed silently."""
    length = len(body) if declared_length is None else declared_length
    head = [f"POST {path} HTTP/1.1", f"Host: {server.http_url}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append(f"Content-Length: {length}")
    with socket.create_connection((server.address, server.http_port), timeout=timeout) as sock:
        try:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            if length > len(body) and half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused the rest of the body early; read what it said
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
    if not reply:
        return None
    return int(reply.split(b" ", 2)[1])


def assert_status_ok(status: int | None, what: object) -> None:
    assert status is None or status < 500 or status == 503, (status, what)


def assert_alive(server: Server) -> None:
    assert server.process.poll() is None, server.log()[-3000:]
    assert server.get("/v2/health/live")[0] == 200


# --- strategies -------------------------------------------------------------------------------

DATATYPES = ["FP32", "FP16", "FP64", "INT32", "INT64", "INT8", "UINT8", "BOOL", "BYTES"]
names = st.sampled_from(["INPUT0", "INPUT1", "", "OUTPUT0"]) | st.text(max_size=20)
datatypes = st.sampled_from(DATATYPES) | st.text(max_size=8)
dims = st.integers(-3, 70) | st.sampled_from([0, 2**31, 2**40, 2**63 - 1, -(2**63)])
shapes = st.lists(dims, max_size=5) | st.sampled_from([[1, 64], [2, 64], [4], [1, 16]])
scalars = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(-(2**70), 2**70)
    | st.booleans()
    | st.none()
    | st.text(max_size=10)
)
data = (
    st.lists(scalars, max_size=130)
    | st.lists(st.lists(scalars, max_size=70), max_size=3)
    | scalars
    | st.dictionaries(st.text(max_size=5), scalars, max_size=3)
)
parameters = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "binary_data_size": st.integers(-10, 2**40) | st.text(max_size=5),
        "binary_data": st.booleans() | st.integers(),
        "content_type": st.text(max_size=10),
    },
)
tensors = st.fixed_dictionaries(
    {"name": names, "datatype": datatypes, "shape": shapes},
    optional={"data": data, "parameters": parameters},
)
documents = st.fixed_dictionaries(
    {"inputs": st.lists(tensors, max_size=3) | scalars},
    optional={
        "id": scalars,
        "outputs": st.lists(
            st.fixed_dictionaries({"name": names}, optional={"parameters": parameters}),
            max_size=2,
        )
        | scalars,
        "parameters": parameters | scalars,
    },
)
models = st.sampled_from(["mlp", "fixed", "addsub", "heavy", "nope", "mlp/versions/9"])


@st.composite
def http_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A v2 request that is wrong somewhere: JSON, binary extension, or raw bytes."""
    kind = draw(st.sampled_from(["json", "binary", "garbage", "truncated"]))
    headers: dict[str, str] = {"Content-Type": "application/json"}
    declared: int | None = None
    if kind == "garbage":
        body = draw(
            st.binary(max_size=2000)
            | st.sampled_from([b"{", b"[]", b"null", b'"x"', b"1e999999", b"{" * 5000, b"[" * 500])
        )
    else:
        body = json.dumps(draw(documents), allow_nan=True).encode()
    if kind == "binary":
        blob = draw(st.binary(max_size=4096))
        lie = draw(st.sampled_from(["exact", "long", "short", "negative", "text", "huge"]))
        header = {
            "exact": str(len(body)),
            "long": str(len(body) + len(blob) + 17),
            "short": str(max(0, len(body) - 3)),
            "negative": "-5",
            "text": "abc",
            "huge": str(2**63),
        }[lie]
        headers = {"Inference-Header-Content-Length": header}
        headers["Content-Type"] = "application/octet-stream"
        body += blob
    if kind == "truncated":
        declared = len(body) + draw(st.integers(1, 10_000))
    return {"body": body, "headers": headers, "declared": declared, "model": draw(models)}


@given(request=http_requests())
@SETTINGS
def test_generated_http_requests_never_crash_or_5xx(
    hostile_server: Server, request: dict[str, Any]
) -> None:
    status = raw_http(
        hostile_server,
        f"/v2/models/{request['model']}/infer",
        request["body"],
        request["headers"],
        declared_length=request["declared"],
    )
    assert_status_ok(status, request)
    assert hostile_server.process.poll() is None, hostile_server.log()[-3000:]


def binary_case(datatype: str, shape: list[int], blob: bytes) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "datatype": datatype,
                    "shape": shape,
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        }
    ).encode()
    return header + blob, {"Inference-Header-Content-Length": str(len(header))}


def test_fixed_hostile_http_cases(hostile_server: Server) -> None:
    """The cases a generator finds rarely: huge declared shapes with no data,
    Content-Length past the limit, a body past the limit with no Content-Length."""
    cases: list[tuple[str, bytes, dict[str, str], int | None]] = [
        (
            "huge-shape",
            json.dumps(
                {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2**31, 2**31]}]}
            ).encode(),
            {},
            None,
        ),
        ("declared-past-limit", b"{}", {}, 10 * MAX_BODY),
        ("body-past-limit", b"{" + b" " * (2 * MAX_BODY) + b"}", {}, None),
        ("huge-binary-shape", *binary_case("FP32", [65536, 65536], b"\0" * 16), None),
        (
            "bytes-lengths-lie",
            *binary_case("BYTES", [2], struct.pack("<I", 2**31) + b"abcd"),
            None,
        ),
    ]
    statuses = {}
    for name, body, headers, declared in cases:
        headers = {"Content-Type": "application/octet-stream", **headers}
        statuses[name] = raw_http(
            hostile_server,
            "/v2/models/mlp/infer",
            body,
            headers,
            declared_length=declared,
            half_close=False,  # the body never ends: the server must answer without it
        )
        assert_status_ok(statuses[name], name)
        assert_alive(hostile_server)
    # Past the body limit: refused before it is read, with a 4xx that names the limit.
    assert statuses["declared-past-limit"] in (400, 413), statuses


@pytest.mark.parametrize("body", [b"[" * 500_000, b'{"a":' * 200_000], ids=["array", "object"])
def test_deeply_nested_json_is_a_400(hostile_server: Server, body: bytes) -> None:
    status = raw_http(
        hostile_server, "/v2/models/mlp/infer", body, {"Content-Type": "application/json"}
    )
    assert_alive(hostile_server)
    assert status == 400, status


@st.composite
def grpc_requests(draw: st.DrawFn) -> Any:
    request = service_pb2.ModelInferRequest(
        model_name=draw(st.sampled_from(["mlp", "fixed", "addsub", "nope", ""])),
        model_version=draw(st.sampled_from(["", "1", "7", "x"])),
    )
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        tensor = request.inputs.add()
        tensor.name = draw(names)
        tensor.datatype = draw(datatypes)
        tensor.shape.extend(draw(st.lists(st.integers(-3, 70) | st.just(2**40), max_size=4)))
        if raw:
            request.raw_input_contents.append(draw(st.binary(max_size=600)))
            continue
        which = draw(st.sampled_from(["fp32", "int", "int64", "bytes", "bool", "none"]))
        count = draw(st.integers(0, 130))
        if which == "fp32":
            tensor.contents.fp32_contents.extend([1.5] * count)
        elif which == "int":
            tensor.contents.int_contents.extend([3] * count)
        elif which == "int64":
            tensor.contents.int64_contents.extend([2**40] * count)
        elif which == "bytes":
            tensor.contents.bytes_contents.extend([b"x" * draw(st.integers(0, 9))] * count)
        elif which == "bool":
            tensor.contents.bool_contents.extend([True] * count)
    if draw(st.booleans()):
        # More raw blobs than inputs, or raw plus typed contents: both are protocol errors.
        request.raw_input_contents.append(draw(st.binary(max_size=64)))
    for name in draw(st.lists(names, max_size=2)):
        request.outputs.add().name = name
    return request


@pytest.fixture(scope="module")
def grpc_stub(hostile_server: Server) -> Iterator[Any]:
    channel = grpc.insecure_channel(
        hostile_server.grpc_url, options=[("grpc.max_send_message_length", -1)]
    )
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


@given(request=grpc_requests())
@SETTINGS
def test_generated_grpc_requests_answer_allowed_codes(
    hostile_server: Server, grpc_stub: Any, request: Any
) -> None:
    try:
        grpc_stub.ModelInfer(request, timeout=15)
        code = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code = exc.code()
    assert code in ALLOWED_GRPC, (code, request)
    assert hostile_server.process.poll() is None, hostile_server.log()[-3000:]


def test_grpc_oversized_and_huge_shape(hostile_server: Server, grpc_stub: Any) -> None:
    big = service_pb2.ModelInferRequest(model_name="mlp")
    tensor = big.inputs.add(name="INPUT0", datatype="FP32", shape=[4096, 64])
    big.raw_input_contents.append(b"\0" * (4096 * 64 * 4))  # 1 MiB + framing: past the limit
    huge = service_pb2.ModelInferRequest(model_name="mlp")
    tensor = huge.inputs.add(name="INPUT0", datatype="FP32", shape=[2**31, 2**31])
    tensor.contents.fp32_contents.extend([1.0] * 64)
    codes = []
    for request in (big, huge):
        with pytest.raises(grpc.RpcError) as err:
            grpc_stub.ModelInfer(request, timeout=15)
        codes.append(err.value.code())
    assert codes == [grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT]
    assert_alive(hostile_server)


def good_body() -> bytes:
    data = np.zeros(64, dtype=np.float32).tolist()
    return json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [1, 64], "datatype": "FP32", "data": data}]}
    ).encode()


def timed_infer(server: Server) -> tuple[int, float]:
    start = time.monotonic()
    request = urllib.request.Request(
        f"http://{server.http_url}/v2/models/mlp/infer",
        data=good_body(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
        return response.status, time.monotonic() - start


def test_slow_senders_block_nobody(hostile_server: Server, figures: Figures) -> None:
    """32 sockets each dribble a body one byte at a time for ~4 s while normal requests run."""
    stop = threading.Event()
    body = good_body()

    def dribble() -> None:
        head = (
            f"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        try:
            with socket.create_connection(
                (hostile_server.address, hostile_server.http_port), timeout=10
            ) as sock:
                sock.sendall(head)
                for byte in body:
                    if stop.is_set():
                        return
                    sock.sendall(bytes([byte]))
                    time.sleep(0.05)
        except OSError:
            pass  # the server may cut a slow sender off; that is allowed

    threads = [threading.Thread(target=dribble, daemon=True) for _ in range(32)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    latencies = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        status, seconds = timed_infer(hostile_server)
        assert status == 200
        latencies.append(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    worst = max(latencies)
    figures.record(
        "hostile_requests.slow_senders",
        slow_sockets=32,
        normal_requests=len(latencies),
        worst_latency_ms=round(worst * 1000, 1),
    )
    assert worst < 1.0, latencies
    assert_alive(hostile_server)


def test_memory_bounded_after_hostile_input(hostile_server: Server, figures: Figures) -> None:
    """Runs last in this module: RSS after every generated request stays bounded; a fresh
    barrage of the largest legal bodies does not grow it further."""
    before = rss_mib(hostile_server.process.pid)
    blob = b"\0" * (MAX_BODY - 200)
    header = b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[4095,64],"parameters":{}}]}'
    for _ in range(60):
        status = raw_http(
            hostile_server,
            "/v2/models/mlp/infer",
            header + blob,
            {
                "Inference-Header-Content-Length": str(len(header)),
                "Content-Type": "application/octet-stream",
            },
        )
        assert_status_ok(status, "max-size body")
    after = rss_mib(hostile_server.process.pid)
    figures.record(
        "hostile_requests.memory",
        rss_before_mib=round(before, 1),
        rss_after_mib=round(after, 1),
        growth_mib=round(after - before, 1),
    )
    assert after - before < 50, (before, after)
    assert_alive(hostile_server)
