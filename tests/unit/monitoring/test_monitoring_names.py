"""Every metric and signal name the chart's dashboard and alerts read is one kubeinfer exports.

The names are derived from where they are defined: the operator's families (telemetry), the
ONNX server's rendered /metrics, Triton's names as the autoscaler reads them (core.metrics),
and the signal labels the autoscaler sets (decide.Inputs through the engine's _numeric). A
regex that matches nothing, like the old ``signal=~"(?i).*queue.*"``, fails here.
"""

from __future__ import annotations

import json
import pathlib
import re

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from kubeinfer import telemetry
from kubeinfer.core import api, builders, metrics
from kubeinfer.core.scaling import decide
from kubeinfer_onnx import cpus as onnx_cpus
from kubeinfer_onnx import device as onnx_device
from kubeinfer_onnx import metrics as onnx_metrics

CHART = pathlib.Path(__file__).resolve().parents[3] / "charts" / "kubeinfer"
SOURCES = [CHART / "files" / "dashboard.json", CHART / "templates" / "prometheusrule.yaml"]
_NAME = re.compile(r"\b(?:kubeinfer|nv)_[a-z0-9_]+\b")
_SIGNAL = re.compile(r'signal\s*(=~|=)\s*\\?"(?P<value>[^"\\]+)\\?"')

# The sample suffixes each family type adds, as Prometheus stores them.
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _operator_names() -> set[str]:
    names = set()
    for value in vars(telemetry).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            names |= {family.name + suffix for suffix in _SUFFIXES[family.type]}
    return names


def _server_names() -> set[str]:
    registry = onnx_metrics.Metrics()
    stats = onnx_metrics.ModelStats(model="m", version="1")
    registry.add_model(stats)
    stats.record_success(duration_ns=10_000_000)
    text = registry.render().decode()
    return {sample.name for f in text_string_to_metric_families(text) for sample in f.samples}


def _triton_names() -> set[str]:
    return {name for name in metrics.TRITON.model_dump().values() if isinstance(name, str)}


def _signal_names() -> set[str]:
    inputs = decide.Inputs(
        metric=api.ScalingMetric.QUEUE_DEPTH,
        target=1.0,
        stable=1.0,
        panic=1.0,
        gpu_utilization=0.5,
        trend_per_s=0.1,
        cold_start_s=1.0,
        headroom=1.0,
        current=1,
        ready=1,
        starting=0,
        unschedulable=0,
        placing=0,
        recommended=1,
        panicking=False,
        scraped=True,
    )
    return set(decide.numeric(inputs.to_dict()))


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_every_metric_name_is_exported(source: pathlib.Path) -> None:
    known = _operator_names() | _server_names() | _triton_names()
    used = set(_NAME.findall(source.read_text()))
    assert used, f"no metric names found in {source}"
    assert used <= known, f"{source.name} reads metrics nobody exports: {sorted(used - known)}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_every_signal_matcher_matches_an_exported_signal(source: pathlib.Path) -> None:
    signals = _signal_names()
    text = source.read_text()
    if "kubeinfer_autoscaler_signal" in text:
        assert _SIGNAL.search(text), f"{source.name} reads signals without naming one"
    for match in _SIGNAL.finditer(text):
        if match["value"].startswith("$"):
            continue
        pattern = match["value"] if match[1] == "=~" else re.escape(match["value"])
        # A PromQL regex matcher is anchored; each alternative must name a real signal.
        for alternative in pattern.split("|"):
            assert any(re.fullmatch(alternative, s) for s in signals), (
                f"{source.name}: signal matcher {match[0]!r} alternative {alternative!r} "
                f"matches none of {sorted(signals)}"
            )


def test_dashboard_is_valid_json_with_targets() -> None:
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    assert all(panel.get("targets") for panel in dashboard["panels"])


def test_the_operator_reads_families_the_onnx_server_renders() -> None:
    """Each name in the operator's table (the default runtime metric names) is one the ONNX
    server renders, the execution provider included; nv_gpu_* needs a GPU and is checked on
    NVML readings in tests/unit/runtime/test_runtime_nvml.py."""
    registry = onnx_metrics.Metrics()
    registry.add_model(
        onnx_metrics.ModelStats(
            model="m", version="1", provider="CPUExecutionProvider", device="gpu"
        )
    )
    text = registry.render().decode()
    rendered = {family.name for family in text_string_to_metric_families(text)}
    default = yaml.safe_load((CHART.parents[1] / "runtimes/defaults/onnxruntime.yaml").read_text())
    names = api.parse_runtime(default["spec"]).metrics
    wanted = {
        name
        for field, name in names.model_dump().items()
        if isinstance(name, str) and field != "gpu_utilization"
    }
    assert "kubeinfer_execution_provider" in wanted
    assert wanted <= rendered, sorted(wanted - rendered)
    assert metrics.parse_metrics(text, names=names).execution_provider == "CPUExecutionProvider"


def test_the_device_setting_has_one_name() -> None:
    """The builder's env var is the server's (the packages share no code, so a test ties them)."""
    assert builders.DEVICE_ENV == onnx_device.ENV
    assert {onnx_device.Device(v) for v in ("gpu", "cpu")} <= set(onnx_device.Device)


def test_the_cpu_limit_setting_has_one_name() -> None:
    """The downward-API variable the builder sets is the one the server reads."""
    assert builders.CPU_LIMIT_ENV == onnx_cpus.LIMIT_ENV
