"""GPU readings from NVML (the `nvidia-ml-py` package, imported as `pynvml`) for nv_gpu_*.

Owns: finding the NVML library (an optional dependency, in the `gpu` extra and the gpu image),
which of NVML's GPUs this process may use, and one reading per GPU per scrape. A missing
library, no driver and no GPU all end the same way: `open()` returns None and the server
exports no GPU series, never a crash. No GPU series is what the autoscaler reads as "no GPU
signal" (None); a made-up 0 would read as an idle GPU and lift the scale-down veto.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

MODULE = "pynvml"


@dataclasses.dataclass(frozen=True, kw_only=True)
class GpuReading:
    uuid: str
    # Share of the last sample period (1/6 s to 1 s, by GPU) in which a kernel ran, 0..1, as
    # Triton's nv_gpu_utilization; None where NVML does not report it (a MIG slice).
    utilization: float | None
    memory_used_bytes: int
    memory_total_bytes: int


def visible(uuids: Sequence[str], cuda_visible_devices: str | None) -> list[int]:
    """Indices of NVML's GPUs that CUDA lets this process use, in CUDA's order.

    ``CUDA_VISIBLE_DEVICES`` lists indices or UUIDs (a unique prefix is enough) and CUDA stops
    at the first entry it cannot read; unset means every GPU. In a pod the device plugin
    mounts only the allocated GPUs and NVML sees just those; on a shared host this keeps the
    series to the GPUs the server's sessions can run on.
    """
    if cuda_visible_devices is None:
        return list(range(len(uuids)))
    chosen: list[int] = []
    for entry in (e.strip() for e in cuda_visible_devices.split(",")):
        if entry.isdigit() and int(entry) < len(uuids):
            index = int(entry)
        else:
            matches = [i for i, u in enumerate(uuids) if entry and u.startswith(entry)]
            if len(matches) != 1:
                break
            index = matches[0]
        if index in chosen:
            break
        chosen.append(index)
    return chosen


def _text(value: Any) -> str:
    # nvidia-ml-py returns str since 11.515; older releases returned bytes.
    return value.decode() if isinstance(value, bytes) else str(value)


class Gpus:
    """The GPUs this process may use, read on demand (each scrape: a few NVML calls)."""

    def __init__(self, nvml: Any, handles: Sequence[tuple[str, Any]]) -> None:
        self._nvml = nvml
        self._handles = list(handles)

    @property
    def uuids(self) -> list[str]:
        return [uuid for uuid, _ in self._handles]

    @classmethod
    def open(cls, *, nvml: Any = None, environ: Mapping[str, str] = os.environ) -> Gpus | None:
        """NVML's visible GPUs, or None when there is no library, no driver or no GPU.

        ``nvml`` is the pynvml module; None imports it (tests hand in a stand-in, since the
        real library needs a driver).
        """
        if nvml is None:
            try:
                nvml = importlib.import_module(MODULE)
            except ImportError:
                return None
        try:
            nvml.nvmlInit()
        except Exception as exc:  # pynvml.NVMLError: no driver (a CPU node), or no library
            log.info("no GPU metrics: NVML did not start (%s)", exc)
            return None
        try:
            count = nvml.nvmlDeviceGetCount()
            all_handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            uuids = [_text(nvml.nvmlDeviceGetUUID(h)) for h in all_handles]
        except Exception as exc:
            log.warning("no GPU metrics: NVML could not list the GPUs (%s)", exc)
            cls._shutdown(nvml)
            return None
        chosen = visible(uuids, environ.get("CUDA_VISIBLE_DEVICES"))
        if not chosen:
            cls._shutdown(nvml)
            return None
        return cls(nvml, [(uuids[i], all_handles[i]) for i in chosen])

    def read(self) -> list[GpuReading]:
        """One reading per GPU; a GPU whose memory NVML cannot read this time is left out."""
        readings = []
        for uuid, handle in self._handles:
            try:
                memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:
                log.debug("GPU %s: no memory reading (%s)", uuid, exc)
                continue
            try:
                utilization: float | None = (
                    self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
                )
            except Exception:  # NVML_ERROR_NOT_SUPPORTED on MIG slices
                utilization = None
            readings.append(
                GpuReading(
                    uuid=uuid,
                    utilization=utilization,
                    memory_used_bytes=int(memory.used),
                    memory_total_bytes=int(memory.total),
                )
            )
        return readings

    def close(self) -> None:
        self._shutdown(self._nvml)

    @staticmethod
    def _shutdown(nvml: Any) -> None:
        try:
            nvml.nvmlShutdown()
        except Exception as exc:
            log.debug("nvmlShutdown: %s", exc)
