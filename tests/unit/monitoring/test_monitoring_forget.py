"""A service the autoscaler stops tracking leaves no series behind on the operator's /metrics:
a stale gauge would keep it on the dashboard and an alert (waiting for GPU capacity) firing."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from kubeinfer import telemetry
from kubeinfer.engines import autoscaler


def _series(namespace: str, name: str) -> list[str]:
    return [
        sample.name
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.labels.get("namespace") == namespace
        and sample.labels.get("inferenceservice") == name
    ]


def _report(namespace: str, name: str) -> None:
    labels = {"namespace": namespace, "inferenceservice": name}
    telemetry.SCALER_DESIRED.labels(**labels).set(2)
    telemetry.SCALER_SIGNAL.labels(**labels, signal="unschedulable").set(1)
    telemetry.SCALER_DECISIONS.labels(**labels, reason="Hold").inc()
    telemetry.SCRAPE_FAILURES.labels(**labels).inc()


def _isvc(name: str, **scaling: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "unit-forget", "name": name},
        "spec": {
            "model": {"name": "m", "format": "onnx", "storageUri": "s3://bucket/m.onnx"},
            "scaling": scaling,
        },
    }


def test_forget_service_drops_only_that_service() -> None:
    _report("unit-forget", "gone")
    _report("unit-forget", "kept")
    telemetry.forget_service(namespace="unit-forget", name="gone")
    assert _series("unit-forget", "gone") == []
    assert len(_series("unit-forget", "kept")) >= 4
    telemetry.forget_service(namespace="unit-forget", name="kept")


def test_autoscaler_forgets_deleted_and_switched_off_services() -> None:
    engine = autoscaler.Autoscaler()
    engine.track(_isvc("deleted"))
    engine.track(_isvc("switched-off"))
    assert len(engine._tracked) == 2  # both specs parsed: tracked, not refused
    _report("unit-forget", "deleted")
    _report("unit-forget", "switched-off")
    engine.forget(("unit-forget", "deleted"))
    engine.track(_isvc("switched-off", mode="Off"))
    assert _series("unit-forget", "deleted") == []
    assert _series("unit-forget", "switched-off") == []
