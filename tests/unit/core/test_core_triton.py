"""Triton configs: every rendered config.pbtxt parses as Triton's own ModelConfig proto, so a
wrong field name or enum value fails here; the instance group follows the replica's shape."""

from __future__ import annotations

import pathlib
from typing import Any

import pydantic
import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from kubeinfer.core import api, builders, triton

REPO = pathlib.Path(__file__).resolve().parents[3]
KIND = model_config_pb2.ModelInstanceGroup
TRITON_RT = api.InferenceRuntimeSpec(
    image="triton:1", formats=[api.RuntimeFormat(name=f) for f in api.ModelFormat]
)
ONNX_RT = api.InferenceRuntimeSpec(
    image="onnx:1",
    formats=[api.RuntimeFormat(name=api.ModelFormat.ONNX)],
    batching_config=api.BatchingConfigKind.KUBEINFER_JSON,
)
OWNER = builders.Owner(name="m", namespace="ns", uid="u")
SIGNATURE = {
    "inputs": [{"name": "x", "datatype": "FP32", "dims": [4]}],
    "outputs": [{"name": "y", "datatype": "FP32", "dims": [2]}],
}


def parse(text: str) -> Any:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def spec(fmt: str = "onnx", uri: str = "https://h/m.onnx", **kw: Any) -> api.InferenceServiceSpec:
    model: dict[str, Any] = {"name": "m", "format": fmt, "storageUri": uri}
    if fmt in ("pytorch", "python"):
        model.update(SIGNATURE)
    model.update(kw.pop("model", {}))
    return api.parse_spec({"model": model, **kw})


def _examples() -> list[Any]:
    return [
        pytest.param(doc, id=f"{path.name}:{doc['metadata']['name']}")
        for path in sorted((REPO / "examples").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "InferenceService"
    ]


@pytest.mark.parametrize("doc", _examples())
def test_every_example_renders_a_config_triton_parses(doc: dict[str, Any]) -> None:
    # Whatever runtime it resolves to: any example can be given `runtime: triton`.
    s = api.parse_spec(doc["spec"])
    config = parse(triton.render_config(s))
    assert config.name == s.model.name
    assert config.max_batch_size == s.batching.max_batch_size
    (group,) = config.instance_group
    if s.gpu.count == 0:
        assert group.kind == KIND.KIND_CPU
    elif s.gpu.parallelism is api.GPUParallelism.MODEL:
        assert group.kind == KIND.KIND_MODEL and not group.gpus
    else:
        assert group.kind == KIND.KIND_GPU and list(group.gpus) == list(range(s.gpu.count))
    assert [i.name for i in config.input] == [t.name for t in s.model.inputs]


def test_the_tensor_parallel_example_is_one_sharded_instance() -> None:
    doc = yaml.safe_load((REPO / "examples" / "tensor-parallel.yaml").read_text())
    config = parse(triton.render_config(api.parse_spec(doc["spec"])))
    assert config.backend == "python"
    assert [(g.kind, g.count) for g in config.instance_group] == [(KIND.KIND_MODEL, 1)]


@pytest.mark.parametrize(
    "s,check",
    [
        (spec(), lambda c: c.platform == "onnxruntime_onnx" and not c.backend),
        (spec("tensorrt", gpu={"count": 1}), lambda c: c.platform == "tensorrt_plan"),
        (spec("pytorch"), lambda c: c.platform == "pytorch_libtorch"),
        (spec("tensorflow", "s3://bucket/m/"), lambda c: c.platform == "tensorflow_savedmodel"),
        (spec("python", "s3://bucket/m/"), lambda c: c.backend == "python" and not c.platform),
        # CPU: one instance; batching does the rest.
        (spec(), lambda c: [(g.kind, g.count) for g in c.instance_group] == [(KIND.KIND_CPU, 1)]),
        # One copy per GPU of the pod, listed, never "every visible GPU" by omission.
        (
            spec(gpu={"count": 3}),
            lambda c: (
                [(g.kind, g.count, list(g.gpus)) for g in c.instance_group]
                == [(KIND.KIND_GPU, 1, [0, 1, 2])]
            ),
        ),
        # A MIG slice is GPU 0 inside the pod.
        (
            spec(gpu={"count": 1, "resourceName": "nvidia.com/mig-1g.10gb"}),
            lambda c: list(c.instance_group[0].gpus) == [0],
        ),
        (
            spec("python", "s3://bucket/m/", gpu={"count": 8, "parallelism": "Model"}),
            lambda c: [(g.kind, list(g.gpus)) for g in c.instance_group] == [(KIND.KIND_MODEL, [])],
        ),
        # No batching: no batcher, and Triton reads dims as the whole shape.
        (
            spec(batching={"maxBatchSize": 0}),
            lambda c: c.max_batch_size == 0 and not c.HasField("dynamic_batching"),
        ),
        (
            spec(
                batching={
                    "maxBatchSize": 64,
                    "preferredBatchSizes": [16, 32],
                    "maxQueueDelayMicroseconds": 100,
                }
            ),
            lambda c: (
                list(c.dynamic_batching.preferred_batch_size) == [16, 32]
                and c.dynamic_batching.max_queue_delay_microseconds == 100
            ),
        ),
        (spec(), lambda c: not c.HasField("version_policy")),
        (
            spec(model={"versionPolicy": {"policy": "All"}}),
            lambda c: c.version_policy.HasField("all"),
        ),
        (
            spec(model={"versionPolicy": {"policy": "Specific", "versions": [1, 3]}}),
            lambda c: list(c.version_policy.specific.versions) == [1, 3],
        ),
        (
            spec(
                model={
                    "inputs": [
                        {"name": "ids", "datatype": "INT64", "dims": [-1]},
                        {"name": "text", "datatype": "BYTES", "dims": [1]},
                        {"name": "mask", "datatype": "BOOL", "dims": [2, -1]},
                        {"name": "half", "datatype": "BF16", "dims": [8]},
                    ],
                    "outputs": [{"name": "probs:0", "datatype": "FP16", "dims": [3, 4]}],
                }
            ),
            lambda c: (
                [
                    (t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims))
                    for t in [*c.input, *c.output]
                ]
                == [
                    ("ids", "TYPE_INT64", [-1]),
                    ("text", "TYPE_STRING", [1]),
                    ("mask", "TYPE_BOOL", [2, -1]),
                    ("half", "TYPE_BF16", [8]),
                    ("probs:0", "TYPE_FP16", [3, 4]),
                ]
            ),
        ),
    ],
)
def test_edge_cases_parse_and_say_what_the_spec_says(
    s: api.InferenceServiceSpec, check: Any
) -> None:
    assert check(parse(triton.render_config(s)))


def test_every_v2_datatype_is_a_triton_datatype() -> None:
    for dtype in api.TensorDatatype:
        s = spec(model={"inputs": [{"name": "x", "datatype": dtype.value, "dims": [1]}]})
        parse(triton.render_config(s))


@pytest.mark.parametrize(
    "fmt,name",
    [
        ("onnx", "model.onnx"),
        ("tensorrt", "model.plan"),
        ("pytorch", "model.pt"),
        ("tensorflow", "model.savedmodel"),
        ("python", "model.py"),
    ],
)
def test_model_file_name_is_the_one_triton_opens(fmt: str, name: str) -> None:
    assert triton.model_file_name(api.ModelFormat(fmt)) == name


@pytest.mark.parametrize(
    "raw,message",
    [
        (
            {"model": {"name": "m", "format": "pytorch", "storageUri": "s3://bucket/k"}},
            "model.inputs and model.outputs are required for model.format pytorch",
        ),
        (
            {
                "model": {
                    "name": "m",
                    "format": "python",
                    "storageUri": "s3://bucket/k/",
                    "inputs": SIGNATURE["inputs"],
                }
            },
            "model.inputs and model.outputs are required for model.format python",
        ),
        (
            {
                "model": {"name": "m", "format": "onnx", "storageUri": "s3://bucket/k"},
                "gpu": {"count": 2, "parallelism": "Model"},
            },
            "gpu.parallelism Model needs model.format python",
        ),
        (
            {
                "model": {
                    "name": "m",
                    "format": "python",
                    "storageUri": "s3://bucket/k",
                    **SIGNATURE,
                },
                "gpu": {"count": 1, "parallelism": "Model"},
            },
            "gpu.count of at least 2",
        ),
        (
            {
                "model": {
                    "name": "m",
                    "format": "onnx",
                    "storageUri": "s3://bucket/k",
                    "inputs": [{"name": "x", "datatype": "FP32", "dims": [0]}],
                }
            },
            "dims entries must be -1 (any size) or positive",
        ),
        (
            {
                "model": {
                    "name": "m",
                    "format": "onnx",
                    "storageUri": "s3://bucket/k",
                    "inputs": [{"name": 'x" platform: "evil', "datatype": "FP32", "dims": [1]}],
                }
            },
            "model.inputs.0.name",
        ),
        (
            {"model": {"name": "m", "format": "tensorflow", "storageUri": "https://h/m.zip"}},
            "model.storageUri must be a directory",
        ),
    ],
)
def test_invalid_specs_name_the_field(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as err:
        api.parse_spec(raw)
    assert message in str(err.value)


def test_fetched_model_gets_the_config_through_the_storage_initializer() -> None:
    dep = builders.build_deployment(OWNER, spec("pytorch", "https://h/traced.pt"), "t", TRITON_RT)
    pod = dep["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert "--file-name=model.pt" in init["args"]
    assert f"--config={builders.GENERATED_CONFIG_DIR}/config.pbtxt" in init["args"]
    assert {
        "name": "model-config",
        "mountPath": builders.GENERATED_CONFIG_DIR,
        "readOnly": True,
    } in (init["volumeMounts"])
    server = pod["containers"][0]
    # Nothing is mounted inside the repository, so a shipped config.pbtxt is never hidden.
    assert [m["name"] for m in server["volumeMounts"]] == ["model-repository", "tmp"]
    assert server["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_claim_gets_the_config_mounted_beside_its_version() -> None:
    dep = builders.build_deployment(OWNER, spec(uri="pvc://c/m"), "t", TRITON_RT)
    pod = dep["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "model-config")
    assert mount["mountPath"] == "/mnt/models/m/config.pbtxt"


def test_onnx_server_keeps_its_mounted_json_and_gets_model_onnx() -> None:
    dep = builders.build_deployment(OWNER, spec(uri="https://h/resnet50.onnx"), "o", ONNX_RT)
    pod = dep["spec"]["template"]["spec"]
    assert "--file-name=model.onnx" in pod["initContainers"][0]["args"]
    assert not any(a.startswith("--config") for a in pod["initContainers"][0]["args"])
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "model-config")
    assert mount["mountPath"] == "/mnt/models/m/config.json"
