"""HTTP/REST with tritonclient (sync and aio): health, metadata, config, stats, numerics."""

from __future__ import annotations

import json
import pathlib
import socket
import time

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient

from conftest import Server


def reference(
    repo: pathlib.Path,
    model: str,
    version: int,
    inputs: dict[str, np.ndarray],
) -> list[np.ndarray]:
    """The same model run by onnxruntime directly: the numerics every answer must match."""
    session = ort.InferenceSession(
        str(repo / model / str(version) / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return list(session.run(None, inputs))


def mlp_input(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 64)).astype(np.float32)


def test_health_metadata_config(server: Server) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("mlp")
    assert client.is_model_ready("mlp", "1")
    assert not client.is_model_ready("nope")
    meta = client.get_server_metadata()
    assert meta["name"] == "kubeinfer-onnx"
    assert "binary_tensor_data" in meta["extensions"]
    model_meta = client.get_model_metadata("mlp")
    assert model_meta["versions"] == ["1", "2"]
    assert model_meta["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 64]}]
    assert model_meta["outputs"] == [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 10]}]
    config = client.get_model_config("mlp")
    assert config["max_batch_size"] == 64  # From the model's config.json.
    assert config["input"][0]["dims"] == [64]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 0
    assert client.get_model_config("fixed")["max_batch_size"] == 0
    index = client.get_model_repository_index()
    assert {"name": "mlp", "version": "2", "state": "READY"} in index


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False])
def test_mlp_numerics_match_onnxruntime(
    server: Server, model_repo: pathlib.Path, binary_in: bool, binary_out: bool
) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    data = mlp_input(5)
    tensor = httpclient.InferInput("INPUT0", [5, 64], "FP32")
    tensor.set_data_from_numpy(data, binary_data=binary_in)
    result = client.infer(
        "mlp",
        [tensor],
        model_version="1",
        request_id="req-7",
        outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary_out)],
    )
    got = result.as_numpy("OUTPUT0")
    (want,) = reference(model_repo, "mlp", 1, {"INPUT0": data})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    response = result.get_response()
    assert response["model_version"] == "1"
    assert response["id"] == "req-7"


def test_newest_version_is_default(server: Server, model_repo: pathlib.Path) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    data = mlp_input(2)
    tensor = httpclient.InferInput("INPUT0", [2, 64], "FP32")
    tensor.set_data_from_numpy(data)
    default = client.infer("mlp", [tensor])
    assert default.get_response()["model_version"] == "2"
    (want_v2,) = reference(model_repo, "mlp", 2, {"INPUT0": data})
    (want_v1,) = reference(model_repo, "mlp", 1, {"INPUT0": data})
    np.testing.assert_allclose(default.as_numpy("OUTPUT0"), want_v2, rtol=1e-5, atol=1e-5)
    assert not np.allclose(want_v1, want_v2)  # The two versions really are different models.


def test_two_inputs_and_a_chosen_output(server: Server) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    b = np.ones((2, 16), dtype=np.int32)
    inputs = [
        httpclient.InferInput("INPUT0", [2, 16], "INT32"),
        httpclient.InferInput("INPUT1", [2, 16], "INT32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b, binary_data=False)
    both = client.infer("addsub", inputs)
    np.testing.assert_array_equal(both.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(both.as_numpy("OUTPUT1"), a - b)
    only = client.infer("addsub", inputs, outputs=[httpclient.InferRequestedOutput("OUTPUT1")])
    assert only.as_numpy("OUTPUT0") is None
    np.testing.assert_array_equal(only.as_numpy("OUTPUT1"), a - b)


def test_model_without_batch_dimension(server: Server) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    tensor = httpclient.InferInput("INPUT0", [4], "FP32")
    tensor.set_data_from_numpy(np.array([1, 2, 3, 4], dtype=np.float32))
    result = client.infer("fixed", [tensor])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), [2, 4, 6, 8])


async def test_aio_client_and_statistics(server: Server, model_repo: pathlib.Path) -> None:
    client = aiohttpclient.InferenceServerClient(server.http_url)
    try:
        assert await client.is_server_ready()
        data = mlp_input(3, seed=4)
        tensor = aiohttpclient.InferInput("INPUT0", [3, 64], "FP32")
        tensor.set_data_from_numpy(data)
        before = (await client.get_inference_statistics("mlp", "1"))["model_stats"][0]
        result = await client.infer("mlp", [tensor], model_version="1")
        (want,) = reference(model_repo, "mlp", 1, {"INPUT0": data})
        np.testing.assert_allclose(result.as_numpy("OUTPUT0"), want, rtol=1e-5, atol=1e-5)
        after = (await client.get_inference_statistics("mlp", "1"))["model_stats"][0]
        assert after["inference_count"] == before["inference_count"] + 3
        assert after["execution_count"] == before["execution_count"] + 1
        success = after["inference_stats"]["success"]
        assert success["count"] == before["inference_stats"]["success"]["count"] + 1
        assert success["ns"] > before["inference_stats"]["success"]["ns"]
        assert any(b["batch_size"] == 3 for b in after["batch_stats"])
    finally:
        await client.close()


def _exchange(
    server: Server, raw: bytes, answers: int
) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """Send raw bytes on one connection; read `answers` responses (status line, headers, body)."""
    host, port = server.http_url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(raw)
        reader = conn.makefile("rb")
        out = []
        for _ in range(answers):
            status = reader.readline().strip()
            headers: dict[bytes, bytes] = {}
            while (line := reader.readline().strip()) != b"":
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            out.append((status, headers, reader.read(int(headers[b"content-length"]))))
        return out


def _infer_request(body: bytes, *extra: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    head = [b"POST /v2/models/mlp/infer " + version, b"Host: x", b"Content-Type: application/json"]
    head += [*extra, b"Content-Length: %d" % len(body)]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@pytest.fixture
def infer_json() -> bytes:
    return json.dumps(
        {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}
    ).encode()


def _chunked_infer_request(body: bytes) -> bytes:
    head = b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    half = len(body) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:half], body[half:]))
    return head + chunks + b"0\r\n\r\n"


def test_keep_alive_pipelining_and_hand_over(server: Server, infer_json: bytes) -> None:
    """The fast path answers in order on a kept-alive connection (infer, a bad request's v2
    error, a probe), and a chunked body hands the connection to aiohttp (loaded for it), which
    serves the rest."""
    bad = json.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 1], "data": [1]}]})
    raw = (
        _infer_request(infer_json)
        + _infer_request(bad.encode())
        + b"GET /v2/models/mlp/ready HTTP/1.1\r\nHost: x\r\n\r\n"
        + _infer_request(infer_json)
        + _chunked_infer_request(infer_json)
        + _infer_request(infer_json)  # after the hand-over aiohttp serves plain infer too
    )
    answers = _exchange(server, raw, 6)
    assert [a[0].split(b" ")[1] for a in answers] == [
        b"200",
        b"400",
        b"200",
        b"200",
        b"200",
        b"200",
    ]
    assert b"unexpected input 'X'" in answers[1][2]
    assert answers[1][1][b"content-type"].startswith(b"application/json")
    first, chunked, last = (json.loads(answers[i][2]) for i in (0, 4, 5))
    assert first["outputs"][0]["shape"] == [1, 10]
    assert first["outputs"] == chunked["outputs"] == last["outputs"]  # both stacks answer alike


def test_what_no_route_takes_gets_404_or_405(server: Server) -> None:
    """No route, or a route without that method: aiohttp's answers, as before the fast path
    served GETs."""
    for request, code in (
        (b"GET /v2/nothing HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
        (b"POST /v2/health/ready HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"405"),
        (b"GET /v2/health/ready?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n", b"200"),
    ):
        ((status, _, _),) = _exchange(server, request, 1)
        assert status.split(b" ")[1] == code, request


def test_http10_and_connection_close_end_the_connection(server: Server, infer_json: bytes) -> None:
    for raw in (
        _infer_request(infer_json, version=b"HTTP/1.0"),
        _infer_request(infer_json, b"Connection: close"),
    ):
        ((status, headers, body),) = _exchange(server, raw, 1)
        assert status.split(b" ")[1] == b"200"
        assert headers.get(b"connection", b"").lower() == b"close"
        assert json.loads(body)["model_name"] == "mlp"


def test_unknown_model_and_version_on_the_fast_path(server: Server, infer_json: bytes) -> None:
    raw = _infer_request(infer_json).replace(b"/mlp/infer", b"/nope/infer")
    ((status, _, body),) = _exchange(server, raw, 1)
    assert status.split(b" ")[1] == b"404"
    assert json.loads(body) == {"error": "unknown model: 'nope'"}


def test_half_closed_client_still_gets_its_answer(server: Server, infer_json: bytes) -> None:
    host, port = server.http_url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(_infer_request(infer_json))
        conn.shutdown(socket.SHUT_WR)  # nothing more from this client
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    assert b'"model_name":"mlp"' in answer


def test_a_request_in_small_pieces(server: Server, infer_json: bytes) -> None:
    raw = _infer_request(infer_json)
    host, port = server.http_url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in (raw[:2], raw[2:30], raw[30:-5], raw[-5:]):
            conn.sendall(piece)
            time.sleep(0.05)
        answer = conn.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200")
