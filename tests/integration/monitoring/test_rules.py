"""The chart's PrometheusRule under promtool: valid rules, and each alert's unit tests
(alerts_test.yaml: synthetic series with the labels the chart's monitors give real ones)."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import yaml

from kubeinfer_cluster import build
from tests.integration.helm.conftest import Helm
from tests.integration.monitoring import chart

UNIT_TESTS = pathlib.Path(__file__).with_name("alerts_test.yaml")


def _promtool(tools: build.Prometheus, *args: str, cwd: pathlib.Path) -> str:
    proc = subprocess.run(
        [str(tools.promtool), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _write_rules(helm: Helm, folder: pathlib.Path) -> chart.Rendered:
    rendered = chart.render(helm)
    (folder / "rules.yaml").write_text(yaml.safe_dump(rendered.rule_file(), sort_keys=False))
    return rendered


def test_rendered_rules_pass_promtool_check(
    prometheus_tools: build.Prometheus, chart_helm: Helm, tmp_path: pathlib.Path
) -> None:
    _write_rules(chart_helm, tmp_path)
    out = _promtool(prometheus_tools, "check", "rules", "--lint=all", "rules.yaml", cwd=tmp_path)
    assert "SUCCESS" in out, out


def test_every_alert_has_unit_tests_and_they_pass(
    prometheus_tools: build.Prometheus, chart_helm: Helm, tmp_path: pathlib.Path
) -> None:
    rendered = _write_rules(chart_helm, tmp_path)
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    assert tested == set(rendered.alerts()), "alerts without promtool tests, or tests of none"
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    out = _promtool(prometheus_tools, "test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert "SUCCESS" in out, out
