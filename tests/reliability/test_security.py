"""Security checks: the chart's RBAC cannot list or watch Secrets (nor anything by wildcard);
a credential named by credentialsSecret never shows in the operator log, Events, status or the
generated Deployment; generated serving pods are admitted under Pod Security `restricted`."""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubeinfer_cluster import build
from tests.conftest import ClusterHandle
from tests.operator_process import REPO, OperatorProcess
from tests.reliability import kube
from tests.reliability.conftest import Figures, wait_for

CHART = REPO / "charts" / "kubeinfer"


def rendered_rbac() -> list[dict[str, Any]]:
    tools = build.ensure_tools(with_helm=True)
    assert tools.helm, "helm is needed to render the chart (make tools builds it)"
    out = subprocess.run(
        [
            str(tools.helm),
            "template",
            "sec",
            str(CHART),
            "--namespace",
            "kubeinfer-system",
            f"--kube-version={tools.kubernetes_version}",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, f"helm template {CHART} failed:\n{out.stderr}"
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    return [d for d in docs if d["kind"] in ("ClusterRole", "Role")]


def test_chart_rbac_cannot_list_or_watch_secrets(
    cluster: ClusterHandle, namespace: str, figures: Figures
) -> None:
    roles = rendered_rbac()
    assert roles, "the chart renders no ClusterRole or Role"
    secret_verbs: set[str] = set()
    for role in roles:
        for rule in role.get("rules") or []:
            assert "*" not in rule.get("resources", []) and "*" not in rule.get("verbs", []), rule
            assert "*" not in rule.get("apiGroups", []), rule
            if "" in rule.get("apiGroups", []) and "secrets" in rule.get("resources", []):
                secret_verbs |= set(rule["verbs"])
    assert not secret_verbs & {"list", "watch", "create", "update", "patch", "delete"}, secret_verbs
    # The real API server agrees: bind the rendered ClusterRole to a fresh ServiceAccount.
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    suffix = uuid.uuid4().hex[:6]
    role = next(r for r in roles if r["kind"] == "ClusterRole")
    role["metadata"] = {"name": f"rel-sec-{suffix}"}
    rbac.create_cluster_role(role)
    cluster.core.create_namespaced_service_account(namespace, {"metadata": {"name": "op"}})
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": f"rel-sec-{suffix}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": f"rel-sec-{suffix}",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": namespace}],
        }
    )
    try:
        who = f"--as=system:serviceaccount:{namespace}:op"

        def can(*args: str) -> str:
            out = subprocess.run(
                [str(cluster.tools.kubectl), "auth", "can-i", *args, who],
                env=cluster.env,
                capture_output=True,
                text=True,
            )
            return out.stdout.strip()

        answers = {
            "list secrets -A": can("list", "secrets", "--all-namespaces"),
            "watch secrets -A": can("watch", "secrets", "--all-namespaces"),
            "get secrets -n kube-system": can("get", "secrets", "-n", "kube-system"),
            "patch deployments -A": can("patch", "deployments", "--all-namespaces"),
        }
        figures.record("security.rbac", **{k.replace(" ", "_"): v for k, v in answers.items()})
        assert answers["list secrets -A"] == "no"
        assert answers["watch secrets -A"] == "no"
        assert answers["patch deployments -A"] == "yes"  # the binding is live: not vacuous
    finally:
        rbac.delete_cluster_role_binding(f"rel-sec-{suffix}")
        rbac.delete_cluster_role(f"rel-sec-{suffix}")


def test_credentials_never_leak(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str, figures: Figures
) -> None:
    canary = f"kubeinfer-canary-{uuid.uuid4().hex}"
    cluster.core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "model-creds"},
            "stringData": {"AWS_ACCESS_KEY_ID": canary, "AWS_SECRET_ACCESS_KEY": canary},
        },
    )
    body = kube.isvc("private", gpu={"count": 0})
    body["spec"]["model"]["storageUri"] = "s3://bucket/models/mlp"
    body["spec"]["model"]["credentialsSecret"] = "model-creds"
    kube.create(cluster, namespace, body)
    kube.wait_ready(cluster, namespace, "private")
    # A missing Secret too: the error path writes an Event and a condition.
    missing = kube.isvc("private-missing", gpu={"count": 0})
    missing["spec"]["model"]["credentialsSecret"] = "missing-creds"
    kube.create(cluster, namespace, missing)
    wait_for(
        lambda: kube.condition(kube.get_isvc(cluster, namespace, "private-missing"), "Ready"),
        60,
        "a condition on private-missing",
    )
    places = {
        "operator log": operator.log(),
        "events": json.dumps(
            [
                cluster.api.sanitize_for_serialization(e)
                for e in cluster.core.list_namespaced_event(namespace).items
            ]
        ),
        "status": json.dumps(kube.get_isvc(cluster, namespace, "private").get("status")),
        "deployment": json.dumps(
            cluster.api.sanitize_for_serialization(
                cluster.apps.read_namespaced_deployment("private-predictor", namespace)
            )
        ),
        "configmaps": json.dumps(
            cluster.api.sanitize_for_serialization(
                cluster.core.list_namespaced_config_map(namespace).items
            )
        ),
    }
    leaks = [where for where, text in places.items() if canary in text]
    figures.record("security.credentials", places_checked=sorted(places), leaks=leaks)
    assert not leaks


def test_serving_pods_admitted_under_restricted(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str, figures: Figures
) -> None:
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    cluster.core.patch_namespace(namespace, {"metadata": {"labels": labels}})
    # Enforcement is live (not vacuous): a root pod is refused.
    with pytest.raises(ApiException) as refused:
        cluster.core.create_namespaced_pod(
            namespace,
            {
                "metadata": {"name": "root"},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        )
    assert refused.value.status == 403 and "restricted" in refused.value.body
    kube.create(cluster, namespace, kube.isvc("strict", gpu={"count": 1}))
    kube.wait_ready(cluster, namespace, "strict")
    pods = cluster.core.list_namespaced_pod(namespace, label_selector=f"{kube.LABEL}=strict")
    forbidden = [
        e.message
        for e in cluster.core.list_namespaced_event(namespace).items
        if e.reason == "FailedCreate"
    ]
    figures.record("security.pod_security", pods_admitted=len(pods.items), failed_creates=forbidden)
    assert pods.items and not forbidden
