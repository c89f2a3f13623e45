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
import shutil
from typing import Any

import numpy as np
import onnxruntime
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from tritonclient.utils import np_to_triton_dtype

from kubeinfer.core import api, builders, triton
from kubeinfer.storage.main import storage_init_main
from tests import triton_server
from tests.integration.triton import standin

REPO = pathlib.Path(__file__).resolve().parents[3]
RUNTIMES = {
    doc["metadata"]["name"]: api.parse_runtime(doc["spec"])
    for path in sorted((REPO / "runtimes" / "defaults").glob("*.yaml"))
    for doc in yaml.safe_load_all(path.read_text())
}
# A model directory as its authors might ship it: a config.pbtxt of their own (which the
# generated one must not hide) beside the version directory.
SHIPPED_CONFIG = """\
name: "whatever-the-authors-called-it"
max_batch_size: 4
instance_group [ { kind: KIND_GPU, count: 1 } ]  # every visible GPU: not what the pod has
parameters { key: "shipped_by", value: { string_value: "the model's authors" } }
"""
# Metrics the autoscaler scrapes that only exist with a GPU (NVML); tests/device checks them.
NEEDS_GPU = {"gpu_utilization"}


def _triton_examples() -> list[Any]:
    found = []
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "InferenceService":
                spec = api.parse_spec(doc["spec"])
                if builders.choose_runtime(spec, RUNTIMES)[0] == "triton":
                    found.append(pytest.param(doc, id=path.name))
    return found


TRITON_EXAMPLES = _triton_examples()


def test_examples_exercise_every_triton_path() -> None:
    """The parametrized test below must never pass because it has nothing to run."""
    formats = {api.parse_spec(p.values[0]["spec"]).model.format for p in TRITON_EXAMPLES}
    assert {api.ModelFormat.TENSORRT, api.ModelFormat.PYTHON, api.ModelFormat.PYTORCH} <= formats


@pytest.mark.parametrize("doc", TRITON_EXAMPLES)
def test_example_loads_in_real_triton_and_serves(
    doc: dict[str, Any], triton_install: triton_server.Installation, tmp_path: pathlib.Path
) -> None:
    spec = api.parse_spec(doc["spec"])
    runtime_name, runtime = builders.choose_runtime(spec, RUNTIMES)
    owner = builders.Owner(name=doc["metadata"]["name"], namespace="default", uid="u")
    config_map = builders.build_config_map(owner, spec, runtime_name, runtime)
    pod = builders.build_deployment(owner, spec, runtime_name, runtime)["spec"]["template"]
    pod_spec = pod["spec"]
    reference = standin.build_standin_onnx(spec.model, tmp_path / "reference.onnx")

    # The init container, with its own arguments: the URI points at a local copy of what the
    # store would hold, the paths at this test's directories.
    generated = tmp_path / "generated"
    generated.mkdir()
    for name, content in config_map["data"].items():
        (generated / name).write_text(content)
    repository = tmp_path / "repository"
    init_args = _local_init_args(
        pod_spec["initContainers"][0]["args"],
        uri=_model_source(spec, reference, tmp_path / "store"),
        repository=repository,
        generated=generated,
    )
    assert storage_init_main(init_args) == 0
    model_dir = repository / spec.model.name
    version_dir = model_dir / str(spec.model.version)
    assert (version_dir / triton.model_file_name(spec.model.format)).is_file(), sorted(
        p.name for p in version_dir.iterdir()
    )

    config = model_dir / "config.pbtxt"
    config.write_text(standin.swap_for_cpu_standin(config.read_text()))
    if spec.model.format is not api.ModelFormat.PYTHON:
        standin.install_standin_code(version_dir)

    server = pod_spec["containers"][0]
    assert server["command"] == ["tritonserver"]
    process = triton_server.TritonProcess(
        triton_install, repository, server["args"], tmp_path / "tritonserver.log"
    )
    try:
        process.wait_ready()
        _check_loaded_config(process, spec)
        _check_answers(process, spec, reference)
        _check_metrics(process, spec, runtime)
    finally:
        process.stop()


def _local_init_args(
    args: list[str], *, uri: str, repository: pathlib.Path, generated: pathlib.Path
) -> list[str]:
    command, _, _, *options = args
    assert command == "storage-init"
    local = [option.replace(builders.GENERATED_CONFIG_DIR, str(generated)) for option in options]
    return [uri, str(repository), *local]


def _model_source(spec: api.InferenceServiceSpec, onnx_model: pathlib.Path, store: Any) -> str:
    """What the example's storageUri holds, as a local file:// URI."""
    store.mkdir()
    uri = spec.model.storage_uri
    if not uri.endswith("/"):
        # One object, named as in its URL; the storage initializer renames it.
        single = store / uri.rsplit("/", 1)[-1]
        shutil.copyfile(onnx_model, single)
        return single.as_uri()
    if spec.model.format is api.ModelFormat.PYTHON:
        # A version directory: the user's model.py and what it loads.
        shutil.copyfile(standin.STANDIN_MODEL, store / "model.py")
        shutil.copyfile(onnx_model, store / "model.onnx")
        return store.as_uri()
    version = store / str(spec.model.version)
    version.mkdir()
    shutil.copyfile(onnx_model, version / triton.model_file_name(spec.model.format))
    (store / "config.pbtxt").write_text(SHIPPED_CONFIG)
    return store.as_uri()


def _check_loaded_config(
    process: triton_server.TritonProcess, spec: api.InferenceServiceSpec
) -> None:
    """Triton's view of the model is the spec's (after the CPU swap)."""
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
    if spec.model.storage_uri.endswith("/") and spec.model.format is not api.ModelFormat.PYTHON:
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
        if field in NEEDS_GPU:
            continue
        assert f'{name}{{model="{spec.model.name}"' in text, f"{field}: {name} not exported"
