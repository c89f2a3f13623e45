"""What the Triton tier changes so a CPU-only Triton with only the python backend can load
kubeinfer's configs - and nothing more - plus the stand-in models it serves.

- ``swap_for_cpu_standin``: the ONE change made to a config the operator generated (and the
  storage initializer merged): a platform the pytriton wheel has no backend for becomes
  ``backend: "python"`` (served by standin_model.py), and KIND_GPU becomes KIND_CPU (this
  machine has no GPU; a ``gpus`` list is meaningless for KIND_CPU, so it goes with it). It
  checks, on Triton's own proto, that nothing else differs.
- ``build_standin_onnx``: an ONNX graph with the model's tensor signature (the spec's, when it
  lists one), so the answer can be checked against onnxruntime directly.
- ``kubelet_termination_message``: what the kubelet keeps of a failed container's log under
  ``terminationMessagePolicy: FallbackToLogsOnError``.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kubeinfer.core import api
from kubeinfer_cluster.triton import standin
from tests.integration.runtime import runtime_models

STANDIN_MODEL = standin.STANDIN_MODEL
swap_for_cpu_standin = standin.swap_for_cpu_standin
install_standin_code = standin.install_standin_code
VOCABULARY = 1000  # ids a stand-in with an INT64 input accepts

# kubelet: the last 80 lines or 2048 bytes of the log, whichever is smaller.
_TERMINATION_LINES = 80
_TERMINATION_BYTES = 2048


def build_standin_onnx(model: api.ModelSpec, path: pathlib.Path) -> pathlib.Path:
    """An ONNX graph with ``model``'s signature: the tests' MLP when the spec lists none
    (the real backend would read it from the model), else one input -> one output."""
    if not model.inputs:
        return runtime_models.build_mlp(path)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise NotImplementedError(
            f"no stand-in for {len(model.inputs)} inputs and {len(model.outputs)} outputs: "
            "extend build_standin_onnx for this example"
        )
    tensor_in, tensor_out = model.inputs[0], model.outputs[0]
    if tensor_out.datatype is not api.TensorDatatype.FP32 or -1 in tensor_out.dims:
        raise NotImplementedError(f"no stand-in for output {tensor_out}")
    width_out = int(np.prod(tensor_out.dims))
    rng = np.random.default_rng(7)
    nodes: list[onnx.NodeProto] = []
    weights: list[onnx.TensorProto] = []
    if tensor_in.datatype is api.TensorDatatype.INT64 and tensor_in.dims == [-1]:
        # Token ids: embed, average over the sequence, project (a tiny language model).
        hidden = 16
        table = rng.standard_normal((VOCABULARY, hidden)).astype(np.float32)
        weights.append(numpy_helper.from_array(table, "embedding"))
        nodes += [
            helper.make_node("Gather", ["embedding", tensor_in.name], ["embedded"]),
            helper.make_node("ReduceMean", ["embedded"], ["pooled"], axes=[1], keepdims=0),
        ]
        features, width_in = "pooled", hidden
        onnx_in = TensorProto.INT64
        shape_in: list[int | str] = ["batch", "sequence"]
    elif tensor_in.datatype is api.TensorDatatype.FP32 and len(tensor_in.dims) == 1:
        features, width_in = tensor_in.name, tensor_in.dims[0]
        onnx_in = TensorProto.FLOAT
        shape_in = ["batch", width_in]
    else:
        raise NotImplementedError(f"no stand-in for input {tensor_in}")
    projection = (rng.standard_normal((width_in, width_out)) / np.sqrt(width_in)).astype(np.float32)
    weights.append(numpy_helper.from_array(projection, "projection"))
    nodes.append(helper.make_node("MatMul", [features, "projection"], ["projected"]))
    nodes.append(
        helper.make_node("Reshape", ["projected", "out_shape"], [tensor_out.name], allowzero=0)
    )
    weights.append(
        numpy_helper.from_array(np.array([-1, *tensor_out.dims], dtype=np.int64), "out_shape")
    )
    graph = helper.make_graph(
        nodes,
        "standin",
        [helper.make_tensor_value_info(tensor_in.name, onnx_in, shape_in)],
        [
            helper.make_tensor_value_info(
                tensor_out.name, TensorProto.FLOAT, ["batch", *tensor_out.dims]
            )
        ],
        initializer=weights,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 8  # what the onnxruntime in Triton's virtualenv reads, too
    onnx.checker.check_model(onnx_model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(onnx_model, str(path))
    return path


def sample_input(model: api.ModelSpec, shape: list[int | str], rows: int) -> np.ndarray:
    """Random data for the stand-in's one input, ``rows`` requests deep."""
    rng = np.random.default_rng(rows)
    if model.inputs and model.inputs[0].datatype is api.TensorDatatype.INT64:
        return rng.integers(0, VOCABULARY, size=(rows, 12), dtype=np.int64)
    width = shape[-1]
    assert isinstance(width, int)
    return rng.standard_normal((rows, width)).astype(np.float32)


def kubelet_termination_message(log: str) -> str:
    lines = log.splitlines(keepends=True)[-_TERMINATION_LINES:]
    tail = "".join(lines).encode()[-_TERMINATION_BYTES:]
    return tail.decode(errors="replace")
