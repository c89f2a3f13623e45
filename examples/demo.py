"""`make demo`: a local GPU cluster, the operator, the quick-start InferenceService under a burst.

Steps (each printed as it runs):
1. start the local control plane (built once from the Go module proxy) with 4 fake GPU nodes;
2. install the CRDs and default runtimes, start the operator;
3. apply examples/quickstart.yaml and wait for Ready;
4. play kubelet: a real kubeinfer-onnx-server per pod, bound to the pod's 127.x IP;
5. send a burst of inference requests, watch the autoscaler scale up, then back down;
6. show `kubectl describe kisvc quickstart` with the autoscaler's decisions.
Everything started here is stopped at the end (KEEP=1 keeps the cluster for exploring).
KUBEINFER_INSTALL=helm installs CRDs, runtimes and RBAC with the chart and runs the operator
with the chart's ServiceAccount identity.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "integration" / "runtime")]

import yaml  # noqa: E402
from kubernetes import client, config  # noqa: E402
from runtime_models import build_mlp  # noqa: E402

from kubeinfer_cluster import build, run  # noqa: E402
from tests.e2e.load import run_load  # noqa: E402
from tests.e2e.pod_servers import PodServers  # noqa: E402
from tests.operator_process import OperatorProcess, install, python_env  # noqa: E402


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def _install_with_helm(
    cluster: run.Cluster, env: dict[str, str], kubectl: Any, work: pathlib.Path
) -> OperatorProcess:
    """Install the chart (CRDs, runtimes, RBAC, ServiceAccount, the operator Deployment), then
    run the operator as a local process *with the chart's ServiceAccount identity*: kwok runs
    no containers, so the Deployment's pod is a stand-in while the process does the work."""
    step("Installing with Helm: helm install kubeinfer charts/kubeinfer")
    tools = build.ensure_tools(with_helm=True)
    assert tools.helm is not None
    out = subprocess.run(
        [
            str(tools.helm),
            "install",
            "kubeinfer",
            str(REPO / "charts" / "kubeinfer"),
            "-n",
            "kubeinfer-system",
            "--create-namespace",
        ],
        env=env,
        text=True,
        capture_output=True,
        check=True,
    ).stdout
    print(out)
    account = kubectl(
        "get",
        "sa",
        "-n",
        "kubeinfer-system",
        "-l",
        "app.kubernetes.io/instance=kubeinfer",
        "-o",
        "name",
    ).split()[0]
    account = account.split("/", 1)[1]
    token = kubectl("create", "token", account, "-n", "kubeinfer-system", "--duration=2h")
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server = admin["clusters"][0]["cluster"]
    sa_config = work / "sa-kubeconfig"
    sa_config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "sa",
                "clusters": [{"name": "c", "cluster": server}],
                "users": [{"name": "sa", "user": {"token": token.strip()}}],
                "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
            }
        )
    )
    sa_config.chmod(0o600)
    print(f"operator runs as system:serviceaccount:kubeinfer-system:{account}")
    return OperatorProcess(python_env(dict(env, KUBECONFIG=str(sa_config))), work)


def main() -> int:
    keep = os.environ.get("KEEP") == "1"
    step("Starting the local cluster (first run builds Kubernetes from source: ~15-30 min)")
    cluster = run.up("demo", tie_to_parent=not keep)
    env = dict(
        os.environ,
        KUBECONFIG=str(cluster.kubeconfig),
        PATH=f"{cluster.tools.kubectl.parent}:{os.environ['PATH']}",
    )

    def kubectl(*args: str, stdin: str | None = None) -> str:
        out = subprocess.run(
            ["kubectl", *args], env=env, input=stdin, text=True, capture_output=True, check=True
        ).stdout
        return out

    work = pathlib.Path(tempfile.mkdtemp(prefix="kubeinfer-demo-"))
    operator = OperatorProcess(python_env(env), work)
    try:
        print(
            kubectl(
                "get",
                "nodes",
                "-o",
                "custom-columns=NODE:.metadata.name,"
                "GPUS:.status.allocatable.nvidia\\.com/gpu,"
                "PRODUCT:.metadata.labels.nvidia\\.com/gpu\\.product,"
                "INTERNAL-IP:.status.addresses[0].address,POD-CIDR:.spec.podCIDR",
            )
        )
        if os.environ.get("KUBEINFER_INSTALL") == "helm":
            operator = _install_with_helm(cluster, env, kubectl, work)
        else:
            step("Installing CRDs and runtimes; starting the operator")
            install(cluster.tools.kubectl, env)
        operator.start()
        print(kubectl("get", "inferenceruntimes"))
        step("Applying examples/quickstart.yaml (an ONNX model on 1 GPU, 1-4 replicas)")
        print(kubectl("apply", "-f", str(REPO / "examples" / "quickstart.yaml")))
        # Short windows so the demo shows a scale-down within a minute, and target 1 in flight:
        # the demo's MLP answers in microseconds, so 24 clients on a laptop keep only about
        # one request in flight per server, and the example's target of 4 would (rightly)
        # hold at one replica.
        kubectl(
            "patch",
            "kisvc",
            "quickstart",
            "--type=merge",
            "-p",
            '{"spec": {"scaling": {"stableWindowSeconds": 12, "scaleDownDelaySeconds": 10,'
            ' "target": 1}}}',
        )
        kubectl("wait", "kisvc/quickstart", "--for=condition=Ready", "--timeout=120s")
        print(kubectl("get", "kisvc,deploy,pods", "-o", "wide"))

        step("Serving: a real kubeinfer-onnx-server per pod, on the pod's loopback IP")
        repo = work / "models"
        build_mlp(repo / "mlp" / "1" / "model.onnx")
        (work / "servers").mkdir()
        config.load_kube_config(config_file=str(cluster.kubeconfig))
        core = client.CoreV1Api()
        apps = client.AppsV1Api()
        with PodServers(
            core, "default", "kubeinfer.io/inferenceservice=quickstart", repo, work / "servers"
        ) as servers:
            deadline = time.monotonic() + 60
            while not servers.ready_ips() and time.monotonic() < deadline:
                time.sleep(0.5)
            print(f"ready servers: {servers.ready_ips()}")

            def replicas() -> tuple[int, int]:
                dep = apps.read_namespaced_deployment("quickstart-predictor", "default")
                return int(dep.spec.replicas or 0), int(dep.status.ready_replicas or 0)

            step("A 25 s burst of 24 concurrent clients; the autoscaler reacts")
            print(f"{'t (s)':>6} {'desired':>8} {'ready':>6} {'servers':>8}")
            started = time.monotonic()
            stop = threading.Event()

            def watch() -> None:
                while not stop.is_set():
                    want, ready = replicas()
                    print(
                        f"{time.monotonic() - started:6.1f} {want:8d} {ready:6d} "
                        f"{len(servers.ready_ips()):8d}",
                        flush=True,
                    )
                    stop.wait(2)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            result = asyncio.run(run_load(servers.ready_ips, concurrency=24, duration_s=25))
            print(
                f"burst done: {result.ok} ok, {result.rejected_503} answered 503 (retried), "
                f"{result.failed} failed"
            )
            step("Load gone: waiting for the scale-down")
            deadline = time.monotonic() + 120
            while replicas()[0] > 1 and time.monotonic() < deadline:
                time.sleep(1)
            stop.set()
            watcher.join()
        step("kubectl describe kisvc quickstart (status, autoscaler decisions, events)")
        print(kubectl("describe", "kisvc", "quickstart"))
        if keep:
            print(
                "\nKEEP=1: the cluster stays up. Use it with:\n"
                '  eval "$(kubeinfer-cluster env --name demo)"; kubectl get kisvc\n'
                "Stop it with: kubeinfer-cluster down --name demo"
            )
    finally:
        operator.stop()
        if not keep:
            cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
