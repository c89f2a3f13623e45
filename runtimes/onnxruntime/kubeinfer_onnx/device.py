"""Where models compute: the device setting, the execution providers it asks for, and the truth.

Owns the `--device` setting (auto, cpu, gpu; `KUBEINFER_DEVICE` in a pod, set by the operator
from the InferenceService's gpu.count), the provider list each setting asks onnxruntime for,
and `Placement`: what a loaded session actually runs on, read back from the session rather than
assumed from the request. onnxruntime quietly falls back to CPU when a GPU provider cannot
start (no CUDA libraries, no driver, no device), so the session's own provider list is the only
honest source. Pure: no onnxruntime import here; the caller passes in what onnxruntime said.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Sequence

ENV = "KUBEINFER_DEVICE"

CPU_PROVIDER = "CPUExecutionProvider"
# In preference order: TensorRT compiles the graph for the GPU (fastest once built), CUDA runs
# onnxruntime's own kernels; CPU stays last in every list for the nodes a GPU provider lacks.
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class Device(enum.StrEnum):
    AUTO = "auto"  # GPU providers when this onnxruntime build has them, else CPU
    CPU = "cpu"  # CPU only, even in the GPU image (a pod that was given no GPU)
    GPU = "gpu"  # GPU providers; serve on CPU, and say so, when none can start


def choose_providers(device: Device, available: Iterable[str]) -> list[str]:
    """The providers to ask onnxruntime for, best first; CPU always last as the fallback."""
    if device is Device.CPU:
        return [CPU_PROVIDER]
    present = set(available)
    return [p for p in GPU_PROVIDERS if p in present] + [CPU_PROVIDER]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Placement:
    """What one session runs on, next to what was asked for."""

    requested: Device
    # The provider the session gives first place: where the graph's nodes go when it can.
    provider: str
    # Why a GPU request ended on CPU, as a sentence; empty when it did not.
    fallback_reason: str = ""

    @property
    def on_gpu(self) -> bool:
        return self.provider != CPU_PROVIDER

    @property
    def fell_back(self) -> bool:
        """A GPU was asked for and the session runs on CPU."""
        return self.requested is Device.GPU and not self.on_gpu


def placement(
    *, requested: Device, session_providers: Sequence[str], available: Iterable[str]
) -> Placement:
    """Read a session's providers (``InferenceSession.get_providers()``) into a Placement."""
    provider = session_providers[0] if session_providers else CPU_PROVIDER
    reason = ""
    if requested is Device.GPU and provider == CPU_PROVIDER:
        gpu_builds = [p for p in GPU_PROVIDERS if p in set(available)]
        if not gpu_builds:
            reason = (
                "this onnxruntime build has no GPU execution provider (the CPU-only "
                "`onnxruntime` wheel is installed; the server image's gpu variant has "
                "`onnxruntime-gpu`)"
            )
        else:
            reason = (
                f"{' and '.join(gpu_builds)} could not start (no visible GPU, no driver, or "
                "missing CUDA/cuDNN libraries; onnxruntime's own error is logged above)"
            )
    return Placement(requested=requested, provider=provider, fallback_reason=reason)
