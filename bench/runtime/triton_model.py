"""Triton python-backend model that serves an ONNX file with onnxruntime (the bench's Triton side).

Triton 2.51 from the nvidia-pytriton wheel has no onnxruntime backend, so this is how it serves
ONNX: Triton's dynamic batcher hands `execute` a list of requests; they are concatenated into
one onnxruntime run and split back, exactly what kubeinfer's batcher does in-process. Copied
into the generated Triton model repository as `<model>/1/model.py` by bench.py.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        folder = os.path.join(args["model_repository"], args["model_version"])
        options = ort.SessionOptions()
        # The same thread count as kubeinfer-onnx-server gets, passed through the config.
        options.intra_op_num_threads = int(config["parameters"]["threads"]["string_value"])
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            os.path.join(folder, "model.onnx"),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def execute(self, requests: list[Any]) -> list[Any]:
        arrays = {
            name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
            for name in self.input_names
        }
        rows = [a.shape[0] for a in arrays[self.input_names[0]]]
        feeds = {
            name: parts[0] if len(parts) == 1 else np.concatenate(parts)
            for name, parts in arrays.items()
        }
        outputs = self.session.run(self.output_names, feeds)
        responses = []
        offset = 0
        for count in rows:
            tensors = [
                pb_utils.Tensor(name, out[offset : offset + count])
                for name, out in zip(self.output_names, outputs, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            offset += count
        return responses
