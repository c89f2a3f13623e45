"""Triton's per-model config.pbtxt, rendered from an InferenceService spec. Pure: no I/O.

Owns: what kubeinfer tells Triton about one model - its platform or backend per format, the
tensor signature when the spec states one, batching, the instance group for the replica's
shape, the version policy - and the file name Triton looks for in a version directory.

The instance group follows the pod, not the node: a replica sees exactly the GPUs it asked
for, numbered from 0 (the device plugin exposes only those). Data parallel puts one whole copy
on each of them, stated as an explicit ``gpus`` list (Triton's default without the list is
"one copy per visible GPU", which is the same here but says nothing). Model parallel is one
KIND_MODEL instance that places itself across all of them, which only a backend that shards
can do (the python backend: vLLM, a torch ``device_map``); the API admits it for format python
only. A CPU replica gets one KIND_CPU instance, batching doing the rest.

Every config this module renders parses as ``inference.ModelConfig`` (the unit tests parse
each one with Triton's own proto); the storage initializer merges it with a config.pbtxt
shipped in the model directory (``core.triton_merge``).
"""

from __future__ import annotations

from kubeinfer.core import api

# format -> (field, value): Triton chooses the backend from one or the other.
_PLATFORMS: dict[api.ModelFormat, tuple[str, str]] = {
    api.ModelFormat.ONNX: ("platform", "onnxruntime_onnx"),
    api.ModelFormat.TENSORRT: ("platform", "tensorrt_plan"),
    api.ModelFormat.PYTORCH: ("platform", "pytorch_libtorch"),
    api.ModelFormat.TENSORFLOW: ("platform", "tensorflow_savedmodel"),
    api.ModelFormat.PYTHON: ("backend", "python"),
}

# The name each backend opens in <model>/<version>/ when the config names no other
# (Triton's default_model_filename); a single downloaded file is installed under it.
_MODEL_FILES: dict[api.ModelFormat, str] = {
    api.ModelFormat.ONNX: "model.onnx",
    api.ModelFormat.TENSORRT: "model.plan",
    api.ModelFormat.PYTORCH: "model.pt",
    api.ModelFormat.TENSORFLOW: "model.savedmodel",
    api.ModelFormat.PYTHON: "model.py",
}

# The v2 protocol's datatype names -> Triton's DataType enum; BYTES is TYPE_STRING there.
_DATA_TYPES: dict[api.TensorDatatype, str] = {
    dtype: "TYPE_STRING" if dtype is api.TensorDatatype.BYTES else f"TYPE_{dtype.value}"
    for dtype in api.TensorDatatype
}


def model_file_name(fmt: api.ModelFormat) -> str:
    """The file Triton loads from a version directory for ``fmt`` (model.onnx, model.plan...)."""
    return _MODEL_FILES[fmt]


def render_config(spec: api.InferenceServiceSpec) -> str:
    """config.pbtxt for ``spec``'s model: one top-level field per line or block."""
    field, value = _PLATFORMS[spec.model.format]
    lines = [f'name: "{spec.model.name}"', f'{field}: "{value}"']
    batching = spec.batching
    lines.append(f"max_batch_size: {batching.max_batch_size}")
    lines += _tensors("input", spec.model.inputs)
    lines += _tensors("output", spec.model.outputs)
    if batching.max_batch_size > 0:
        lines.append("dynamic_batching {")
        if batching.preferred_batch_sizes:
            sizes = ", ".join(str(s) for s in batching.preferred_batch_sizes)
            lines.append(f"  preferred_batch_size: [ {sizes} ]")
        lines.append(f"  max_queue_delay_microseconds: {batching.max_queue_delay_microseconds}")
        lines.append("}")
    lines += _instance_group(spec.gpu)
    lines += _version_policy(spec.model.version_policy)
    return "\n".join(lines) + "\n"


def _tensors(field: str, tensors: list[api.TensorSpec]) -> list[str]:
    if not tensors:
        # ONNX and TensorRT models carry their signature; Triton auto-completes it.
        return []
    rows = [
        f'  {{ name: "{t.name}", data_type: {_DATA_TYPES[t.datatype]}, '
        f"dims: [ {', '.join(str(d) for d in t.dims)} ] }}"
        for t in tensors
    ]
    return [f"{field} [", ",\n".join(rows), "]"]


def _instance_group(gpu: api.GPUSpec) -> list[str]:
    if gpu.count == 0:
        return ["instance_group [ { kind: KIND_CPU, count: 1 } ]"]
    if gpu.parallelism is api.GPUParallelism.MODEL:
        return [
            f"# Model parallel: one instance placing itself across the pod's {gpu.count} GPUs.",
            "instance_group [ { kind: KIND_MODEL, count: 1 } ]",
        ]
    gpus = ", ".join(str(i) for i in range(gpu.count))
    what = (
        f"Data parallel: one copy of the model on each of the pod's {gpu.count} GPUs."
        if gpu.count > 1
        else "One copy of the model on the pod's GPU."
    )
    return [f"# {what}", f"instance_group [ {{ kind: KIND_GPU, count: 1, gpus: [ {gpus} ] }} ]"]


def _version_policy(policy: api.VersionPolicy) -> list[str]:
    if policy.policy is api.VersionPolicyKind.ALL:
        return ["version_policy: { all: {} }"]
    if policy.policy is api.VersionPolicyKind.SPECIFIC:
        versions = ", ".join(str(v) for v in policy.versions)
        return [f"version_policy: {{ specific: {{ versions: [ {versions} ] }} }}"]
    # Latest (Triton's default: the highest version only) needs no line.
    return []
