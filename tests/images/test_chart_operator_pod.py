"""The Helm chart's operator pod runs the real operator image.

The chart is installed on the local cluster with the pod label that makes the cluster's kubelet
run it as a container (runc, the built image, uid 1000, read-only root, the chart's security
context); the API server's ServiceAccount admission gives it the chart's ServiceAccount token,
which the kubelet projects as a node would. No operator runs outside that container: what
reconciles the InferenceService below is the image users deploy.
"""

from __future__ import annotations

import pathlib
import subprocess
from typing import Any

from kubeinfer_cluster import build, images
from kubeinfer_cluster.kubelet import plan
from tests.conftest import ClusterHandle
from tests.e2e import scenario
from tests.operator_process import REPO, install
from tests.waiting import wait_for

RELEASE, NAMESPACE = "kubeinfer", "kubeinfer-system"
# The run label as a --set key: helm reads unescaped dots as nesting.
LABEL_KEY = plan.RUN_LABEL.replace(".", "\\.")


def helm(cluster: ClusterHandle, *args: str) -> str:
    tool = build.ensure_tools(with_helm=True).helm
    assert tool is not None
    proc = subprocess.run(
        [str(tool), *args], env=cluster.env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stderr}"
    return proc.stdout


def ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def test_the_charts_operator_pod_runs_the_operator_image(
    cluster: ClusterHandle,
    built: dict[str, images.Built],
    namespace: str,
    tmp_path: pathlib.Path,
) -> None:
    # CRDs and runtimes as the suite installs them (the chart's are the same files), so the
    # release below owns only the operator and its RBAC.
    install(cluster.tools.kubectl, cluster.env)
    helm(
        cluster,
        "install",
        RELEASE,
        str(REPO / "charts" / "kubeinfer"),
        "-n",
        NAMESPACE,
        "--create-namespace",
        "--skip-crds",
        "--set",
        "runtimes.install=false",
        "--set-string",
        f"podLabels.{LABEL_KEY}={plan.CONTAINER_MODE}",
    )
    try:
        [pod] = wait_for(
            lambda: [p for p in cluster.core.list_namespaced_pod(NAMESPACE).items if ready(p)],
            120,
            "the chart's operator pod Ready",
        )
        [container] = pod.status.container_statuses
        assert container.image == built["operator"].ref and container.restart_count == 0
        # The operator in the container, with the chart's ServiceAccount, serves a service.
        scenario.apply(cluster, namespace, (REPO / "examples" / "quickstart.yaml").read_text())
        wait_for(
            lambda: (
                scenario.condition(scenario.get(cluster, namespace, "quickstart"), "Ready").get(
                    "status"
                )
                == "True"
            ),
            90,
            "quickstart Ready, reconciled by the operator image",
        )
        events = cluster.core.list_namespaced_event(namespace).items
        assert any(e.reporting_component == "kubeinfer" for e in events)
    finally:
        helm(cluster, "uninstall", RELEASE, "-n", NAMESPACE)
