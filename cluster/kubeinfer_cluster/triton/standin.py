"""The CPU stand-in: what lets the pytriton wheel's Triton (python backend only, no GPU) load
the configs kubeinfer generates, changing nothing else.

- ``swap_for_cpu_standin``: the ONE change made to a config the operator generated (and the
  storage initializer merged): a platform the wheel has no backend for becomes
  ``backend: "python"`` (served by ``standin_model.py``, onnxruntime on the one model file), and
  KIND_GPU becomes KIND_CPU (a ``gpus`` list is meaningless for KIND_CPU, so it goes with it).
  It checks, on Triton's own proto, that nothing else differs.
- ``prepare_repository``: the swap applied to every model of a repository, with the stand-in's
  model.py put beside each swapped model's files: what the local kubelet does before it starts
  tritonserver for a Triton pod.
"""

from __future__ import annotations

import pathlib
import shutil

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

STANDIN_MODEL = pathlib.Path(__file__).with_name("standin_model.py")
# Platforms whose backend the pytriton wheel lacks; the stand-in serves them instead.
SWAPPED_PLATFORMS = {"onnxruntime_onnx", "tensorrt_plan", "pytorch_libtorch"}


def swap_for_cpu_standin(text: str) -> str:
    """``text`` with the platform and the GPU kind swapped, rendered by Triton's proto."""
    original = text_format.Parse(text, model_config_pb2.ModelConfig())
    swapped = model_config_pb2.ModelConfig()
    swapped.CopyFrom(original)
    if swapped.platform in SWAPPED_PLATFORMS:
        swapped.ClearField("platform")
        swapped.backend = "python"
    for group in swapped.instance_group:
        if group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU:
            group.kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
            del group.gpus[:]
    _assert_only_swapped(original, swapped)
    return str(text_format.MessageToString(swapped))


def _assert_only_swapped(
    original: model_config_pb2.ModelConfig, swapped: model_config_pb2.ModelConfig
) -> None:
    def without_swapped_fields(config: model_config_pb2.ModelConfig) -> bytes:
        copy = model_config_pb2.ModelConfig()
        copy.CopyFrom(config)
        copy.ClearField("platform")
        copy.ClearField("backend")
        for group in copy.instance_group:
            group.ClearField("kind")
            del group.gpus[:]
        return bytes(copy.SerializeToString(deterministic=True))

    assert without_swapped_fields(original) == without_swapped_fields(swapped), (
        "the stand-in swap changed more than platform/backend and the instance kind"
    )


def install_standin_code(version_dir: pathlib.Path) -> None:
    """Put the stand-in's model.py beside a model file it serves (a swapped platform)."""
    shutil.copyfile(STANDIN_MODEL, version_dir / "model.py")


def prepare_repository(repository: pathlib.Path) -> None:
    """Swap every model's config.pbtxt in place and give swapped versions the stand-in."""
    for config in sorted(repository.glob("*/config.pbtxt")):
        text = config.read_text()
        swapped = swap_for_cpu_standin(text)
        config.write_text(swapped)
        original = text_format.Parse(text, model_config_pb2.ModelConfig())
        if original.platform in SWAPPED_PLATFORMS:
            for version in config.parent.iterdir():
                if version.is_dir() and version.name.isdigit():
                    install_standin_code(version)
