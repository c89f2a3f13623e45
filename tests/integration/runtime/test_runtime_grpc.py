"""gRPC (inference.GRPCInferenceService) with tritonclient, sync, aio and streaming."""

from __future__ import annotations

import pathlib
import queue

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpcclient
from test_runtime_http import mlp_input, reference

from conftest import Server


def test_health_metadata_config_stats(server: Server) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("addsub")
    assert not client.is_model_ready("nope")
    assert client.get_server_metadata(as_json=True)["name"] == "kubeinfer-onnx"
    meta = client.get_model_metadata("addsub", as_json=True)
    assert [i["name"] for i in meta["inputs"]] == ["INPUT0", "INPUT1"]
    assert meta["inputs"][0]["datatype"] == "INT32"
    config = client.get_model_config("mlp", as_json=True)["config"]
    assert config["max_batch_size"] == 64
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    stats = client.get_inference_statistics("mlp", as_json=True)
    assert {s["version"] for s in stats["model_stats"]} == {"1", "2"}
    index = client.get_model_repository_index(as_json=True)
    assert any(m["name"] == "heavy" for m in index["models"])


def test_infer_numerics_and_typed_contents(server: Server, model_repo: pathlib.Path) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    data = mlp_input(4, seed=9)
    tensor = grpcclient.InferInput("INPUT0", [4, 64], "FP32")
    tensor.set_data_from_numpy(data)
    result = client.infer("mlp", [tensor], model_version="1", request_id="g1")
    (want,) = reference(model_repo, "mlp", 1, {"INPUT0": data})
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), want, rtol=1e-5, atol=1e-5)
    assert result.get_response().id == "g1"
    assert result.get_response().model_version == "1"

    # The typed `contents` fields instead of raw bytes, as other v2 clients send them.
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    a = np.arange(16, dtype=np.int32)
    request = service_pb2.ModelInferRequest(model_name="addsub")
    for name, values in (("INPUT0", a), ("INPUT1", a * 2)):
        item = request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        item.contents.int_contents.extend(values.tolist())
    stub = service_pb2_grpc.GRPCInferenceServiceStub(client._channel)
    response = stub.ModelInfer(request)
    total = np.frombuffer(response.raw_output_contents[0], dtype=np.int32)
    np.testing.assert_array_equal(total, a * 3)
    client.close()


async def test_aio_and_stream(server: Server, model_repo: pathlib.Path) -> None:
    client = aiogrpcclient.InferenceServerClient(server.grpc_url)
    data = mlp_input(2, seed=11)
    tensor = aiogrpcclient.InferInput("INPUT0", [2, 64], "FP32")
    tensor.set_data_from_numpy(data)
    result = await client.infer("mlp", [tensor], model_version="2")
    (want,) = reference(model_repo, "mlp", 2, {"INPUT0": data})
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), want, rtol=1e-5, atol=1e-5)
    await client.close()

    # Streaming: answers in order, a bad request answered in-band without ending the stream.
    answers: queue.Queue[tuple[object, object]] = queue.Queue()
    sync = grpcclient.InferenceServerClient(server.grpc_url)
    sync.start_stream(callback=lambda result, error: answers.put((result, error)))
    sync.async_stream_infer("mlp", [tensor], model_version="2")
    sync.async_stream_infer("nope", [tensor])
    sync.async_stream_infer("mlp", [tensor], model_version="2")
    sync.stop_stream()
    got = [answers.get(timeout=10) for _ in range(3)]
    assert got[0][1] is None and got[2][1] is None
    assert "unknown model" in str(got[1][1])
    np.testing.assert_allclose(got[2][0].as_numpy("OUTPUT0"), want, rtol=1e-5, atol=1e-5)
    sync.close()
