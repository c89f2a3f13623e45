"""Every bad input answered with the right code and a message naming the problem."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import Server


def post(
    server: Server,
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, object], dict[str, str]]:
    request = urllib.request.Request(
        f"http://{server.http_url}{path}", data=body, headers=headers or {}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def mlp_body(
    *,
    name: str = "INPUT0",
    datatype: str = "FP32",
    shape: list[int] | None = None,
    data: list[float] | None = None,
) -> bytes:
    shape = shape if shape is not None else [1, 64]
    data = data if data is not None else [0.5] * int(np.prod(shape))
    return json.dumps(
        {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}
    ).encode()


BAD_HTTP = [
    ("unknown model", "/v2/models/nope/infer", mlp_body(), 404, "unknown model: 'nope'"),
    ("unknown version", "/v2/models/mlp/versions/9/infer", mlp_body(), 404, "unknown version '9'"),
    ("wrong input name", "/v2/models/mlp/infer", mlp_body(name="X"), 400, "unexpected input 'X'"),
    (
        "wrong dtype",
        "/v2/models/mlp/infer",
        mlp_body(datatype="INT32", data=[1] * 64),
        400,
        "has datatype INT32, model expects FP32",
    ),
    (
        "unknown dtype",
        "/v2/models/mlp/infer",
        mlp_body(datatype="FP8"),
        400,
        "unknown datatype 'FP8'",
    ),
    (
        "wrong shape",
        "/v2/models/mlp/infer",
        mlp_body(shape=[1, 32]),
        400,
        "has shape [1, 32], model expects [-1, 64]",
    ),
    (
        "element count",
        "/v2/models/mlp/infer",
        mlp_body(shape=[2, 64], data=[1.0] * 100),
        400,
        "got 100 elements, shape [2, 64] needs 128",
    ),
    (
        "malformed JSON",
        "/v2/models/mlp/infer",
        b'{"inputs": [',
        400,
        "malformed JSON in request body",
    ),
    ("not an object", "/v2/models/mlp/infer", b"[1, 2]", 400, "must be a JSON object"),
    ("no inputs", "/v2/models/mlp/infer", b'{"inputs": []}', 400, "non-empty 'inputs'"),
    (
        "batch over max",
        "/v2/models/mlp/infer",
        mlp_body(shape=[65, 64]),
        400,
        "batch size 65 for model 'mlp' exceeds its max_batch_size 64",
    ),
    (
        "unknown output",
        "/v2/models/mlp/infer",
        json.dumps(
            {"inputs": json.loads(mlp_body())["inputs"], "outputs": [{"name": "NOPE"}]}
        ).encode(),
        400,
        "unexpected output 'NOPE'",
    ),
    (
        "body over limit",
        "/v2/models/mlp/infer",
        b" " * (1024 * 1024 + 1),
        400,
        "exceeds the limit of 1048576 bytes",
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [case[1:] for case in BAD_HTTP],
    ids=[case[0] for case in BAD_HTTP],
)
def test_http_bad_input(server: Server, path: str, body: bytes, status: int, message: str) -> None:
    got_status, document, _ = post(server, path, body)
    assert got_status == status
    assert set(document) == {"error"}
    assert message in str(document["error"])


def test_http_bad_binary_framing(server: Server) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "datatype": "FP32",
                    "shape": [1, 64],
                    "parameters": {"binary_data_size": 256},
                }
            ]
        }
    ).encode()
    short = header + b"\0" * 100  # Claims 256 bytes, carries 100.
    status, document, _ = post(
        server, "/v2/models/mlp/infer", short, {"Inference-Header-Content-Length": str(len(header))}
    )
    assert status == 400 and "runs past the end of the body" in str(document["error"])
    status, document, _ = post(
        server,
        "/v2/models/mlp/infer",
        header + b"\0" * 256,
        {"Inference-Header-Content-Length": "nope"},
    )
    assert status == 400 and "must be an integer" in str(document["error"])
    # And the server is still fine afterwards.
    assert post(server, "/v2/models/mlp/infer", mlp_body())[0] == 200


def test_tritonclient_http_sees_the_message(server: Server) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    tensor = httpclient.InferInput("INPUT0", [1, 64], "FP64")
    tensor.set_data_from_numpy(np.zeros((1, 64), dtype=np.float64))
    with pytest.raises(InferenceServerException, match="model expects FP32") as info:
        client.infer("mlp", [tensor])
    assert info.value.status() == "400"


def grpc_infer(
    client: grpcclient.InferenceServerClient,
    model: str,
    array: np.ndarray,
    name: str = "INPUT0",
    datatype: str = "FP32",
) -> None:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    client.infer(model, [tensor])


BAD_GRPC = [
    (
        "unknown model",
        "nope",
        np.zeros((1, 64), np.float32),
        "INPUT0",
        "FP32",
        "NOT_FOUND",
        "unknown model",
    ),
    (
        "wrong name",
        "mlp",
        np.zeros((1, 64), np.float32),
        "X",
        "FP32",
        "INVALID_ARGUMENT",
        "unexpected input 'X'",
    ),
    (
        "wrong dtype",
        "mlp",
        np.zeros((1, 64), np.int32),
        "INPUT0",
        "INT32",
        "INVALID_ARGUMENT",
        "model expects FP32",
    ),
    (
        "wrong shape",
        "mlp",
        np.zeros((1, 63), np.float32),
        "INPUT0",
        "FP32",
        "INVALID_ARGUMENT",
        "model expects [-1, 64]",
    ),
    (
        "batch over max",
        "mlp",
        np.zeros((65, 64), np.float32),
        "INPUT0",
        "FP32",
        "INVALID_ARGUMENT",
        "exceeds its max_batch_size 64",
    ),
]


@pytest.mark.parametrize(
    ("model", "array", "name", "datatype", "code", "message"),
    [case[1:] for case in BAD_GRPC],
    ids=[case[0] for case in BAD_GRPC],
)
def test_grpc_bad_input(
    server: Server, model: str, array: np.ndarray, name: str, datatype: str, code: str, message: str
) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException, match=message.replace("[", r"\[")) as info:
        grpc_infer(client, model, array, name, datatype)
    assert info.value.status() == f"StatusCode.{code}"
    client.close()


def test_grpc_element_count_and_body_limit(server: Server) -> None:
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    channel = grpc.insecure_channel(server.grpc_url, options=[("grpc.max_send_message_length", -1)])
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    request = service_pb2.ModelInferRequest(model_name="mlp")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[2, 64])
    request.raw_input_contents.append(b"\0" * 4 * 100)
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "got 400 bytes, shape [2, 64] of FP32 needs 512" in str(info.value.details())
    # Past --max-request-bytes gRPC itself refuses the message before it is parsed.
    request.raw_input_contents[0] = b"\0" * (1024 * 1024 + 1)
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    channel.close()
