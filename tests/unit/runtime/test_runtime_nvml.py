"""nvml -> nv_gpu_* on /metrics -> the autoscaler's GPU signal, without a GPU.

FakeNvml below is the one stand-in in these tests, and it replaces only the NVML library
itself: NVML talks to an NVIDIA driver and GPU, which this machine does not have (the real
library is exercised by tests/device/run.sh on a GPU machine). Everything around it is real:
the reading, the rendering, the Prometheus parser and the operator's own metrics parsing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubeinfer.core import metrics as operator_metrics
from kubeinfer_onnx import metrics, nvml

UUIDS = ["GPU-aaaa1111-0000", "GPU-bbbb2222-0000", "GPU-cccc3333-0000"]


class NVMLError(Exception):
    pass


@dataclasses.dataclass
class FakeGpu:
    uuid: str
    utilization_percent: int | None  # None: NVML_ERROR_NOT_SUPPORTED, as on a MIG slice
    used: int
    total: int
    lost: bool = False  # memory reads fail (a GPU fallen off the bus)


class FakeNvml:
    """The pynvml calls nvml.Gpus makes, answering from a list of FakeGpu."""

    NVMLError = NVMLError

    def __init__(self, gpus: list[FakeGpu], *, driver: bool = True) -> None:
        self.gpus = gpus
        self.driver = driver
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        if not self.driver:
            raise NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetUUID(self, handle: FakeGpu) -> bytes:
        return handle.uuid.encode()  # bytes, as nvidia-ml-py before 11.515 returned

    def nvmlDeviceGetUtilizationRates(self, handle: FakeGpu) -> Any:
        if handle.utilization_percent is None:
            raise NVMLError("Not Supported")
        return type("Utilization", (), {"gpu": handle.utilization_percent, "memory": 0})()

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu) -> Any:
        if handle.lost:
            raise NVMLError("GPU is lost")
        return type("Memory", (), {"used": handle.used, "total": handle.total, "free": 0})()


def two_gpus() -> FakeNvml:
    return FakeNvml(
        [
            FakeGpu(UUIDS[0], 90, 3 * 2**30, 80 * 2**30),
            FakeGpu(UUIDS[1], 30, 1 * 2**30, 80 * 2**30),
        ]
    )


@pytest.mark.parametrize(
    ("cuda_visible", "indices"),
    [
        (None, [0, 1, 2]),
        ("", []),
        ("-1", []),
        ("1", [1]),
        ("2,0", [2, 0]),
        ("GPU-bbbb", [1]),  # a unique UUID prefix
        ("GPU-", []),  # ambiguous: CUDA stops there
        ("0,7,1", [0]),  # CUDA stops at the first entry it cannot use
        ("1,1", [1]),
    ],
)
def test_visible_follows_cuda_visible_devices(cuda_visible: str | None, indices: list[int]) -> None:
    assert nvml.visible(UUIDS, cuda_visible) == indices


def test_no_library_means_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvml, "MODULE", "kubeinfer_test_no_such_nvml_module")
    assert nvml.Gpus.open() is None


def test_no_driver_means_no_gpus() -> None:
    assert nvml.Gpus.open(nvml=FakeNvml([], driver=False)) is None


def test_no_visible_gpu_means_no_gpus_and_nvml_is_released() -> None:
    fake = two_gpus()
    assert nvml.Gpus.open(nvml=fake, environ={"CUDA_VISIBLE_DEVICES": ""}) is None
    assert fake.shutdowns == 1


def test_readings_in_triton_units() -> None:
    fake = two_gpus()
    fake.gpus.append(FakeGpu(UUIDS[2], None, 5, 10))
    gpus = nvml.Gpus.open(nvml=fake, environ={})
    assert gpus is not None and gpus.uuids == UUIDS
    assert gpus.read() == [
        nvml.GpuReading(
            uuid=UUIDS[0],
            utilization=0.9,
            memory_used_bytes=3 * 2**30,
            memory_total_bytes=80 * 2**30,
        ),
        nvml.GpuReading(
            uuid=UUIDS[1],
            utilization=0.3,
            memory_used_bytes=1 * 2**30,
            memory_total_bytes=80 * 2**30,
        ),
        nvml.GpuReading(
            uuid=UUIDS[2], utilization=None, memory_used_bytes=5, memory_total_bytes=10
        ),
    ]
    fake.gpus[1].lost = True
    assert [r.uuid for r in gpus.read()] == [UUIDS[0], UUIDS[2]]  # left out, no crash
    gpus.close()
    assert fake.shutdowns == 1


def families(text: str) -> dict[str, dict[str, float]]:
    """{family: {gpu_uuid: value}} for the nv_gpu_* families."""
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("nv_gpu_"):
            out[family.name] = {s.labels["gpu_uuid"]: s.value for s in family.samples}
    return out


def test_metrics_page_carries_gpu_families_with_tritons_label() -> None:
    gpus = nvml.Gpus.open(nvml=two_gpus(), environ={"CUDA_VISIBLE_DEVICES": "0,1"})
    text = metrics.Metrics(gpus=gpus).render().decode()
    assert families(text) == {
        "nv_gpu_utilization": {UUIDS[0]: 0.9, UUIDS[1]: 0.3},
        "nv_gpu_memory_used_bytes": {UUIDS[0]: 3 * 2**30, UUIDS[1]: 1 * 2**30},
        "nv_gpu_memory_total_bytes": {UUIDS[0]: 80 * 2**30, UUIDS[1]: 80 * 2**30},
    }


def test_the_autoscaler_reads_the_servers_gpu_signal() -> None:
    """The operator's own parser, on the server's own page: the mean over the pod's GPUs."""
    gpus = nvml.Gpus.open(nvml=two_gpus(), environ={})
    raw = operator_metrics.parse_metrics(metrics.Metrics(gpus=gpus).render().decode())
    assert raw.gpu_utilization == pytest.approx(0.6)


def test_without_gpus_there_is_no_gpu_series_and_no_gpu_signal() -> None:
    text = metrics.Metrics().render().decode()
    assert "nv_gpu" not in text
    # None, not 0: an idle-looking GPU would lift the autoscaler's scale-down veto.
    assert operator_metrics.parse_metrics(text).gpu_utilization is None
