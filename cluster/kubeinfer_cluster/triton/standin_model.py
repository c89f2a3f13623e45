"""The stand-in model.py that lets the pytriton wheel's Triton (python backend only) load what
kubeinfer generates for other backends, and plays the user's model for format python.

It runs onnxruntime on the one model file in its version directory (``model.onnx``,
``model.plan``, ``model.pt``: the tests store an ONNX graph under the name the real backend
would open), on the whole batch Triton's dynamic batcher hands it, and fills a config with no
inputs or outputs from the ONNX graph - what the ONNX Runtime and TensorRT backends do when
they auto-complete a config. Copied into ``<model>/<version>/model.py`` (by the tests and the
local kubelet); it runs inside Triton's python backend, in the Triton virtualenv (numpy<2), not
in the project's.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

HERE = os.path.dirname(os.path.abspath(__file__))
_TRITON_TYPES = {
    "tensor(float)": "TYPE_FP32",
    "tensor(float16)": "TYPE_FP16",
    "tensor(double)": "TYPE_FP64",
    "tensor(int64)": "TYPE_INT64",
    "tensor(int32)": "TYPE_INT32",
    "tensor(int8)": "TYPE_INT8",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(bool)": "TYPE_BOOL",
}


def _model_file(folder: str) -> str:
    files = [f for f in os.listdir(folder) if f != "model.py" and not f.startswith((".", "_"))]
    if len(files) != 1:
        raise pb_utils.TritonModelException(f"expected one model file in {folder}, found {files}")
    return os.path.join(folder, files[0])


def _session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # The tests share two cores with everything else.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config: Any) -> Any:
        current = config.as_dict()
        if current.get("input") and current.get("output"):
            return config
        session = _session(_model_file(HERE))
        skip = 1 if current.get("max_batch_size", 0) > 0 else 0

        def dims(shape: list[Any]) -> list[int]:
            return [d if isinstance(d, int) else -1 for d in shape[skip:]]

        if not current.get("input"):
            for tensor in session.get_inputs():
                config.add_input(
                    {
                        "name": tensor.name,
                        "data_type": _TRITON_TYPES[tensor.type],
                        "dims": dims(tensor.shape),
                    }
                )
        if not current.get("output"):
            for tensor in session.get_outputs():
                config.add_output(
                    {
                        "name": tensor.name,
                        "data_type": _TRITON_TYPES[tensor.type],
                        "dims": dims(tensor.shape),
                    }
                )
        return config

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.session = _session(_model_file(folder))
        self.batching = config["max_batch_size"] > 0
        self.inputs = [t.name for t in self.session.get_inputs()]
        self.outputs = [t.name for t in self.session.get_outputs()]
        self.device_s = float(os.environ.get("KUBEINFER_EMULATE_DEVICE_MS") or 0) / 1000.0

    def execute(self, requests: list[Any]) -> list[Any]:
        started = time.monotonic()
        try:
            return self._execute(requests)
        finally:
            # An emulated GPU (the local cluster's device-ms annotation): an execution takes at
            # least this long, however fast the host's CPU ran it.
            time.sleep(max(0.0, started + self.device_s - time.monotonic()))

    def _execute(self, requests: list[Any]) -> list[Any]:
        feeds = [
            {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs}
            for r in requests
        ]
        if not self.batching:
            return [self._respond(self.session.run(self.outputs, f)) for f in feeds]
        # One run for the whole dynamic batch, split back per request.
        merged = {n: np.concatenate([f[n] for f in feeds]) for n in self.inputs}
        results = self.session.run(self.outputs, merged)
        responses, offset = [], 0
        for feed in feeds:
            rows = feed[self.inputs[0]].shape[0]
            responses.append(self._respond([r[offset : offset + rows] for r in results]))
            offset += rows
        return responses

    def _respond(self, arrays: list[Any]) -> Any:
        tensors = [pb_utils.Tensor(n, a) for n, a in zip(self.outputs, arrays, strict=True)]
        return pb_utils.InferenceResponse(output_tensors=tensors)
