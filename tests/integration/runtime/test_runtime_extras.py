"""The optional extras, each showing its effect: the response cache, INT8 quantization, and
`kubeinfer-onnx-profile` feeding `kubeinfer plan`."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import tritonclient.http as httpclient

from conftest import Server
from kubeinfer import planning_cli
from kubeinfer_onnx import profile, quantize

# INT8 dynamic quantization of the heavy model: every output within 5 % of the largest FP32
# output magnitude (measured: about 2.3 %), and the file at most 35 % of the FP32 size.
INT8_TOLERANCE = 0.05
INT8_SIZE_RATIO = 0.35


def infer(client: httpclient.InferenceServerClient, model: str, data: np.ndarray) -> np.ndarray:
    tensor = httpclient.InferInput("INPUT0", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    result: np.ndarray = client.infer(model, [tensor]).as_numpy("OUTPUT0")
    return result


def test_cache_hit_skips_the_model(server: Server) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    data = np.random.default_rng(42).standard_normal((2, 64)).astype(np.float32)
    exec_before = server.metric("nv_inference_exec_count", model="mlp_cached")
    hits_before = server.metric("nv_cache_num_hits_per_model", model="mlp_cached")
    misses_before = server.metric("nv_cache_num_misses_per_model", model="mlp_cached")
    first = infer(client, "mlp_cached", data)
    second = infer(client, "mlp_cached", data)
    np.testing.assert_array_equal(first, second)
    assert server.metric("nv_inference_exec_count", model="mlp_cached") == exec_before + 1
    assert server.metric("nv_cache_num_hits_per_model", model="mlp_cached") == hits_before + 1
    assert server.metric("nv_cache_num_misses_per_model", model="mlp_cached") == misses_before + 1
    # A different input is a miss and runs the model; the uncached twin never counts hits.
    infer(client, "mlp_cached", data + 1)
    assert server.metric("nv_inference_exec_count", model="mlp_cached") == exec_before + 2
    assert server.metric("nv_cache_num_hits_per_model", model="mlp") == 0
    assert client.get_model_config("mlp_cached")["response_cache"] == {"enable": True}


def test_int8_model_is_smaller_and_close(
    server: Server, model_repo: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    source = model_repo / "heavy_int8" / "1" / "model.onnx"
    quantized = quantize.quantize_int8(source, scratch=tmp_path)
    assert quantized.stat().st_size <= INT8_SIZE_RATIO * source.stat().st_size
    client = httpclient.InferenceServerClient(server.http_url)
    data = np.random.default_rng(3).standard_normal((16, 512)).astype(np.float32)
    fp32 = infer(client, "heavy", data)  # The same weights, served unquantized.
    int8 = infer(client, "heavy_int8", data)
    assert not np.array_equal(fp32, int8)  # Really quantized, not the FP32 model.
    assert np.abs(fp32 - int8).max() <= INT8_TOLERANCE * np.abs(fp32).max()


def test_profile_reports_sane_numbers(
    model_repo: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "profile.json"
    code = profile.profile_main(
        [
            str(model_repo / "heavy" / "1" / "model.onnx"),
            "--seconds",
            "0.1",
            "--min-iterations",
            "3",
            "--batch-sizes",
            "1,8,32,128",
            "--output",
            str(output),
        ]
    )
    assert code == 0
    table = capsys.readouterr().out
    assert f"kubeinfer plan {output}" in table
    report = json.loads(output.read_text())
    fp32, int8 = report["runs"]
    assert [p["batch_size"] for p in fp32["points"]] == [1, 8, 32, 128]
    for run in (fp32, int8):
        for point in run["points"]:
            assert 0 < point["p50_ms"] <= point["p99_ms"]
            assert point["throughput"] > 0 and point["iterations"] >= 3
        assert run["memory_mb"] > 0
    assert int8["model_bytes"] < fp32["model_bytes"]
    # A bigger batch costs more per run but buys more rows per second.
    assert fp32["points"][-1]["p50_ms"] > fp32["points"][0]["p50_ms"]
    assert fp32["points"][-1]["throughput"] > fp32["points"][0]["throughput"]
    # The README's workflow: the profile is `kubeinfer plan`'s input, as written.
    assert planning_cli.plan_main([str(output), "--rps", "2000", "--p99-ms", "1000"]) == 0
    planned = capsys.readouterr().out
    assert "<- planned" in planned and "replicas" in planned
