"""The chart's monitoring objects as helm renders them, and every PromQL expression in them.

Owns reading the rendered documents: the operator's metrics Service, the ServiceMonitor and
PodMonitor, the PrometheusRule (as a Prometheus rule file) and the Grafana dashboard (its panel
targets and template variables). Nothing here knows what the expressions mean.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from typing import Any

from tests.integration.helm.conftest import Helm

# The namespace the chart is rendered into: the operator's own, which must never be the
# namespace label of a per-InferenceService series.
RELEASE_NAMESPACE = "kubeinfer-system"
HERE = pathlib.Path(__file__).parent
# Switches every monitoring object on; the Prometheus-backed test adds its own thresholds.
MONITORING_VALUES = HERE / "values-monitoring.yaml"

Doc = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Expression:
    """One PromQL expression and where it comes from (an alert, or a dashboard target)."""

    where: str
    expr: str


@dataclasses.dataclass(frozen=True)
class Rendered:
    docs: list[Doc]

    def one(self, kind: str, name_suffix: str = "") -> Doc:
        found = [
            d
            for d in self.docs
            if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)
        ]
        if len(found) != 1:
            names = [d["metadata"]["name"] for d in found]
            raise AssertionError(f"expected one {kind} named *{name_suffix}, got {names}")
        return found[0]

    @property
    def service_monitor(self) -> Doc:
        return self.one("ServiceMonitor")

    @property
    def pod_monitor(self) -> Doc:
        return self.one("PodMonitor")

    @property
    def metrics_service(self) -> Doc:
        return self.one("Service", "-metrics")

    @property
    def operator_deployment(self) -> Doc:
        return self.one("Deployment")

    def rule_file(self) -> Doc:
        """The PrometheusRule's groups as a Prometheus rule file (what prometheus-operator
        mounts into Prometheus)."""
        return {"groups": self.one("PrometheusRule")["spec"]["groups"]}

    def alerts(self) -> dict[str, Doc]:
        return {
            rule["alert"]: rule
            for group in self.rule_file()["groups"]
            for rule in group["rules"]
            if "alert" in rule
        }

    def dashboard(self) -> Doc:
        dashboards = [
            d
            for d in self.docs
            if d["kind"] == "ConfigMap" and "kubeinfer.json" in d.get("data", {})
        ]
        if len(dashboards) != 1:
            raise AssertionError(f"expected one dashboard ConfigMap, got {len(dashboards)}")
        loaded: Doc = json.loads(dashboards[0]["data"]["kubeinfer.json"])
        return loaded


def render(helm: Helm, *values: pathlib.Path) -> Rendered:
    args = ["--namespace", RELEASE_NAMESPACE, "-f", str(MONITORING_VALUES)]
    for path in values:
        args += ["-f", str(path)]
    return Rendered(helm.template(*args))


def dashboard_targets(dashboard: Doc) -> list[Expression]:
    return [
        Expression(f"panel {panel['title']!r} target {target['refId']}", target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets") or []
    ]


# Grafana's label_values(METRIC_SELECTOR, LABEL) variable query.
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


@dataclasses.dataclass(frozen=True)
class Variable:
    name: str
    selector: str
    label: str


def dashboard_variables(dashboard: Doc) -> list[Variable]:
    out = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = _LABEL_VALUES.match(variable["definition"])
        if match is None:
            raise AssertionError(f"variable {variable['name']}: not a label_values() query")
        out.append(Variable(variable["name"], match["selector"], match["label"]))
    return out


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's ``$name`` substitution (a regex alternation for multi-value variables)."""
    return re.sub(r"\$(\w+)", lambda m: values.get(m[1], m[0]), expr)


def alert_expressions(rendered: Rendered) -> list[Expression]:
    return [Expression(f"alert {name}", rule["expr"]) for name, rule in rendered.alerts().items()]
