"""device: the providers each --device asks for, and what a real session ends up running on.

The sessions here are real onnxruntime sessions on this machine's CPU-only build, so "a GPU
was requested and the server runs on CPU" is the real fallback, read back from onnxruntime.
"""

from __future__ import annotations

import asyncio
import pathlib

import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubeinfer_onnx import device, metrics, model, repository, server
from tests.integration.runtime import runtime_models

D = device.Device
TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"


@pytest.mark.parametrize(
    ("requested", "available", "chosen"),
    [
        (D.GPU, [CPU, CUDA, TRT], [TRT, CUDA, CPU]),  # TensorRT first, CPU always last.
        (D.GPU, [CUDA, CPU], [CUDA, CPU]),
        (D.GPU, [CPU], [CPU]),  # The CPU-only wheel: nothing else to ask for.
        (D.AUTO, [CUDA, CPU], [CUDA, CPU]),
        (D.AUTO, [CPU], [CPU]),
        (D.CPU, [TRT, CUDA, CPU], [CPU]),  # A pod given no GPU never touches one.
        (D.GPU, ["OpenVINOExecutionProvider", CPU], [CPU]),  # Only NVIDIA providers count.
    ],
)
def test_choose_providers(
    requested: device.Device, available: list[str], chosen: list[str]
) -> None:
    assert device.choose_providers(requested, available) == chosen


@pytest.mark.parametrize(
    ("requested", "session", "available", "provider", "fell_back", "why"),
    [
        (D.GPU, [CUDA, CPU], [CUDA, CPU], CUDA, False, ""),
        (D.GPU, [TRT, CUDA, CPU], [TRT, CUDA, CPU], TRT, False, ""),
        (D.GPU, [CPU], [CPU], CPU, True, "no GPU execution provider"),
        (D.GPU, [CPU], [TRT, CUDA, CPU], CPU, True, "could not start"),
        (D.AUTO, [CPU], [CPU], CPU, False, ""),  # auto on CPU is no broken promise.
        (D.CPU, [CPU], [CUDA, CPU], CPU, False, ""),
    ],
)
def test_placement_reads_the_session(
    requested: device.Device,
    session: list[str],
    available: list[str],
    provider: str,
    fell_back: bool,
    why: str,
) -> None:
    placed = device.placement(requested=requested, session_providers=session, available=available)
    assert (placed.provider, placed.fell_back) == (provider, fell_back)
    assert placed.on_gpu is (provider != CPU)
    assert (why in placed.fallback_reason) if why else placed.fallback_reason == ""


@pytest.fixture(scope="module")
def mlp_repo(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    repo = tmp_path_factory.mktemp("repo")
    runtime_models.build_mlp(repo / "mlp" / "1" / "model.onnx", seed=1)
    return repo


def test_onnxruntime_runs_a_cuda_request_on_cpu_without_raising(mlp_repo: pathlib.Path) -> None:
    """Why the server reads the session back: asked for CUDA where it cannot start,
    onnxruntime warns and runs on CPU. The request alone would report a GPU."""
    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime build has CUDA: tests/device/run.sh covers that case")
    with pytest.warns(UserWarning, match="not in available provider names"):
        session = ort.InferenceSession(
            str(mlp_repo / "mlp" / "1" / "model.onnx"), providers=[CUDA, CPU]
        )
    assert session.get_providers() == [CPU]
    placed = device.placement(
        requested=D.GPU, session_providers=session.get_providers(), available=[CUDA, CPU]
    )
    assert placed.fell_back and "CUDAExecutionProvider could not start" in placed.fallback_reason


def served(repo: pathlib.Path, requested: device.Device) -> model.ServedModel:
    options = model.ServerOptions(
        intra_op_threads=1, inter_op_threads=1, max_queue_size=8, device=requested
    )
    entry = repository.scan(repo)["mlp"]
    return model.ServedModel(entry=entry, version=1, options=options)


def exposed_providers(registry: metrics.Metrics) -> list[dict[str, str]]:
    text = registry.render().decode()
    return [
        sample.labels
        for family in text_string_to_metric_families(text)
        if family.name == metrics.EXECUTION_PROVIDER
        for sample in family.samples
        if sample.value == 1
    ]


def test_a_gpu_request_on_the_cpu_build_serves_on_cpu_and_says_so(
    mlp_repo: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    if set(device.GPU_PROVIDERS) & set(ort.get_available_providers()):
        pytest.skip("this onnxruntime build has GPU providers: tests/device/run.sh covers it")
    with caplog.at_level("WARNING"):
        mlp = served(mlp_repo, D.GPU)
    assert mlp.placement.fell_back and mlp.placement.provider == CPU
    assert "a GPU was requested" in caplog.text and "onnxruntime-gpu" in caplog.text
    # It still serves: the fallback keeps the model answering.
    out = mlp.session.run(None, {"INPUT0": np.ones((1, 64), np.float32)})
    assert out[0].shape == (1, 10)
    assert mlp.config_document()["instance_group"][0]["kind"] == "KIND_CPU"
    registry = metrics.Metrics()
    mlp.attach_metrics(registry)
    assert exposed_providers(registry) == [
        {"device": "gpu", "model": "mlp", "provider": CPU, "version": "1"}
    ]


def test_a_cpu_request_is_no_fallback(mlp_repo: pathlib.Path) -> None:
    mlp = served(mlp_repo, D.CPU)
    assert not mlp.placement.fell_back and mlp.providers == [CPU]
    registry = metrics.Metrics()
    mlp.attach_metrics(registry)
    assert exposed_providers(registry) == [
        {"device": "cpu", "model": "mlp", "provider": CPU, "version": "1"}
    ]


def test_device_flag_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(device.ENV, raising=False)
    assert server.parse_args(["--model-repository", "/m"]).device is D.AUTO
    monkeypatch.setenv(device.ENV, "gpu")
    assert server.parse_args(["--model-repository", "/m"]).device is D.GPU
    # The flag wins over the environment.
    assert server.parse_args(["--model-repository", "/m", "--device", "cpu"]).device is D.CPU
    monkeypatch.setenv(device.ENV, "tpu")
    with pytest.raises(SystemExit):
        server.parse_args(["--model-repository", "/m"])


async def test_queued_and_running_gauges_follow_the_batcher(mlp_repo: pathlib.Path) -> None:
    """The model server protocol's gauges, from a real model's batcher mid-execution."""
    mlp = served(mlp_repo, D.CPU)
    registry = metrics.Metrics()
    mlp.attach_metrics(registry)
    release = asyncio.Event()
    started = asyncio.Event()
    real_execute = mlp.batcher._execute
    loop = asyncio.get_running_loop()

    def held(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        loop.call_soon_threadsafe(started.set)
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result()
        return real_execute(inputs)

    mlp.batcher._execute = held
    mlp.batcher.start()
    try:
        first = asyncio.create_task(mlp.batcher.submit({"INPUT0": np.ones((1, 64), np.float32)}, 1))
        await started.wait()
        queued = [
            asyncio.create_task(mlp.batcher.submit({"INPUT0": np.ones((1, 64), np.float32)}, 1))
            for _ in range(3)
        ]

        def gauge(name: str) -> float:
            text = registry.render().decode()
            [family] = [f for f in text_string_to_metric_families(text) if f.name == name]
            return float(family.samples[0].value)

        # The three submissions run on this loop: wait until they are queued, not a fixed time.
        deadline = loop.time() + 10
        while gauge(metrics.QUEUED_REQUESTS) < 3 and loop.time() < deadline:
            await asyncio.sleep(0.005)
        assert gauge(metrics.RUNNING_REQUESTS) == 1
        assert gauge(metrics.QUEUED_REQUESTS) == 3
        release.set()
        await asyncio.gather(first, *queued)
        assert gauge(metrics.RUNNING_REQUESTS) == 0 and gauge(metrics.QUEUED_REQUESTS) == 0
    finally:
        release.set()
        await mlp.batcher.close()
