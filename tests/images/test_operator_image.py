"""The operator image in runc against the local cluster, as the chart's pod: the chart's args
and env, its ServiceAccount's token and the cluster CA mounted where a kubelet mounts them,
KUBERNETES_SERVICE_HOST/PORT naming the API server on loopback, uid 1000, a read-only root.
It must reconcile an InferenceService to Ready with no request forbidden, and stop cleanly on
SIGTERM. Also: the image carries no model runtime."""

from __future__ import annotations

import base64
import pathlib
import signal
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubeinfer_cluster import build, containers
from tests.conftest import ClusterHandle
from tests.images import pods
from tests.images.pods import Images
from tests.integration.helm.conftest import CHART, Helm
from tests.operator_process import forbidden_lines, install
from tests.waiting import wait_for

GROUP, VERSION = "kubeinfer.io", "v1alpha1"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
RELEASE = "kubeinfer"


def kubectl(cluster: ClusterHandle, *args: str) -> str:
    return subprocess.run(
        [str(cluster.tools.kubectl), *args],
        env=cluster.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.strip()


class Release:
    def __init__(self, namespace: str, deployment: dict[str, Any]) -> None:
        self.namespace = namespace
        self.deployment = deployment

    @property
    def pod(self) -> dict[str, Any]:
        pod: dict[str, Any] = self.deployment["spec"]["template"]["spec"]
        return pod

    @property
    def container(self) -> dict[str, Any]:
        container: dict[str, Any] = self.pod["containers"][0]
        return container


@pytest.fixture(scope="module")
def release(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    """The chart installed (RBAC, ServiceAccount) with replicas=0: the container below is its
    operator, so kwok's stand-in pod must not exist. CRDs and runtimes are installed as the
    suite installs them (the chart's are the same files): cluster-scoped runtimes another test
    applied cannot be adopted by a release, and uninstalling one must not remove them."""
    install(cluster.tools.kubectl, cluster.env)
    helm_binary = build.ensure_tools(with_helm=True).helm
    assert helm_binary is not None
    helm = Helm(helm_binary, cluster.env, tmp_path_factory.mktemp("helm-home"))
    namespace = f"kubeinfer-img-{uuid.uuid4().hex[:6]}"
    helm(
        "install", RELEASE, str(CHART), "-n", namespace, "--create-namespace",
        "--skip-crds", "--set", "replicas=0", "--set", "runtimes.install=false", "--wait=false",
    )  # fmt: skip
    manifest = helm("get", "manifest", RELEASE, "-n", namespace).stdout
    deployment = next(d for d in yaml.safe_load_all(manifest) if d and d["kind"] == "Deployment")
    try:
        yield Release(namespace, deployment)
    finally:
        helm("uninstall", RELEASE, "-n", namespace, check=False)
        cluster.core.delete_namespace(namespace)


def service_account_volume(
    cluster: ClusterHandle, release: Release, directory: pathlib.Path
) -> pathlib.Path:
    """What the kubelet projects into the pod: a TokenRequest token, the CA, the namespace."""
    account = release.pod["serviceAccountName"]
    token = kubectl(cluster, "create", "token", account, "-n", release.namespace, "--duration=1h")
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    entry = admin["clusters"][0]["cluster"]
    if "certificate-authority-data" in entry:
        ca = base64.b64decode(entry["certificate-authority-data"])
    else:
        ca = pathlib.Path(entry["certificate-authority"]).read_bytes()
    directory.mkdir(parents=True)
    for name, data in (("token", token.encode()), ("ca.crt", ca), ("namespace", b"")):
        (directory / name).write_bytes(data if name != "namespace" else release.namespace.encode())
        (directory / name).chmod(0o644)  # the projected volume's defaultMode
    directory.chmod(0o755)
    return directory


def api_server(cluster: ClusterHandle) -> tuple[str, str]:
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    url = urllib.parse.urlsplit(admin["clusters"][0]["cluster"]["server"])
    assert url.hostname == "127.0.0.1", "the API server must be on loopback"
    return url.hostname, str(url.port)


def chart_args(release: Release, live: int, metrics: int) -> list[str]:
    """The chart's operator args with this host's free ports (0.0.0.0 is rewritten by pods)."""
    out = []
    for arg in release.container["args"]:
        if arg.startswith("--liveness="):
            arg = f"--liveness=http://0.0.0.0:{live}/healthz"
        elif arg.startswith("--metrics-port="):
            arg = f"--metrics-port={metrics}"
        out.append(arg)
    return out


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
        },
    }


def ready(cluster: ClusterHandle, ns: str, name: str) -> bool:
    obj = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "inferenceservices", name)
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def test_chart_runs_the_operator_as_uid_1000_read_only(release: Release) -> None:
    """What the runc containers below mirror: the chart's pod security settings."""
    assert release.pod["securityContext"]["runAsUser"] == pods.UID
    security = release.container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert [m["mountPath"] for m in release.container["volumeMounts"]] == ["/tmp"]


def test_operator_container_reconciles_with_the_charts_identity(
    cluster: ClusterHandle, imageset: Images, release: Release, tmp_path: pathlib.Path
) -> None:
    live, metrics = pods.free_port(), pods.free_port()
    host, port = api_server(cluster)
    env = {e["name"]: e["value"] for e in release.container.get("env", [])}
    env.update(KUBERNETES_SERVICE_HOST=host, KUBERNETES_SERVICE_PORT=port)
    sa = service_account_volume(cluster, release, tmp_path / "serviceaccount")
    container = imageset.container(
        "operator",
        "operator",
        args=chart_args(release, live, metrics),
        env=env,
        mounts=[containers.Mount(SA_DIR, sa)],
    )
    container.run()
    ns = f"t-img-{uuid.uuid4().hex[:6]}"
    try:
        wait_for(
            lambda: (
                pods.http_status(f"http://127.0.0.1:{live}/healthz") == 200
                or container.exit_code() is not None
            ),
            90,
            "the operator container's liveness endpoint",
        )
        assert container.exit_code() is None, container.output()[-4000:]
        pid = container.pid()
        assert pods.process_status(pid)["Uid"].split() == ["1000"] * 4
        assert "ro" in pods.root_mount_options(pid)

        cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        cluster.custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, "inferenceservices", isvc("svc")
        )
        wait_for(lambda: ready(cluster, ns, "svc"), 150, f"{ns}/svc Ready")
        deployment = cluster.apps.read_namespaced_deployment("svc-predictor", ns)
        assert deployment.spec.template.spec.init_containers[0].name == "storage-initializer"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as r:
            text = r.read().decode()
        writes = [
            line
            for line in text.splitlines()
            if line.startswith("kubeinfer_api_writes_total{") and f'namespace="{ns}"' in line
        ]
        assert writes and sum(float(line.rsplit(" ", 1)[1]) for line in writes) > 0
        log = container.output()
        denied = forbidden_lines(log)
        assert not denied, "\n".join(denied[:20])
        container.kill(signal.SIGTERM)
        code = container.wait(timeout=30)
        assert code == 0, container.output()[-3000:]
    finally:
        container.stop(timeout=10)
        cluster.core.delete_namespace(ns)


def test_operator_image_carries_no_model_runtime(imageset: Images) -> None:
    rootfs = imageset.rootfs("operator")
    site = next(rootfs.glob("opt/venv/lib/python3*/site-packages"))
    installed = {p.name.split("-")[0].lower() for p in site.iterdir()}
    assert not installed & {"onnxruntime", "onnx", "tritonclient", "numpy", "torch"}
    assert {"kubeinfer", "kopf", "boto3"} <= installed
    assert not (site / "pip").exists()  # no installer in the image
