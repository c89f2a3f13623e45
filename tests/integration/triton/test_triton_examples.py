"""Every example whose runtime resolves to Triton: the config the operator generates, installed
by the storage initializer as the pod's init container would, loads in real Triton 2.51 and
serves answers equal to onnxruntime's, over HTTP and gRPC, with the metrics the autoscaler reads.

The only liberty taken is ``standin.swap_for_cpu_standin`` (platform -> python stand-in,
KIND_GPU -> KIND_CPU), because the pytriton wheel has only the python backend and this machine
has no GPU; everything else - file names, the merge with a shipped config.pbtxt, batching,
instance groups, version policy, the runtime's own command-line flags - is what a pod gets.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np
import onnxruntime
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import np_to_triton_dtype

from kubeinfer.core import api, triton
from tests import triton_server
from tests.integration.triton import pod_repository, standin

# Metrics the autoscaler scrapes that Triton exports only when NVML finds a GPU: this machine
# has none, so they are left to a check on a GPU machine.
NEEDS_GPU = {"gpu_utilization"}
TRITON_EXAMPLES = [pytest.param(doc, id=name) for name, doc in pod_repository.triton_examples()]


def test_examples_exercise_every_triton_path() -> None:
    """The parametrized test below must never pass because it has nothing to run."""
    formats = {api.parse_spec(p.values[0]["spec"]).model.format for p in TRITON_EXAMPLES}
    assert {api.ModelFormat.TENSORRT, api.ModelFormat.PYTHON, api.ModelFormat.PYTORCH} <= formats


@pytest.mark.parametrize("doc", TRITON_EXAMPLES)
def test_example_loads_in_real_triton_and_serves(
    doc: dict[str, Any], triton_install: triton_server.Installation, tmp_path: pathlib.Path
) -> None:
    pod = pod_repository.build(doc, tmp_path)
    spec = pod.spec
    # Triton opens this name in the version directory; a URL's own name would not load.
    assert (pod.version_dir / triton.model_file_name(spec.model.format)).is_file(), sorted(
        p.name for p in pod.version_dir.iterdir()
    )

    config = pod.model_dir / "config.pbtxt"
    config.write_text(standin.swap_for_cpu_standin(config.read_text()))
    if spec.model.format is not api.ModelFormat.PYTHON:
        standin.install_standin_code(pod.version_dir)

    assert pod.server["command"] == ["tritonserver"]
    process = triton_server.TritonProcess(
        triton_install, pod.root, pod.server["args"], tmp_path / "tritonserver.log"
    )
    try:
        process.wait_ready()
        _check_loaded_config(process, pod)
        _check_answers(process, spec, pod.reference)
        _check_metrics(process, spec, pod.runtime)
    finally:
        process.stop()


def _check_loaded_config(
    process: triton_server.TritonProcess, pod: pod_repository.PodRepository
) -> None:
    """Triton's view of the model is the spec's (after the CPU swap)."""
    spec = pod.spec
    status, body = process.get(f"/v2/models/{spec.model.name}/config")
    assert status == 200, body
    loaded = json.loads(body)
    assert loaded["name"] == spec.model.name
    assert loaded["max_batch_size"] == spec.batching.max_batch_size
    batching = loaded["dynamic_batching"]
    assert batching["max_queue_delay_microseconds"] == spec.batching.max_queue_delay_microseconds
    # With none preferred, Triton's auto-complete prefers max_batch_size.
    preferred = spec.batching.preferred_batch_sizes or [spec.batching.max_batch_size]
    assert batching["preferred_batch_size"] == preferred
    kinds = [g["kind"] for g in loaded["instance_group"]]
    expected = "KIND_MODEL" if spec.gpu.parallelism is api.GPUParallelism.MODEL else "KIND_CPU"
    assert kinds == [expected]
    assert [t["name"] for t in loaded["input"]] == [t.name for t in spec.model.inputs] or (
        not spec.model.inputs
    )
    if pod.ships_config:
        # Merged, not hidden: the shipped file's parameters survive, the spec's fields win.
        assert loaded["parameters"]["shipped_by"]["string_value"] == "the model's authors"


def _check_answers(
    process: triton_server.TritonProcess, spec: api.InferenceServiceSpec, onnx_model: pathlib.Path
) -> None:
    session = onnxruntime.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])
    tensor_in, tensor_out = session.get_inputs()[0], session.get_outputs()[0]
    data = standin.sample_input(spec.model, tensor_in.shape, rows=3)
    (expected,) = session.run([tensor_out.name], {tensor_in.name: data})
    dtype = np_to_triton_dtype(data.dtype)

    http = httpclient.InferenceServerClient(process.http_url)
    try:
        request = httpclient.InferInput(tensor_in.name, list(data.shape), dtype)
        request.set_data_from_numpy(data, binary_data=True)
        got = http.infer(spec.model.name, [request]).as_numpy(tensor_out.name)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    finally:
        http.close()

    grpc = grpcclient.InferenceServerClient(process.grpc_url)
    try:
        request = grpcclient.InferInput(tensor_in.name, list(data.shape), dtype)
        request.set_data_from_numpy(data)
        got = grpc.infer(spec.model.name, [request]).as_numpy(tensor_out.name)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    finally:
        grpc.close()


def _check_metrics(
    process: triton_server.TritonProcess,
    spec: api.InferenceServiceSpec,
    runtime: api.InferenceRuntimeSpec,
) -> None:
    text = process.metrics()
    for field, name in runtime.metrics.model_dump().items():
        if field in NEEDS_GPU or not isinstance(name, str):
            continue  # the GPU family needs a GPU; the scale is a number, not a name
        assert f'{name}{{model="{spec.model.name}"' in text, f"{field}: {name} not exported"
