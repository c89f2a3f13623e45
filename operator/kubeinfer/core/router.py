"""Pure builders for kubeinfer-router in front of an InferenceService (``spec.router``).

Owns: what the router's children look like - ``<name>-router`` ConfigMap (router.yaml: the
router starts on the mounted file and watches the ConfigMap itself for live changes),
ServiceAccount, Role and RoleBinding (what the router may read and write, nothing more), and
Deployment - and the labels that keep router pods apart from serving pods. No I/O here.

The router pods never carry ``builders.LABEL_ISVC``: that label is the predictor
Deployment's selector and the key the operator counts a service's serving pods by (status,
the autoscaler's scrape, scale-in), so a router pod wearing it would be adopted, counted and
scraped as a replica. They carry ``ROUTER_LABEL`` instead; the router's objects themselves
carry ``LABEL_ISVC`` so the operator's watches and store see them like the other children.
"""

from __future__ import annotations

from typing import Any

import yaml

from kubeinfer.core import api, builders, canary
from kubeinfer.core.config import OperatorConfig

ROUTER_LABEL = "kubeinfer.io/router"
COMPONENT = "router"
HTTP_PORT = 8080
CONFIG_FILE = "router.yaml"
CONFIG_DIR = "/etc/kubeinfer-router"
# The router's own command in the operator image (router/pyproject.toml's console script).
COMMAND = "kubeinfer-router"
# The router's field manager on the scale subresource (kubeinfer_router.waking.FIELD_MANAGER;
# the packages share no code): the autoscaler's hand-off reads who woke the service by it.
FIELD_MANAGER = "kubeinfer-router"
# Its request counter and held-requests gauge (kubeinfer_router.telemetry), scraped by the
# autoscaler as the demand that arrives while the serving pods are few or none.
REQUESTS_METRIC = "kubeinfer_router_requests_total"
HELD_METRIC = "kubeinfer_router_held_requests"
# Per variant (label `variant`), for the canary analysis: answers by `outcome` (success, error)
# and the arrival-to-answer histogram.
DURATION_METRIC = "kubeinfer_router_request_duration_seconds"
VARIANT_STABLE = "stable"
VARIANT_CANARY = "canary"


def name(owner: builders.Owner) -> str:
    return f"{owner.name}-router"


def pod_selector(owner: builders.Owner) -> dict[str, str]:
    return {ROUTER_LABEL: owner.name}


def selector_string(owner: builders.Owner) -> str:
    return ",".join(f"{k}={v}" for k, v in pod_selector(owner).items())


def _labels(owner: builders.Owner) -> dict[str, str]:
    return {
        builders.LABEL_ISVC: owner.name,
        "app.kubernetes.io/name": owner.name,
        "app.kubernetes.io/component": COMPONENT,
        "app.kubernetes.io/managed-by": "kubeinfer",
    }


def _pod_labels(owner: builders.Owner, spec: api.InferenceServiceSpec) -> dict[str, str]:
    # The user's pod labels too (a mesh sidecar, cost allocation, the dev cluster's run
    # label), minus the one label that would make a router pod a serving pod.
    mine = {k: v for k, v in _labels(owner).items() if k != builders.LABEL_ISVC}
    extra = {k: v for k, v in spec.pod_metadata.labels.items() if k != builders.LABEL_ISVC}
    return {**extra, **mine, **pod_selector(owner)}


def _metadata(owner: builders.Owner) -> dict[str, Any]:
    return {
        "name": name(owner),
        "namespace": owner.namespace,
        "labels": _labels(owner),
        "ownerReferences": [owner.reference()],
    }


def _variants(
    owner: builders.Owner,
    spec: api.InferenceServiceSpec,
    state: api.CanaryStatus | None,
    queue_metrics: tuple[str, str | None],
) -> list[dict[str, Any]]:
    stable = {
        "name": VARIANT_STABLE,
        "weight": 100,
        "selector": builders.selector(owner),
        "deployment": builders.child_name(owner),
    }
    if spec.canary is None:
        return [stable]
    # The weights come from status.canary (the canary engine's decision); a canary with no
    # recorded state yet starts at its first step. No wake target for the canary: its
    # replicas are the reconciler's alone (core.canary.replicas), and the Role lets the
    # router scale the predictor only.
    split = canary.weights(state or canary.start(spec.canary))
    stable_metric, canary_metric = queue_metrics
    return [
        {**stable, "weight": split[VARIANT_STABLE]},
        {
            "name": VARIANT_CANARY,
            "weight": split[VARIANT_CANARY],
            "selector": canary.pod_selector(owner),
            # A canary on another runtime reports its queue under that runtime's name.
            **(
                {"queueMetric": canary_metric} if canary_metric not in (None, stable_metric) else {}
            ),
        },
    ]


def build_config(
    owner: builders.Owner,
    spec: api.InferenceServiceSpec,
    runtime: api.InferenceRuntimeSpec,
    canary_state: api.CanaryStatus | None = None,
    canary_runtime: api.InferenceRuntimeSpec | None = None,
) -> dict[str, Any]:
    """router.yaml: the serving pods found by their selector (pods mode works on every
    cluster, the local one included, whose loopback pod IPs EndpointSlices refuse), the
    stable variant (and the canary, at its weight), the wake hook on the predictor
    Deployment, and the spec's limits."""
    metrics = (
        runtime.metrics.queue_depth,
        canary_runtime.metrics.queue_depth if canary_runtime is not None else None,
    )
    variants = _variants(owner, spec, canary_state, metrics)
    # The router wakes the variants with traffic that name a Deployment: the predictor. A
    # promoted canary takes all traffic and names none (the reconciler keeps it at 1 or more
    # replicas, so there is nothing to wake), and a wake with no target is a config error.
    wakes = any(v.get("deployment") and v["weight"] > 0 for v in variants)
    return {
        "listen": f"0.0.0.0:{HTTP_PORT}",
        "policy": spec.router.policy.value,
        "discovery": {
            "mode": "pods",
            "namespace": owner.namespace,
            "httpPort": "http",
            "metricsPort": "metrics",
        },
        "variants": variants,
        "wake": {"kind": "kubernetes" if wakes else "none"},
        "maxQueued": spec.router.max_queued,
        "holdTimeoutSeconds": spec.router.hold_timeout_seconds,
        "queueMetric": runtime.metrics.queue_depth,
    }


def render_config(
    owner: builders.Owner,
    spec: api.InferenceServiceSpec,
    runtime: api.InferenceRuntimeSpec,
    canary_state: api.CanaryStatus | None = None,
    canary_runtime: api.InferenceRuntimeSpec | None = None,
) -> str:
    doc = build_config(owner, spec, runtime, canary_state, canary_runtime)
    return yaml.safe_dump(doc, sort_keys=True)


def build_config_map(
    owner: builders.Owner,
    spec: api.InferenceServiceSpec,
    runtime: api.InferenceRuntimeSpec,
    canary_state: api.CanaryStatus | None = None,
    canary_runtime: api.InferenceRuntimeSpec | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner),
        "data": {CONFIG_FILE: render_config(owner, spec, runtime, canary_state, canary_runtime)},
    }


def build_service_account(owner: builders.Owner) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(owner)}


# What the router reads (pods mode, the one the operator renders; its own ConfigMap, watched
# so a new weight applies at once instead of when the kubelet refreshes the mounted file) and
# the one thing it writes: the predictor's replicas, 0 -> 1, through the scale subresource (a
# read, then a merge patch carrying the resourceVersion read). Nothing the operator does not
# hold itself: RBAC refuses a Role granting more than its creator has (the escalation rule;
# the chart's operator role holds all of these).
RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]},
]


def build_role(owner: builders.Owner) -> dict[str, Any]:
    # The scale write is limited to this service's predictor and the ConfigMap read to the
    # router's own, not every Deployment or ConfigMap around. A list or watch passes a rule
    # with resourceNames when it selects that one name (the router's field selector).
    names = {"deployments/scale": builders.child_name(owner), "configmaps": name(owner)}
    rules = [
        {**r, "resourceNames": [names[r["resources"][0]]]}
        if r["resources"][0] in names
        else dict(r)
        for r in RULES
    ]
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(owner),
        "rules": rules,
    }


def build_role_binding(owner: builders.Owner) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(owner),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": name(owner),
        },
        "subjects": [{"kind": "ServiceAccount", "name": name(owner), "namespace": owner.namespace}],
    }


_RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def build_deployment(
    owner: builders.Owner,
    spec: api.InferenceServiceSpec,
    runtime: api.InferenceRuntimeSpec,
    config: OperatorConfig,
) -> dict[str, Any]:
    """``spec.router.replicas`` router pods on the operator image, which carries the router
    package. Each holds its own requests at zero and flushes them when a replica is Ready;
    two woken routers write the same 0 -> 1, which is idempotent. More than one: spread over
    nodes where the scheduler can, and a PodDisruptionBudget (``build_pdb``)."""
    container: dict[str, Any] = {
        "name": "router",
        "image": config.init_image,
        "command": [COMMAND],
        # --listen repeats the file's address as a flag (flags win): a runtime that gives a
        # pod its own address for a wildcard (the local cluster's kubelet) rewrites args only.
        # --configmap: the router watches the ConfigMap it mounts, so a new weight applies
        # the moment it is written, not a kubelet sync later; the file starts it up.
        "args": [
            f"--config={CONFIG_DIR}/{CONFIG_FILE}",
            f"--listen=0.0.0.0:{HTTP_PORT}",
            f"--configmap={owner.namespace}/{name(owner)}",
        ],
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 1,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": _RESTRICTED,
    }
    pod_spec: dict[str, Any] = {
        "serviceAccountName": name(owner),
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": {"name": name(owner)}},
            {"name": "tmp", "emptyDir": {}},
        ],
        # Held requests get their 503 with Retry-After at SIGTERM, at once; the grace is for
        # proxied requests still running (the router's shutdownGraceSeconds default).
        "terminationGracePeriodSeconds": 35,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if config.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in config.image_pull_secrets]
    if spec.router.replicas > 1:
        # Preferred, not required: a one-node cluster still runs every router.
        pod_spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": pod_selector(owner)},
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner),
        "spec": {
            "replicas": spec.router.replicas,
            "selector": {"matchLabels": pod_selector(owner)},
            "template": {
                "metadata": {
                    "labels": _pod_labels(owner, spec),
                    # No config hash here, unlike the serving pods: the router applies
                    # its ConfigMap live, and a rolled router pod would drop what it holds.
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(HTTP_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def build_pdb(owner: builders.Owner, spec: api.InferenceServiceSpec) -> dict[str, Any] | None:
    """With two or more routers, a voluntary eviction (a node drain) takes one at a time; one
    router cannot stay up through its own eviction, so it gets none."""
    if spec.router.replicas < 2:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(owner),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": pod_selector(owner)}},
    }


def build_all(
    owner: builders.Owner,
    spec: api.InferenceServiceSpec,
    runtime: api.InferenceRuntimeSpec,
    config: OperatorConfig,
    canary_state: api.CanaryStatus | None = None,
    canary_runtime: api.InferenceRuntimeSpec | None = None,
) -> list[dict[str, Any]]:
    """Every router child, in the order they can be created: the Role before the binding
    that names it, the ServiceAccount and ConfigMap before the pods that mount them.
    ``canary_runtime``: the canary's resolved runtime, for its queue metric's name."""
    pdb = build_pdb(owner, spec)
    return [
        build_service_account(owner),
        build_role(owner),
        build_role_binding(owner),
        build_config_map(owner, spec, runtime, canary_state, canary_runtime),
        build_deployment(owner, spec, runtime, config),
        *([pdb] if pdb is not None else []),
    ]


# (apiVersion, kind) of every router child, for deleting them when the router is switched off.
KINDS = [
    ("policy/v1", "PodDisruptionBudget"),
    ("apps/v1", "Deployment"),
    ("v1", "ConfigMap"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("v1", "ServiceAccount"),
]
