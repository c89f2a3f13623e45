"""Every alert and every dashboard expression of the chart, evaluated by a real Prometheus that
scrapes the real operator and a real kubeinfer-onnx-server through the chart's own monitors.

Set-up, one InferenceService per condition an alert watches (thresholds lowered and `for`
removed by values-firing.yaml, so each fires on what is here):
- ``served``: run for real by the local kubelet (kubeinfer-onnx-server on a loopback pod IP,
  an emulated device time per execution) under a steady trickle of requests: the latency
  histogram and the queue gauge move. KubeinferP99LatencyHigh.
- ``gpu``: this machine has no GPU and neither server reports one on CPU, so the pod (faked
  by kwok) is answered on its IP by the test with Triton's metrics page as recorded for the
  scaling unit tests (tests/unit/scaling/fixtures/triton_t0.prom: nv_gpu_utilization 0.62).
  Prometheus and the operator's autoscaler scrape it as they would Triton.
  KubeinferGPUUtilizationLow.
- ``dark``: a Ready pod (kwok) where nothing listens: the autoscaler's scrapes fail.
  KubeinferAutoscalerMetricsOutage.
- ``stuck``: asks for more GPUs than any node has: its pod stays unschedulable.
  KubeinferWaitingForGPUCapacity; deleting it must clear the series and the alert.

Prometheus discovers the serving pods with kubernetes_sd against the test cluster, and gets
the operator process as the target of the chart's ServiceMonitor (monitors.py). Every answer is
checked for the InferenceService's own namespace and name: never the operator's namespace,
never an ``exported_namespace``.
"""

from __future__ import annotations

import contextlib
import http.server
import pathlib
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from kubeinfer.core import builders
from kubeinfer_cluster import build
from tests.conftest import ClusterHandle
from tests.e2e import load, scenario
from tests.integration.helm.conftest import Helm
from tests.integration.monitoring import chart, monitors
from tests.integration.monitoring.prometheus import Prometheus
from tests.operator_process import REPO, OperatorProcess
from tests.waiting import wait_for

FIRING_VALUES = pathlib.Path(__file__).with_name("values-firing.yaml")
TRITON_PAGE = REPO / "tests" / "unit" / "scaling" / "fixtures" / "triton_t0.prom"
# Which service makes which alert fire (the module docstring says how).
ALERTS = {
    "KubeinferP99LatencyHigh": "served",
    "KubeinferGPUUtilizationLow": "gpu",
    "KubeinferAutoscalerMetricsOutage": "dark",
    "KubeinferWaitingForGPUCapacity": "stuck",
}
SERVICES = ("served", "gpu", "dark", "stuck")
# More GPUs than a node of the test cluster has (8), so the pod never schedules.
TOO_MANY_GPUS = 9
# Each request holds the emulated device this long: far above the lowered p99 threshold.
DEVICE_MS = 20
ONE_REPLICA = {"minReplicas": 1, "maxReplicas": 1}
POD_TIMEOUT_S = 180
SERIES_TIMEOUT_S = 120


def _manifest(name: str, uri: str, *, gpus: int = 0, run: bool) -> str:
    doc = yaml.safe_load(
        scenario.manifest(
            name, uri=uri, gpus=gpus, max_batch=1, device_ms=DEVICE_MS, scaling=ONE_REPLICA
        )
    )
    if not run:
        # Without the run label kwok fakes the pod (Ready, an IP); no process runs.
        del doc["spec"]["podMetadata"]
    return str(yaml.safe_dump(doc))


def _ready_pod(cluster: ClusterHandle, namespace: str, name: str) -> Any:
    def ready() -> Any:
        for pod in cluster.core.list_namespaced_pod(
            namespace, label_selector=f"{builders.LABEL_ISVC}={name}"
        ).items:
            conditions = pod.status.conditions or []
            if pod.status.pod_ip and any(
                c.type == "Ready" and c.status == "True" for c in conditions
            ):
                return pod
        return None

    return wait_for(ready, POD_TIMEOUT_S, f"a Ready pod of {name}", every=1)


def _port(pod: Any, name: str) -> int:
    for container in pod.spec.containers:
        for port in container.ports or []:
            if port.name == name:
                return int(port.container_port)
    raise AssertionError(f"pod {pod.metadata.name} has no port named {name!r}")


@contextlib.contextmanager
def _serve_page(ip: str, port: int, page: bytes) -> Iterator[None]:
    """Answer every GET on ip:port with ``page`` in the Prometheus text format."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((ip, port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def _trickle(url: str, every_s: float = 0.05) -> Iterator[dict[str, int]]:
    """Requests one after another, one every ``every_s`` at most, until the block ends."""
    counts = {"ok": 0, "failed": 0}
    stop = threading.Event()
    body = load.mlp_request()

    def send() -> None:
        while not stop.wait(every_s):
            request = urllib.request.Request(
                url, data=body, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    resp.read()
                counts["ok"] += 1
            except OSError:
                counts["failed"] += 1

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()
        thread.join(timeout=15)


def _scrape_config(
    rendered: chart.Rendered, cluster: ClusterHandle, operator: OperatorProcess, rules: str
) -> dict[str, Any]:
    deployment = rendered.operator_deployment
    jobs = monitors.service_monitor_jobs(
        rendered.service_monitor,
        rendered.metrics_service,
        address=f"127.0.0.1:{operator.metrics_port}",
        # The pod the chart's Deployment would run; here the operator is a host process.
        pod=f"{deployment['metadata']['name']}-0",
        container=deployment["spec"]["template"]["spec"]["containers"][0]["name"],
    )
    jobs += monitors.pod_monitor_jobs(rendered.pod_monitor, kubeconfig=str(cluster.kubeconfig))
    return {
        # Rules evaluated every second: an alert shows up as soon as its series do.
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [rules],
        "scrape_configs": jobs,
    }


def _check_labels(where: str, result: list[dict[str, Any]], namespace: str) -> None:
    for series in result:
        labels = series["metric"]
        assert labels.get("namespace") == namespace, (where, labels)
        assert labels.get("inferenceservice") in SERVICES, (where, labels)
        assert "exported_namespace" not in labels, (where, labels)


def _returns(prom: Prometheus, expr: str, namespace: str, service: str | None) -> Any:
    """The result once it has a series of ``namespace`` (and of ``service``, if given)."""
    result = prom.query(expr)
    mine = [
        s
        for s in result
        if s["metric"].get("namespace") == namespace
        and (service is None or s["metric"].get("inferenceservice") == service)
    ]
    return result if mine else None


@pytest.fixture
def firing_chart(chart_helm: Helm) -> chart.Rendered:
    return chart.render(chart_helm, FIRING_VALUES)


def test_every_alert_and_dashboard_expression_returns_the_services_series(
    cluster: ClusterHandle,
    operator: OperatorProcess,
    namespace: str,
    tmp_path: pathlib.Path,
    prometheus_tools: build.Prometheus,
    firing_chart: chart.Rendered,
) -> None:
    rendered = firing_chart
    assert set(rendered.alerts()) == set(ALERTS), "an alert without a condition set up here"
    uri = scenario.model_uri(tmp_path)
    scenario.apply(cluster, namespace, _manifest("served", uri, run=True))
    scenario.apply(cluster, namespace, _manifest("gpu", uri, gpus=1, run=False))
    scenario.apply(cluster, namespace, _manifest("dark", uri, run=False))
    scenario.apply(cluster, namespace, _manifest("stuck", uri, gpus=TOO_MANY_GPUS, run=False))

    metrics_port_name = rendered.pod_monitor["spec"]["podMetricsEndpoints"][0]["port"]
    gpu_pod = _ready_pod(cluster, namespace, "gpu")
    served_pod = _ready_pod(cluster, namespace, "served")
    infer_url = f"http://{served_pod.status.pod_ip}:{_port(served_pod, 'http')}/v2/models/mlp/infer"
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rendered.rule_file(), sort_keys=False))
    (tmp_path / "prometheus").mkdir()
    prom = Prometheus(
        prometheus_tools.prometheus,
        tmp_path / "prometheus",
        _scrape_config(rendered, cluster, operator, str(rules)),
    )
    page = TRITON_PAGE.read_bytes()
    with (
        _serve_page(gpu_pod.status.pod_ip, _port(gpu_pod, metrics_port_name), page),
        _trickle(infer_url) as sent,
    ):
        prom.start()
        try:
            _assert_everything(prom, rendered, namespace, cluster, sent)
        except BaseException:
            print(f"\nprometheus log (tail):\n{prom.log()[-4000:]}")
            print(f"operator log (tail):\n{operator.log()[-3000:]}")
            raise
        finally:
            prom.stop()


def _assert_everything(
    prom: Prometheus,
    rendered: chart.Rendered,
    namespace: str,
    cluster: ClusterHandle,
    sent: dict[str, int],
) -> None:
    _assert_targets_up(prom, rendered, namespace)
    _assert_alerts_fire(prom, rendered, namespace, sent)
    _assert_dashboard(prom, rendered, namespace, sent)
    # honorLabels: no operator series was relabelled to the operator's namespace.
    renamed = prom.query('{__name__=~"kubeinfer_.+", exported_namespace!=""}')
    assert renamed == [], renamed[:3]
    _assert_deleted_service_clears(prom, rendered, namespace, cluster)
    assert sent["ok"] > 0, sent


def _assert_targets_up(prom: Prometheus, rendered: chart.Rendered, namespace: str) -> None:
    """The operator through the ServiceMonitor (as the chart's Service in the operator's
    namespace), the answering serving pods through the PodMonitor with their service's
    namespace and name."""
    service = rendered.metrics_service["metadata"]
    pod_job = "{namespace}/{name}".format(**rendered.pod_monitor["metadata"])
    wanted = {
        (service["namespace"], None, service["name"]),
        (namespace, "served", pod_job),
        (namespace, "gpu", pod_job),
    }

    def up() -> set[tuple[str | None, str | None, str]]:
        return {
            (t["labels"].get("namespace"), t["labels"].get("inferenceservice"), t["labels"]["job"])
            for t in prom.targets()
            if t["health"] == "up"
        }

    wait_for(lambda: wanted <= up(), SERIES_TIMEOUT_S, f"targets {wanted} up", every=1)


def _assert_alerts_fire(
    prom: Prometheus, rendered: chart.Rendered, namespace: str, sent: dict[str, int]
) -> None:
    """Each alert's expression returns its service's series, and the alert fires with them."""
    for alert, service in ALERTS.items():
        expr = rendered.alerts()[alert]["expr"]
        result = wait_for(
            lambda e=expr, s=service: _returns(prom, e, namespace, s),
            SERIES_TIMEOUT_S,
            f"{alert} ({expr.strip()}) to return {namespace}/{service}; sent {sent}",
            every=1,
        )
        mine = [s for s in result if s["metric"]["namespace"] == namespace]
        _check_labels(f"alert {alert}", mine, namespace)
        wait_for(
            lambda a=alert, s=service: any(
                x["labels"]["alertname"] == a
                and x["state"] == "firing"
                and x["labels"].get("namespace") == namespace
                and x["labels"].get("inferenceservice") == s
                for x in prom.alerts()
            ),
            30,
            f"{alert} firing for {namespace}/{service}",
            every=1,
        )


def _assert_dashboard(
    prom: Prometheus, rendered: chart.Rendered, namespace: str, sent: dict[str, int]
) -> None:
    """Each panel target returns series of these services only, with the variables set as a
    user picking them would; the variables list them and never the operator's namespace."""
    dashboard = rendered.dashboard()
    # Namespace names (DNS labels) hold no regex metacharacters: no escaping needed.
    values = {"namespace": namespace, "inferenceservice": "|".join(SERVICES)}
    for target in chart.dashboard_targets(dashboard):
        expr = chart.substitute(target.expr, values)
        result = wait_for(
            lambda e=expr: _returns(prom, e, namespace, None),
            SERIES_TIMEOUT_S,
            f"{target.where}: {expr} to return series; sent {sent}",
            every=1,
        )
        _check_labels(target.where, result, namespace)
    for variable in chart.dashboard_variables(dashboard):
        selector = chart.substitute(variable.selector, values)
        found = {s.get(variable.label) for s in prom.series(selector)}
        wanted = {namespace} if variable.label == "namespace" else set(SERVICES)
        assert wanted <= found, (variable, found)
        assert chart.RELEASE_NAMESPACE not in found, (variable, found)


def _assert_deleted_service_clears(
    prom: Prometheus, rendered: chart.Rendered, namespace: str, cluster: ClusterHandle
) -> None:
    """A deleted service leaves no series behind, so its alert stops."""
    cluster.custom.delete_namespaced_custom_object(
        scenario.GROUP, scenario.VERSION, namespace, scenario.PLURAL, "stuck"
    )
    waiting = rendered.alerts()["KubeinferWaitingForGPUCapacity"]["expr"]
    wait_for(
        lambda: _returns(prom, waiting, namespace, "stuck") is None,
        SERIES_TIMEOUT_S,
        "the deleted service's unschedulable series to go",
        every=1,
    )
