"""The chart against the real API server: install, upgrade, uninstall; the operator run with the
chart's ServiceAccount token (RBAC sufficient: zero 403s; minimal: no reach outside the watched
namespaces); PodSecurity `restricted` for the operator pod and the serving pods.

The InferenceService suite in the same session installs the CRDs and runtimes with kubectl; this
module works in either order. Helm skips CRDs that exist (its crds/ folder is install-only); the
default runtimes, when kubectl created them first, are adopted with `--take-ownership` (a fresh
cluster does not need it), and put back with kubectl after uninstalling.
"""

from __future__ import annotations

import base64
import json
import pathlib
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.conftest import ClusterHandle
from tests.integration.helm.conftest import CHART, Helm
from tests.operator_process import REPO, OperatorProcess, forbidden_lines, install, python_env
from tests.waiting import wait_for

GROUP, VERSION = "kubeinfer.io", "v1alpha1"
RELEASE = "kubeinfer"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def kubectl(cluster: ClusterHandle, *args: str, check: bool = True) -> str:
    proc = subprocess.run(
        [str(cluster.tools.kubectl), *args],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr}")
    return proc.stdout.strip()


def make_namespace(
    cluster: ClusterHandle, prefix: str, labels: dict[str, str] | None = None
) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels or {}))
    )
    return name


def runtimes_exist(cluster: ClusterHandle) -> bool:
    out = kubectl(cluster, "get", f"inferenceruntimes.{GROUP}", "-o", "name", check=False)
    return bool(out)


def release_objects(cluster: ClusterHandle, namespace: str) -> list[str]:
    """Every object that carries the release's instance label, cluster-wide, as KIND/NAME."""
    kinds = (
        "deployments,services,serviceaccounts,configmaps,roles,rolebindings,"
        "clusterroles,clusterrolebindings,inferenceruntimes,customresourcedefinitions"
    )
    out = kubectl(
        cluster, "get", kinds, "-A", "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name"
    )
    return sorted(line for line in out.splitlines() if line)


@pytest.fixture(scope="module")
def release(cluster: ClusterHandle, helm: Helm) -> Iterator[str]:
    """The chart installed cluster-wide into its own namespace, labelled PodSecurity
    `restricted` so the operator pod itself goes through admission."""
    namespace = make_namespace(cluster, "kubeinfer-system", RESTRICTED)
    adopt = ["--take-ownership"] if runtimes_exist(cluster) else []
    out = helm("install", RELEASE, str(CHART), "-n", namespace, "--wait=false", *adopt)
    assert "STATUS: deployed" in out.stdout, out.stdout
    try:
        yield namespace
    finally:
        helm("uninstall", RELEASE, "-n", namespace, check=False)
        cluster.core.delete_namespace(namespace)
        # Put back what the other suites expect to find (server-side apply takes it over).
        install(cluster.tools.kubectl, cluster.env)


def test_install_every_object_accepted(cluster: ClusterHandle, helm: Helm, release: str) -> None:
    status = json.loads(helm("status", RELEASE, "-n", release, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    manifest = [
        d for d in yaml.safe_load_all(helm("get", "manifest", RELEASE, "-n", release).stdout) if d
    ]
    for doc in manifest:
        meta = doc["metadata"]
        ns = ["-n", meta["namespace"]] if meta.get("namespace") else []
        kubectl(
            cluster,
            "get",
            f"{doc['kind']}.{doc['apiVersion'].split('/')[0]}"
            if "/" in doc["apiVersion"]
            else doc["kind"],
            meta["name"],
            *ns,
        )
    kubectl(
        cluster,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        f"crd/inferenceservices.{GROUP}",
        f"crd/inferenceruntimes.{GROUP}",
    )
    runtimes = kubectl(cluster, "get", "inferenceruntimes", "-o", "name")
    assert "onnxruntime" in runtimes and "triton" in runtimes


def test_operator_pod_admitted_at_restricted(cluster: ClusterHandle, release: str) -> None:
    """The Deployment's ReplicaSet creates the operator pod in a `restricted` namespace (the
    image is never pulled: the fake kubelet only pretends to run it)."""
    selector = "app.kubernetes.io/component=operator"
    pods = wait_for(
        lambda: cluster.core.list_namespaced_pod(release, label_selector=selector).items,
        what="operator pod",
    )
    assert pods[0].spec.security_context.run_as_non_root is True
    assert not failed_creates(cluster, release)


def failed_creates(cluster: ClusterHandle, namespace: str) -> list[str]:
    events = cluster.core.list_namespaced_event(namespace).items
    return [e.message for e in events if e.reason == "FailedCreate"]


def test_upgrade_changes_values(cluster: ClusterHandle, helm: Helm, release: str) -> None:
    helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "-n",
        release,
        "--reuse-values",
        "--set",
        "runtimes.onnxruntime.image=registry.example/onnx:9",
        "--set",
        "resources.limits.memory=768Mi",
        "--set",
        "grafanaDashboard.enabled=true",
    )
    runtime = cluster.custom.get_cluster_custom_object(
        GROUP, VERSION, "inferenceruntimes", "onnxruntime"
    )
    assert runtime["spec"]["image"] == "registry.example/onnx:9"
    dep = cluster.apps.read_namespaced_deployment(RELEASE, release)
    assert dep.spec.template.spec.containers[0].resources.limits["memory"] == "768Mi"
    cluster.core.read_namespaced_config_map(f"{RELEASE}-dashboard", release)
    history = json.loads(helm("history", RELEASE, "-n", release, "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2]
    # Back to the defaults for the tests that follow.
    helm("upgrade", RELEASE, str(CHART), "-n", release, "--reset-values")
    runtime = cluster.custom.get_cluster_custom_object(
        GROUP, VERSION, "inferenceruntimes", "onnxruntime"
    )
    version = (REPO / "VERSION").read_text().strip()
    assert runtime["spec"]["image"] == f"ghcr.io/kubeinfer/onnx-server:{version}"


# --- RBAC: the operator with the chart's identity -----------------------------------------


def sa_kubeconfig(
    cluster: ClusterHandle, namespace: str, account: str, path: pathlib.Path
) -> pathlib.Path:
    """A kubeconfig that authenticates as the ServiceAccount (a TokenRequest token), with the
    admin kubeconfig's server and CA."""
    token = kubectl(cluster, "create", "token", account, "-n", namespace, "--duration=2h")
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    ctx = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    server = next(c for c in admin["clusters"] if c["name"] == ctx["cluster"])["cluster"]
    entry: dict[str, Any] = {"server": server["server"]}
    if "certificate-authority-data" in server:
        entry["certificate-authority-data"] = server["certificate-authority-data"]
    elif "certificate-authority" in server:
        ca = pathlib.Path(server["certificate-authority"]).read_bytes()
        entry["certificate-authority-data"] = base64.b64encode(ca).decode()
    else:
        entry["insecure-skip-tls-verify"] = server.get("insecure-skip-tls-verify", False)
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "sa",
                "clusters": [{"name": "c", "cluster": entry}],
                "users": [{"name": "sa", "user": {"token": token}}],
                "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
            }
        )
    )
    return path


def chart_operator_args(helm: Helm, *values: str) -> list[str]:
    """The operator flags the chart passes, minus the two ports a test process picks itself."""
    dep = next(d for d in helm.template(*values) if d["kind"] == "Deployment")
    args: list[str] = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "operator"
    return [a for a in args[1:] if not a.startswith(("--liveness=", "--metrics-port="))]


def run_as_account(
    cluster: ClusterHandle, release_ns: str, account: str, args: list[str], log_dir: pathlib.Path
) -> OperatorProcess:
    env = python_env(cluster.env)
    env["KUBECONFIG"] = str(sa_kubeconfig(cluster, release_ns, account, log_dir / "sa.kubeconfig"))
    proc = OperatorProcess(env, log_dir, extra_args=args)
    proc.start()
    return proc


def isvc(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "name": "mlp",
                "format": "onnx",
                "storageUri": "https://127.0.0.1:9/models/mlp.onnx",
            },
            "gpu": {"count": 1},
            "scaling": {"minReplicas": 2, "maxReplicas": 3},
            # The router too: the operator creates its ServiceAccount, Role and RoleBinding
            # with the chart's identity (RBAC lets it grant only what it holds itself), and
            # the router's pods pass `restricted` admission.
            "router": {"enabled": True},
        },
    }


def ready(cluster: ClusterHandle, ns: str, name: str) -> bool:
    obj = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "inferenceservices", name)
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def serve_and_check(cluster: ClusterHandle, proc: OperatorProcess, ns: str) -> None:
    """An InferenceService (two replicas, so a PodDisruptionBudget too) becomes Ready; its pods
    were admitted; the operator's Events were recorded; nothing was forbidden."""
    cluster.custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, "inferenceservices", isvc("svc")
    )
    try:
        wait_for(lambda: ready(cluster, ns, "svc"), 150, f"{ns}/svc Ready")
    finally:
        denied = forbidden_lines(proc.log())
    assert not denied, "\n".join(denied[:20])
    pods = cluster.core.list_namespaced_pod(
        ns, label_selector="kubeinfer.io/inferenceservice=svc"
    ).items
    assert len(pods) == 2
    wait_for(
        lambda: (
            cluster.core.list_namespaced_pod(ns, label_selector="kubeinfer.io/router=svc").items
        ),
        60,
        f"{ns}/svc-router's pod admitted",
    )
    assert not failed_creates(cluster, ns)
    client.PolicyV1Api(cluster.api).read_namespaced_pod_disruption_budget("svc-predictor", ns)
    reasons = {
        e.reason
        for e in cluster.core.list_namespaced_event(ns).items
        if e.source and e.source.component == "kubeinfer"
    }
    assert reasons, "the operator recorded no Events (events create denied?)"
    assert proc.metric("kubeinfer_api_writes_total", namespace=ns) > 0


@pytest.mark.usefixtures("no_admin_operator")
def test_cluster_wide_rbac_sufficient_and_pods_restricted(
    cluster: ClusterHandle, helm: Helm, release: str, tmp_path: pathlib.Path
) -> None:
    # The serving namespace enforces `restricted`: the generated pods must pass admission.
    ns = make_namespace(cluster, "t-restricted", RESTRICTED)
    proc = run_as_account(cluster, release, RELEASE, chart_operator_args(helm), tmp_path)
    account = f"system:serviceaccount:{release}:{RELEASE}"
    # The whole suite's operator work runs without any access to Secrets.
    for verb in ("get", "list", "watch"):
        assert not can_i(cluster, account, verb, "secrets", ns), verb
    # The GPU census a GPU rollout takes (clients/cluster.py; pods are listed under the pod
    # rule), and the InferencePools it creates where their CRD is installed.
    assert can_i(cluster, account, "list", "nodes", None)
    assert may_write_pools(cluster, account, ns)
    assert not can_i(cluster, account, "get", "nodes", None)
    try:
        serve_and_check(cluster, proc, ns)
    finally:
        proc.stop()
        cluster.core.delete_namespace(ns)


def can_i(cluster: ClusterHandle, account: str, verb: str, resource: str, ns: str | None) -> bool:
    """`kubectl auth can-i` as ``account`` (impersonation; a SubjectAccessReview underneath)."""
    where = ["-n", ns] if ns else []
    resource, _, sub = resource.partition("/")
    extra = [f"--subresource={sub}"] if sub else []
    out = kubectl(
        cluster, "auth", "can-i", verb, resource, *extra, f"--as={account}", *where, check=False
    )
    return out == "yes"


def may_write_pools(cluster: ClusterHandle, account: str, ns: str) -> bool:
    """InferencePool create/patch/delete, asked as a SubjectAccessReview: `kubectl auth can-i`
    cannot name a resource whose CRD is not installed (this session has none)."""

    def allowed(verb: str) -> bool:
        attributes = client.V1ResourceAttributes(
            verb=verb, group="inference.networking.k8s.io", resource="inferencepools", namespace=ns
        )
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(user=account, resource_attributes=attributes)
        )
        answer = client.AuthorizationV1Api(cluster.api).create_subject_access_review(review)
        return bool(answer.status.allowed)

    return all(allowed(verb) for verb in ("create", "patch", "delete"))


def test_operator_pod_template_passes_restricted_dry_run(
    cluster: ClusterHandle, helm: Helm, namespace: str
) -> None:
    """The chart's operator pod template, as a bare Pod, through admission at `restricted`."""
    cluster.core.patch_namespace(namespace, {"metadata": {"labels": RESTRICTED}})
    dep = next(d for d in helm.template() if d["kind"] == "Deployment")
    template = dep["spec"]["template"]
    template["spec"]["serviceAccountName"] = "default"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "operator-dry-run", **template["metadata"]},
        "spec": template["spec"],
    }
    cluster.core.create_namespaced_pod(namespace, pod, dry_run="All")
    # And the check is real: a root container is refused.
    pod["spec"]["securityContext"]["runAsNonRoot"] = False
    with pytest.raises(ApiException) as err:
        cluster.core.create_namespaced_pod(namespace, pod, dry_run="All")
    assert err.value.status == 403 and "restricted" in str(err.value.body)


@pytest.mark.usefixtures("no_admin_operator")
def test_namespaced_mode_sufficient_and_confined(
    cluster: ClusterHandle, helm: Helm, release: str, tmp_path: pathlib.Path
) -> None:
    """A second release watches one namespace: it serves there with zero 403s and can touch
    nothing in any other namespace. CRDs and runtimes come from the first release."""
    watched = make_namespace(cluster, "t-watched")
    other = make_namespace(cluster, "t-other")
    name = "kubeinfer-team"
    values = [
        "--set",
        "runtimes.install=false",
        "--set",
        f"watchNamespaces={{{watched}}}",
    ]
    helm("install", name, str(CHART), "-n", release, "--skip-crds", *values)
    try:
        account = f"system:serviceaccount:{release}:{name}"
        assert can_i(cluster, account, "create", "deployments.apps", watched)
        assert can_i(cluster, account, "patch", "inferenceservices.kubeinfer.io/status", watched)
        # A scale-in's marks on the pods it removes.
        assert can_i(cluster, account, "patch", "pods", watched)
        for verb, resource in (
            ("get", "pods"),
            ("patch", "pods"),
            ("create", "deployments.apps"),
            ("patch", "inferenceservices.kubeinfer.io/status"),
            ("get", "secrets"),
            ("create", "events"),
        ):
            assert not can_i(cluster, account, verb, resource, other), (verb, resource)
        for verb, resource in (
            ("list", "secrets"),
            ("list", "pods"),
            ("create", "pods"),
            ("delete", "deployments.apps"),
            ("delete", "namespaces"),
            # No GPU census in namespaced mode: a GPU rollout there never surges.
            ("list", "nodes"),
        ):
            assert not can_i(cluster, account, verb, resource, None), (verb, resource)
        assert may_write_pools(cluster, account, watched)
        assert not may_write_pools(cluster, account, other)
        assert can_i(cluster, account, "list", "inferenceruntimes.kubeinfer.io", None)
        proc = run_as_account(cluster, release, name, chart_operator_args(helm, *values), tmp_path)
        try:
            serve_and_check(cluster, proc, watched)
        finally:
            proc.stop()
    finally:
        helm("uninstall", name, "-n", release)
        for ns in (watched, other):
            cluster.core.delete_namespace(ns)


def test_uninstall_leaves_only_crds(cluster: ClusterHandle, helm: Helm, release: str) -> None:
    """Last in the module: `helm uninstall` removes every object but the CRDs (Helm never deletes
    its crds/ folder's objects: deleting a CRD deletes every InferenceService in the cluster)."""
    before = release_objects(cluster, release)
    assert any(o.startswith("clusterrole.") for o in before), before
    helm("uninstall", RELEASE, "-n", release, "--wait", "--timeout=120s")
    wait_for(lambda: not release_objects(cluster, release), 60, "release objects gone")
    assert not kubectl(cluster, "get", "inferenceruntimes", "-o", "name")
    assert not kubectl(
        cluster,
        "get",
        "all,serviceaccounts,configmaps,roles,rolebindings",
        "-n",
        release,
        "-l",
        f"app.kubernetes.io/instance={RELEASE}",
        "-o",
        "name",
    )
    for kind in ("services", "runtimes"):
        kubectl(cluster, "get", "crd", f"inference{kind}.{GROUP}")
