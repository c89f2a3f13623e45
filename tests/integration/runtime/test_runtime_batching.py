"""Dynamic batching across connections, and every Triton metric present and moving."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib

import numpy as np
import tritonclient.grpc.aio as aiogrpcclient
import tritonclient.http.aio as aiohttpclient
from test_runtime_http import reference

from conftest import Server

TRITON_FAMILIES = [
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
    "nv_inference_pending_request_count",
]


ROWS = 8  # Per request: each run takes long enough that others arrive meanwhile, even on a
# loaded machine where the clients are slow to send.


def heavy_rows(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((ROWS, 512)).astype(np.float32)


async def test_concurrent_requests_merge_into_few_executions(
    server: Server, model_repo: pathlib.Path
) -> None:
    """64 requests over 16 HTTP and 16 gRPC connections: far fewer model runs."""
    requests = 64
    before_exec = server.metric("nv_inference_exec_count", model="heavy")
    before_count = server.metric("nv_inference_count", model="heavy")
    http = [aiohttpclient.InferenceServerClient(server.http_url) for _ in range(16)]
    grpc = [aiogrpcclient.InferenceServerClient(server.grpc_url) for _ in range(16)]

    async def one(index: int) -> tuple[np.ndarray, np.ndarray]:
        data = heavy_rows(index)
        if index % 2:
            client = http[index % 16]
            tensor = aiohttpclient.InferInput("INPUT0", [ROWS, 512], "FP32")
            tensor.set_data_from_numpy(data)
            result = await client.infer("heavy", [tensor])
        else:
            gclient = grpc[index % 16]
            gtensor = aiogrpcclient.InferInput("INPUT0", [ROWS, 512], "FP32")
            gtensor.set_data_from_numpy(data)
            result = await gclient.infer("heavy", [gtensor])
        return data, result.as_numpy("OUTPUT0")

    try:
        results = await asyncio.gather(*(one(i) for i in range(requests)))
    finally:
        for client in http:
            await client.close()
        for gclient in grpc:
            await gclient.close()
    # Each request got its own rows back, not a neighbour's from the same batch.
    for data, got in results:
        (want,) = reference(model_repo, "heavy", 1, {"INPUT0": data})
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    executions = server.metric("nv_inference_exec_count", model="heavy") - before_exec
    assert server.metric("nv_inference_count", model="heavy") - before_count == requests * ROWS
    assert executions <= requests / 2, f"{executions} executions for {requests} requests"


def test_every_metric_family_present_and_moving(server: Server) -> None:
    import tritonclient.http as httpclient

    text = server.metrics()
    for family in TRITON_FAMILIES:
        assert f"# TYPE {family} " in text, family
        assert f'{family}{{model="addsub"' in text or f'{family}{{model="addsub",' in text
    assert "kubeinfer_inference_request_duration_seconds_bucket" in text
    names = TRITON_FAMILIES[:1] + TRITON_FAMILIES[2:9]
    before = {name: server.metric(name, model="addsub", version="1") for name in names}
    failed_before = server.metric("nv_inference_request_failure", model="addsub", reason="OTHER")
    latency_before = server.metric(
        "kubeinfer_inference_request_duration_seconds_count", model="addsub"
    )
    client = httpclient.InferenceServerClient(server.http_url)
    inputs = [httpclient.InferInput(name, [8, 16], "INT32") for name in ("INPUT0", "INPUT1")]
    for tensor in inputs:
        tensor.set_data_from_numpy(np.ones((8, 16), dtype=np.int32))
    for _ in range(3):
        client.infer("addsub", inputs)
    bad = httpclient.InferInput("INPUT0", [8, 16], "INT32")
    bad.set_data_from_numpy(np.ones((8, 16), dtype=np.int32))
    with contextlib.suppress(Exception):
        client.infer("addsub", [bad])
    after = {name: server.metric(name, model="addsub", version="1") for name in names}
    assert after["nv_inference_request_success"] == before["nv_inference_request_success"] + 3
    assert after["nv_inference_count"] == before["nv_inference_count"] + 24
    assert after["nv_inference_exec_count"] == before["nv_inference_exec_count"] + 3
    for name in names[3:]:
        assert after[name] >= before[name], name
    assert after["nv_inference_request_duration_us"] > before["nv_inference_request_duration_us"]
    assert (
        after["nv_inference_compute_infer_duration_us"]
        > before["nv_inference_compute_infer_duration_us"]
    )
    assert (
        server.metric("nv_inference_request_failure", model="addsub", reason="OTHER")
        == failed_before + 1
    )
    assert (
        server.metric("kubeinfer_inference_request_duration_seconds_count", model="addsub")
        == latency_before + 3
    )
    assert server.metric("nv_inference_pending_request_count", model="addsub") == 0


async def test_pending_gauge_counts_queued_requests(server: Server) -> None:
    """While one big batch runs, the others wait and show in the pending gauge."""
    client = aiohttpclient.InferenceServerClient(server.http_url)
    data = np.random.default_rng(0).standard_normal((128, 512)).astype(np.float32)

    async def big() -> None:
        tensor = aiohttpclient.InferInput("INPUT0", [128, 512], "FP32")
        tensor.set_data_from_numpy(data)
        await client.infer("heavy", [tensor])

    tasks = [asyncio.create_task(big()) for _ in range(12)]
    seen = 0.0
    try:
        for _ in range(200):
            seen = max(
                seen,
                await asyncio.to_thread(
                    server.metric, "nv_inference_pending_request_count", model="heavy"
                ),
            )
            if seen > 0 or all(t.done() for t in tasks):
                break
            await asyncio.sleep(0.005)
    finally:
        await asyncio.gather(*tasks)
        await client.close()
    assert seen > 0
    assert server.metric("nv_inference_pending_request_count", model="heavy") == 0
