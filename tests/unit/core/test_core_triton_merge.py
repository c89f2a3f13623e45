"""Merging the generated config.pbtxt over a shipped one: the spec wins for what it writes, the
shipped file keeps the rest; every result parses as Triton's ModelConfig; merging is idempotent."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from kubeinfer.core import api, triton, triton_merge

KIND = model_config_pb2.ModelInstanceGroup


def generated(**kw: Any) -> str:
    model = {"name": "resnet", "format": "onnx", "storageUri": "s3://bucket/resnet/"}
    model.update(kw.pop("model", {}))
    return triton.render_config(api.parse_spec({"model": model, "gpu": {"count": 2}, **kw}))


def parse(text: str) -> Any:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


SHIPPED = """
# Exported by the training pipeline.
name: "resnet50_v1"   # not the directory's name
backend: "onnxruntime"
max_batch_size: 8
input [
  {
    name: "images"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, 224, 224 ]
  }
]
output [ { name: "probs", data_type: TYPE_FP32, dims: [ 1000 ], label_filename: "labels.txt" } ]
instance_group [ { kind: KIND_GPU, count: 2 } ]
dynamic_batching { max_queue_delay_microseconds: 100 }
optimization { execution_accelerators { gpu_execution_accelerator : [ {
  name : "tensorrt"
  parameters { key: "precision_mode" value: "FP16" }
} ] } }
parameters { key: "note" value: { string_value: "braces } and # in strings survive" } }
model_warmup [ { name: "w", batch_size: 1, inputs { key: "images" value: {
  data_type: TYPE_FP32, dims: [ 3, 224, 224 ], zero_data: true } } } ]
"""


def test_the_spec_wins_for_what_it_writes_and_the_shipped_rest_is_kept() -> None:
    merged = parse(triton_merge.merge(generated(), SHIPPED))
    assert merged.name == "resnet"
    # platform and backend are one choice: ours, and the shipped backend is gone.
    assert merged.platform == "onnxruntime_onnx" and not merged.backend
    assert merged.max_batch_size == 8  # the spec's default, not the file's (also 8)
    assert merged.dynamic_batching.max_queue_delay_microseconds == 0
    assert [(g.kind, g.count, list(g.gpus)) for g in merged.instance_group] == [
        (KIND.KIND_GPU, 1, [0, 1])
    ]
    # Kept: the shipped signature (the spec lists none), optimization, parameters, warmup.
    assert [i.name for i in merged.input] == ["images"]
    assert merged.input[0].format == model_config_pb2.ModelInput.FORMAT_NCHW
    assert merged.output[0].label_filename == "labels.txt"
    assert merged.optimization.execution_accelerators.gpu_execution_accelerator[0].name == (
        "tensorrt"
    )
    assert merged.parameters["note"].string_value == "braces } and # in strings survive"
    assert merged.model_warmup[0].name == "w"


def test_a_signature_in_the_spec_replaces_the_shipped_one() -> None:
    ours = generated(
        model={
            "inputs": [{"name": "x", "datatype": "FP32", "dims": [3, 224, 224]}],
            "outputs": [{"name": "y", "datatype": "FP32", "dims": [1000]}],
        }
    )
    merged = parse(triton_merge.merge(ours, SHIPPED))
    assert [i.name for i in merged.input] == ["x"]
    assert [o.name for o in merged.output] == ["y"]


def test_a_shipped_sequence_batcher_wins_over_dynamic_batching() -> None:
    shipped = 'sequence_batching { max_sequence_idle_microseconds: 5000000 }\nplatform: "x"\n'
    text = triton_merge.merge(generated(), shipped)
    merged = parse(text)  # a oneof set twice would not parse
    assert merged.WhichOneof("scheduling_choice") == "sequence_batching"
    assert merged.sequence_batching.max_sequence_idle_microseconds == 5000000
    assert merged.platform == "onnxruntime_onnx"
    assert "dynamic_batching" not in text


@pytest.mark.parametrize(
    "shipped",
    [
        "",
        "# only a comment\n",
        SHIPPED,
        'sequence_batching { }\nparameters { key: "k", value: { string_value: "v" } }',
        "input { name: 'a' data_type: TYPE_INT8 dims: -1 } input { name: 'b' "
        "data_type: TYPE_INT8 dims: 1 };",
    ],
)
def test_merging_is_idempotent_and_parses(shipped: str) -> None:
    once = triton_merge.merge(generated(), shipped)
    assert triton_merge.merge(generated(), once) == once
    parse(once)


def test_nothing_shipped_means_the_generated_config_as_is() -> None:
    assert triton_merge.merge(generated(), "") == generated()


@pytest.mark.parametrize(
    "shipped,where",
    [
        ('name: "unterminated\n', "line 1"),
        ("instance_group [ { kind: KIND_GPU }\n", "line 1, column 16: '[' is never closed"),
        ("max_batch_size: 8\n}\n", "line 2, column 1"),
        ("dynamic_batching { ] }", "unbalanced"),
        ("max_batch_size:", "a value is missing"),
    ],
)
def test_a_broken_shipped_config_is_reported_with_its_position(shipped: str, where: str) -> None:
    with pytest.raises(triton_merge.ConfigSyntaxError) as err:
        triton_merge.merge(generated(), shipped)
    assert where in str(err.value)


def test_fields_are_read_with_their_extent() -> None:
    fields = triton_merge.parse_fields(
        'a: 1 b { c: "}" d [1, 2] } e: "x" "y"; f < g: -1.5e3 > h: [ { } ]'
    )
    assert [(f.name, f.text) for f in fields] == [
        ("a", "a: 1"),
        ("b", 'b { c: "}" d [1, 2] }'),
        ("e", 'e: "x" "y"'),
        ("f", "f < g: -1.5e3 >"),
        ("h", "h: [ { } ]"),
    ]
