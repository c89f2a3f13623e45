"""ONNX models built in code for the runtime tests and the benchmark: nothing is downloaded.

- mlp: FP32 [-1, 64] -> 256 -> ReLU -> 10; small, so serving overhead dominates.
- dense: any widths, e.g. the benchmark's 256-1024-1024-10 MLP (the runtime issue's model).
- heavy: FP32 [-1, 512] -> four 512x512 layers with ReLU -> 512; compute dominates.
- addsub: two INT32 [-1, 16] inputs -> their sum and difference (Triton's "simple" model).
- fixed: FP32 [4] -> doubled; no batch dimension, so it is never batched.
"""

from __future__ import annotations

import itertools
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # Old enough for any onnxruntime this project supports.


def _save(graph: onnx.GraphProto, path: pathlib.Path) -> pathlib.Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _dense_stack(widths: list[int], *, seed: int, name: str) -> onnx.GraphProto:
    """MatMul + Add layers with ReLU between them; weights seeded, so results are repeatable."""
    rng = np.random.default_rng(seed)
    nodes = []
    initializers = []
    current = "INPUT0"
    for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        weight = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        bias = (rng.standard_normal(fan_out) * 0.1).astype(np.float32)
        initializers += [
            numpy_helper.from_array(weight, f"w{layer}"),
            numpy_helper.from_array(bias, f"b{layer}"),
        ]
        nodes += [
            helper.make_node("MatMul", [current, f"w{layer}"], [f"mm{layer}"]),
            helper.make_node("Add", [f"mm{layer}", f"b{layer}"], [f"add{layer}"]),
        ]
        current = f"add{layer}"
        if layer < len(widths) - 2:
            nodes.append(helper.make_node("Relu", [current], [f"relu{layer}"]))
            current = f"relu{layer}"
    nodes.append(helper.make_node("Identity", [current], ["OUTPUT0"]))
    return helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", widths[0]])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", widths[-1]])],
        initializer=initializers,
    )


def build_mlp(path: pathlib.Path, *, seed: int = 0) -> pathlib.Path:
    return _save(_dense_stack([64, 256, 10], seed=seed, name="mlp"), path)


def build_dense(path: pathlib.Path, widths: list[int], *, name: str, seed: int = 0) -> pathlib.Path:
    return _save(_dense_stack(widths, seed=seed, name=name), path)


def build_heavy(path: pathlib.Path, *, width: int = 512, layers: int = 4) -> pathlib.Path:
    return _save(_dense_stack([width] * (layers + 1), seed=1, name="heavy"), path)


def build_addsub(path: pathlib.Path) -> pathlib.Path:
    shape: list[str | int] = ["batch", 16]
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "addsub",
        [
            helper.make_tensor_value_info("INPUT0", TensorProto.INT32, shape),
            helper.make_tensor_value_info("INPUT1", TensorProto.INT32, shape),
        ],
        [
            helper.make_tensor_value_info("OUTPUT0", TensorProto.INT32, shape),
            helper.make_tensor_value_info("OUTPUT1", TensorProto.INT32, shape),
        ],
    )
    return _save(graph, path)


def build_fixed(path: pathlib.Path) -> pathlib.Path:
    two = numpy_helper.from_array(np.array([2.0], dtype=np.float32), "two")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["INPUT0", "two"], ["OUTPUT0"])],
        "fixed",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [4])],
        initializer=[two],
    )
    return _save(graph, path)
