"""The chart's ServiceMonitor and PodMonitor as the Prometheus scrape configs prometheus-operator
would generate from them, so a plain Prometheus applies the same relabel rules.

Owns the translation only (pure: documents in, config dicts out). It follows
prometheus-operator's ``pkg/prometheus/promcfg.go`` (``generateServiceMonitorConfig``,
``generatePodMonitorConfig``): the job name, honor_labels, the keep rules from the selector,
the port filter, the namespace/pod/container/service/job/endpoint target labels, then the
monitor's own relabelings. Left out, because nothing here uses them: TLS and auth, sharding
(one shard keeps every target), scrape classes and the limits.

Discovery differs where the local cluster forces it:
- PodMonitor: Prometheus' real kubernetes_sd ``role: pod`` against the test cluster, which
  is the only role that sees these pods (EndpointSlices reject their loopback IPs).
- ServiceMonitor: the operator under test is a host process, not a pod behind the chart's
  Service, so the endpoints role would find nothing. Its target is a static one carrying the
  ``__meta_kubernetes_*`` labels the endpoints role would give it, taken from the Service
  the chart renders; the generated relabel rules then run on them unchanged.
"""

from __future__ import annotations

import re
from typing import Any

Doc = dict[str, Any]
Rule = dict[str, Any]

# prometheus-operator's sanitizeLabelName.
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def _sanitize(name: str) -> str:
    return _INVALID.sub("_", name)


def _user_relabelings(relabelings: list[Doc]) -> list[Rule]:
    """A monitor's RelabelConfig list (camelCase) in Prometheus' relabel_config form."""
    keys = {
        "sourceLabels": "source_labels",
        "separator": "separator",
        "targetLabel": "target_label",
        "regex": "regex",
        "modulus": "modulus",
        "replacement": "replacement",
        "action": "action",
    }
    out = []
    for relabeling in relabelings:
        unknown = set(relabeling) - set(keys)
        if unknown:
            raise ValueError(f"relabeling fields not translated here: {sorted(unknown)}")
        rule = {keys[k]: v for k, v in relabeling.items()}
        if "action" in rule:
            rule["action"] = str(rule["action"]).lower()
        out.append(rule)
    return out


def _selector_rules(selector: Doc, meta: str) -> list[Rule]:
    """keep/drop rules for a label selector, ``meta`` being e.g. __meta_kubernetes_pod."""
    rules: list[Rule] = []
    for key in sorted(selector.get("matchLabels") or {}):
        name = _sanitize(key)
        rules.append(
            {
                "action": "keep",
                "source_labels": [f"{meta}_label_{name}", f"{meta}_labelpresent_{name}"],
                "regex": f"({selector['matchLabels'][key]});true",
            }
        )
    for expression in selector.get("matchExpressions") or []:
        name, operator = _sanitize(expression["key"]), expression["operator"]
        values = "|".join(expression.get("values") or [])
        if operator in ("In", "NotIn"):
            rules.append(
                {
                    "action": "keep" if operator == "In" else "drop",
                    "source_labels": [f"{meta}_label_{name}", f"{meta}_labelpresent_{name}"],
                    "regex": f"({values});true",
                }
            )
        elif operator in ("Exists", "DoesNotExist"):
            rules.append(
                {
                    "action": "keep" if operator == "Exists" else "drop",
                    "source_labels": [f"{meta}_labelpresent_{name}"],
                    "regex": "true",
                }
            )
        else:
            raise ValueError(f"unknown selector operator {operator!r}")
    return rules


def _namespaces(monitor: Doc) -> list[str]:
    """[] means every namespace, as in prometheus-operator's namespace selector."""
    selector = monitor["spec"].get("namespaceSelector") or {}
    if selector.get("any"):
        return []
    return list(selector.get("matchNames") or [monitor["metadata"]["namespace"]])


# The fields translated below. Anything else in a monitor fails the translation, so a field
# the chart starts using is never dropped silently.
_SERVICE_MONITOR_FIELDS = {"selector", "namespaceSelector", "endpoints", "targetLabels", "jobLabel"}
_POD_MONITOR_FIELDS = {"selector", "namespaceSelector", "podMetricsEndpoints", "podTargetLabels"}
_ENDPOINT_FIELDS = {
    "port",
    "path",
    "interval",
    "scrapeTimeout",
    "honorLabels",
    "filterRunning",
    "relabelings",
    "metricRelabelings",
}


def _check_known(monitor: Doc, fields: set[str], endpoints_key: str) -> None:
    spec = monitor["spec"]
    unknown = set(spec) - fields
    for endpoint in spec[endpoints_key]:
        unknown |= set(endpoint) - _ENDPOINT_FIELDS
    if unknown:
        raise ValueError(
            f"{monitor['kind']} {monitor['metadata']['name']}: fields not translated here: "
            f"{sorted(unknown)}"
        )


def _common(kind: str, monitor: Doc, index: int, endpoint: Doc) -> Doc:
    meta = monitor["metadata"]
    job: Doc = {"job_name": f"{kind}/{meta['namespace']}/{meta['name']}/{index}"}
    job["honor_labels"] = bool(endpoint.get("honorLabels", False))
    if "interval" in endpoint:
        job["scrape_interval"] = endpoint["interval"]
    if "scrapeTimeout" in endpoint:
        job["scrape_timeout"] = endpoint["scrapeTimeout"]
    if "path" in endpoint:
        job["metrics_path"] = endpoint["path"]
    return job


# The first rule of every job: the job name kept in a meta label.
_INIT = {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}
_RUNNING = {
    "action": "drop",
    "source_labels": ["__meta_kubernetes_pod_phase"],
    "regex": "(Failed|Succeeded)",
}


def pod_monitor_jobs(monitor: Doc, *, kubeconfig: str) -> list[Doc]:
    """One scrape config per podMetricsEndpoint, discovering pods through ``kubeconfig``."""
    spec = monitor["spec"]
    meta = monitor["metadata"]
    _check_known(monitor, _POD_MONITOR_FIELDS, "podMetricsEndpoints")
    jobs = []
    for index, endpoint in enumerate(spec["podMetricsEndpoints"]):
        job = _common("podMonitor", monitor, index, endpoint)
        sd: Doc = {"role": "pod", "kubeconfig_file": kubeconfig}
        namespaces = _namespaces(monitor)
        if namespaces:
            sd["namespaces"] = {"names": namespaces}
        job["kubernetes_sd_configs"] = [sd]
        rules: list[Rule] = [_INIT]
        if endpoint.get("filterRunning", True):
            rules.append(_RUNNING)
        rules += _selector_rules(spec["selector"], "__meta_kubernetes_pod")
        port = endpoint.get("port")
        if port:
            rules.append(
                {
                    "action": "keep",
                    "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                    "regex": port,
                }
            )
        rules += [
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {
                "source_labels": ["__meta_kubernetes_pod_container_name"],
                "target_label": "container",
            },
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ]
        for label in spec.get("podTargetLabels") or []:
            rules.append(
                {
                    "source_labels": [f"__meta_kubernetes_pod_label_{_sanitize(label)}"],
                    "target_label": _sanitize(label),
                    "regex": "(.+)",
                    "replacement": "${1}",
                }
            )
        rules.append({"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"})
        if port:
            rules.append({"target_label": "endpoint", "replacement": port})
        rules += _user_relabelings(endpoint.get("relabelings") or [])
        job["relabel_configs"] = rules
        if endpoint.get("metricRelabelings"):
            job["metric_relabel_configs"] = _user_relabelings(endpoint["metricRelabelings"])
        jobs.append(job)
    return jobs


def _service_target(service: Doc, *, address: str, pod: str, container: str) -> Doc:
    """What the endpoints role would discover for one Ready pod behind ``service``."""
    meta = service["metadata"]
    labels: dict[str, str] = {
        "__meta_kubernetes_namespace": meta["namespace"],
        "__meta_kubernetes_service_name": meta["name"],
        "__meta_kubernetes_endpoint_address_target_kind": "Pod",
        "__meta_kubernetes_endpoint_address_target_name": pod,
        "__meta_kubernetes_endpoint_ready": "true",
        "__meta_kubernetes_pod_name": pod,
        "__meta_kubernetes_pod_container_name": container,
        "__meta_kubernetes_pod_phase": "Running",
    }
    for key, value in (meta.get("labels") or {}).items():
        labels[f"__meta_kubernetes_service_label_{_sanitize(key)}"] = str(value)
        labels[f"__meta_kubernetes_service_labelpresent_{_sanitize(key)}"] = "true"
    return {"targets": [address], "labels": labels}


def service_monitor_jobs(
    monitor: Doc, service: Doc, *, address: str, pod: str, container: str
) -> list[Doc]:
    """One scrape config per endpoint, whose one target is ``service``'s pod at ``address``.

    The port filter needs the endpoint port's name, which is the Service port's name."""
    spec = monitor["spec"]
    _check_known(monitor, _SERVICE_MONITOR_FIELDS, "endpoints")
    namespaces = _namespaces(monitor)
    selected = not namespaces or service["metadata"]["namespace"] in namespaces
    jobs = []
    for index, endpoint in enumerate(spec["endpoints"]):
        job = _common("serviceMonitor", monitor, index, endpoint)
        jobs_targets = []
        for service_port in service["spec"]["ports"]:
            target = _service_target(service, address=address, pod=pod, container=container)
            target["labels"]["__meta_kubernetes_endpoint_port_name"] = service_port.get("name", "")
            jobs_targets.append(target)
        job["static_configs"] = jobs_targets if selected else []
        rules: list[Rule] = [_INIT]
        rules += _selector_rules(spec["selector"], "__meta_kubernetes_service")
        port = endpoint.get("port")
        if port:
            rules.append(
                {
                    "action": "keep",
                    "source_labels": ["__meta_kubernetes_endpoint_port_name"],
                    "regex": port,
                }
            )
        kind_and_name = [
            "__meta_kubernetes_endpoint_address_target_kind",
            "__meta_kubernetes_endpoint_address_target_name",
        ]
        rules += [
            {
                "source_labels": kind_and_name,
                "separator": ";",
                "regex": "Node;(.*)",
                "replacement": "${1}",
                "target_label": "node",
            },
            {
                "source_labels": kind_and_name,
                "separator": ";",
                "regex": "Pod;(.*)",
                "replacement": "${1}",
                "target_label": "pod",
            },
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {
                "source_labels": ["__meta_kubernetes_pod_container_name"],
                "target_label": "container",
            },
        ]
        if endpoint.get("filterRunning", True):
            rules.append(_RUNNING)
        for label in spec.get("targetLabels") or []:
            rules.append(
                {
                    "source_labels": [f"__meta_kubernetes_service_label_{_sanitize(label)}"],
                    "target_label": _sanitize(label),
                    "regex": "(.+)",
                    "replacement": "${1}",
                }
            )
        rules.append(
            {
                "source_labels": ["__meta_kubernetes_service_name"],
                "target_label": "job",
                "replacement": "${1}",
            }
        )
        if spec.get("jobLabel"):
            rules.append(
                {
                    "source_labels": [
                        f"__meta_kubernetes_service_label_{_sanitize(spec['jobLabel'])}"
                    ],
                    "target_label": "job",
                    "regex": "(.+)",
                    "replacement": "${1}",
                }
            )
        if port:
            rules.append({"target_label": "endpoint", "replacement": port})
        rules += _user_relabelings(endpoint.get("relabelings") or [])
        job["relabel_configs"] = rules
        if endpoint.get("metricRelabelings"):
            job["metric_relabel_configs"] = _user_relabelings(endpoint["metricRelabelings"])
        jobs.append(job)
    return jobs
