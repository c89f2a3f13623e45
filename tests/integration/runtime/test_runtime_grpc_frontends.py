"""The two gRPC frontends (ours, `--grpc-frontend fast`, the default; grpcio's, `--grpc-frontend
grpcio`) answer every call alike, as real clients see it; and what only the frontend decides:
compressed requests, deadlines, many calls on one connection, the SIGTERM drain."""

from __future__ import annotations

import asyncio
import pathlib
import signal
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpcclient
from test_runtime_http import mlp_input, reference
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from conftest import Server, start_server

FRONTENDS = ["fast", "grpcio"]


@pytest.fixture(scope="module", params=FRONTENDS)
def frontend_server(
    request: pytest.FixtureRequest,
    model_repo: pathlib.Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    log_path = tmp_path_factory.mktemp("logs") / f"grpc-{request.param}.log"
    server = start_server(
        model_repo,
        log_path,
        "--grpc-frontend",
        request.param,
        "--max-request-bytes",
        str(1024 * 1024),
    )
    yield server
    assert server.stop() == 0, server.log()


def outcome(call: Any) -> tuple[str, str]:
    """(status code name, message) of one stub call."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code().name, exc.details() or ""
    return "OK", ""


def test_calls_answer_alike(frontend_server: Server, model_repo: pathlib.Path) -> None:
    channel = grpc.insecure_channel(
        frontend_server.grpc_url, options=[("grpc.max_send_message_length", -1)]
    )
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

    def infer(model: str, shape: list[int], data: bytes, datatype: str = "FP32") -> Any:
        request = service_pb2.ModelInferRequest(model_name=model)
        request.inputs.add(name="INPUT0", datatype=datatype, shape=shape)
        request.raw_input_contents.append(data)
        return lambda: stub.ModelInfer(request, timeout=15)

    good = mlp_input(3, seed=4)
    response = stub.ModelInfer(
        service_pb2.ModelInferRequest(
            model_name="mlp",
            model_version="1",
            id="abc",
            inputs=[
                service_pb2.ModelInferRequest.InferInputTensor(
                    name="INPUT0", datatype="FP32", shape=[3, 64]
                )
            ],
            raw_input_contents=[good.tobytes()],
        ),
        timeout=15,
    )
    (want,) = reference(model_repo, "mlp", 1, {"INPUT0": good})
    got = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert (response.id, response.model_name, response.model_version) == ("abc", "mlp", "1")

    # The same failures, with the same codes and messages, from either frontend.
    assert outcome(infer("nope", [1, 64], good[:1].tobytes())) == (
        "NOT_FOUND",
        "unknown model: 'nope'",
    )
    code, message = outcome(infer("mlp", [1, 63], b"\x00" * 252))
    assert code == "INVALID_ARGUMENT" and "INPUT0" in message
    code, message = outcome(infer("mlp", [1, 64], b"\x00" * 7))
    assert code == "INVALID_ARGUMENT"
    code, message = outcome(infer("mlp", [4096, 64], b"\x00" * (4096 * 256)))
    assert code == "RESOURCE_EXHAUSTED"
    code, _ = outcome(lambda: stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="x")))
    assert code == "NOT_FOUND"
    unknown = channel.unary_unary("/inference.GRPCInferenceService/Nope")
    assert outcome(lambda: unknown(b"", timeout=15))[0] == "UNIMPLEMENTED"
    # Still serving after all that, on the same connection.
    assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=15).ready
    channel.close()


def test_compressed_requests(frontend_server: Server, model_repo: pathlib.Path) -> None:
    client = grpcclient.InferenceServerClient(frontend_server.grpc_url)
    data = mlp_input(2, seed=5)
    tensor = grpcclient.InferInput("INPUT0", [2, 64], "FP32")
    tensor.set_data_from_numpy(data)
    (want,) = reference(model_repo, "mlp", 2, {"INPUT0": data})
    for algorithm in ("gzip", "deflate"):
        result = client.infer("mlp", [tensor], model_version="2", compression_algorithm=algorithm)
        np.testing.assert_allclose(result.as_numpy("OUTPUT0"), want, rtol=1e-5, atol=1e-5)
    client.close()


async def test_many_concurrent_calls_on_one_connection(
    frontend_server: Server, model_repo: pathlib.Path
) -> None:
    client = aiogrpcclient.InferenceServerClient(frontend_server.grpc_url)
    inputs = [mlp_input(1, seed=seed) for seed in range(200)]

    async def one(data: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        tensor = aiogrpcclient.InferInput("INPUT0", [1, 64], "FP32")
        tensor.set_data_from_numpy(data)
        result = await client.infer("mlp", [tensor], model_version="1")
        output: np.ndarray[Any, Any] = result.as_numpy("OUTPUT0")
        return output

    outputs = await asyncio.gather(*(one(data) for data in inputs))
    (want,) = reference(model_repo, "mlp", 1, {"INPUT0": np.concatenate(inputs)})
    np.testing.assert_allclose(np.concatenate(outputs), want, rtol=1e-5, atol=1e-5)
    await client.close()


BIG = np.random.default_rng(0).standard_normal((128, 512)).astype(np.float32)


def heavy_input() -> Any:
    tensor = aiogrpcclient.InferInput("INPUT0", list(BIG.shape), "FP32")
    tensor.set_data_from_numpy(BIG)
    return tensor


@pytest.mark.parametrize("frontend", FRONTENDS)
async def test_a_deadline_past_the_queue_is_deadline_exceeded(
    heavy_repo: pathlib.Path, tmp_path: pathlib.Path, frontend: str
) -> None:
    server = start_server(heavy_repo, tmp_path / "deadline.log", "--grpc-frontend", frontend)
    client = aiogrpcclient.InferenceServerClient(server.grpc_url)
    try:
        # A queue of heavy requests, then one that cannot be answered within 1 ms.
        backlog = [asyncio.ensure_future(client.infer("heavy", [heavy_input()])) for _ in range(8)]
        with pytest.raises(InferenceServerException) as info:
            await client.infer("heavy", [heavy_input()], client_timeout=0.001)
        assert "Deadline" in str(info.value)
        assert all(r.as_numpy("OUTPUT0").shape[0] == 128 for r in await asyncio.gather(*backlog))
        assert await client.is_server_live()
    finally:
        await client.close()
        assert server.stop() == 0, server.log()


@pytest.mark.parametrize("frontend", FRONTENDS)
async def test_sigterm_drains_every_accepted_grpc_call(
    heavy_repo: pathlib.Path, tmp_path: pathlib.Path, frontend: str
) -> None:
    server = start_server(
        heavy_repo,
        tmp_path / "drain.log",
        "--drain-delay-secs",
        "1",
        "--grpc-frontend",
        frontend,
        address="127.0.0.2",
    )
    client = aiogrpcclient.InferenceServerClient(server.grpc_url)
    try:
        accepted = [
            asyncio.ensure_future(client.infer("heavy", [heavy_input()])) for _ in range(24)
        ]
        await server.wait_queued("heavy", 4)
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while await client.is_server_ready():
            assert time.monotonic() < deadline, "still ready 10 s after SIGTERM"
        late = await client.infer("heavy", [heavy_input()])  # served during the drain delay
        results = await asyncio.gather(*accepted)
    finally:
        await client.close()
    assert all(r.as_numpy("OUTPUT0").shape[0] == 128 for r in results)
    assert late.as_numpy("OUTPUT0").shape[0] == 128
    assert await asyncio.to_thread(server.process.wait, 30) == 0
    assert "stopped" in server.log()
