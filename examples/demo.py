"""`make demo`: a local GPU cluster, the operator, the quick-start InferenceService under a burst.

Steps (each printed as it runs):
1. start the local control plane (built once from the Go module proxy) with 4 fake GPU nodes;
2. install the CRDs and default runtimes, start the operator;
3. apply examples/quickstart.yaml, with the model built here and its pods run for real by the
   local kubelet (storage initializer, then kubeinfer-onnx-server on the pod's 127.x IP); Ready
   turns True only when that server answers its readiness probe;
4. measure one replica's capacity, then send an open-loop burst at 3x that rate and watch the
   autoscaler scale up within its panic window, serve every request, and scale back down;
5. show `kubectl describe kisvc quickstart` with the autoscaler's decisions.
Everything started here is stopped at the end (KEEP=1 keeps the cluster for exploring).
KUBEINFER_INSTALL=helm installs CRDs, runtimes and RBAC with the chart and runs the operator
with the chart's ServiceAccount identity. DEMO=scale-to-zero shows scale to zero and back
through kubeinfer-router instead of steps 3-5 (examples/demo_zero.py); DEMO=canary a canary
behind the router rolled back on its own error rate (examples/demo_canary.py).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

import yaml  # noqa: E402
from examples import demo_canary, demo_zero  # noqa: E402
from kubernetes import client, config  # noqa: E402

from kubeinfer_cluster import build, run  # noqa: E402
from kubeinfer_cluster.kubelet import plan  # noqa: E402
from tests.e2e import load, scenario  # noqa: E402
from tests.operator_process import OperatorProcess, install, python_env  # noqa: E402

# The quick start as applied here: the model is built on this machine (no network), and its
# pods run for real. A CPU-only machine cannot drive a GPU replica batching 32, so each replica
# emulates a GPU that runs a batch of up to 4 in 80 ms (about 50 requests/s), and short windows
# let the scale-down show within a minute.
BURST = 3.0  # the burst, in multiples of one replica's measured capacity
BURST_S = 25.0


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


def quickstart(model_uri: str) -> str:
    doc = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    spec = doc["spec"]
    spec["model"]["storageUri"] = model_uri
    spec["batching"] = {"maxBatchSize": 4}
    # Off (one replica) while its capacity is measured: saturating it must not scale it yet.
    spec["scaling"].update(stableWindowSeconds=12, scaleDownDelaySeconds=10, mode="Off")
    spec["replicas"] = 1
    spec["podMetadata"] = {
        "labels": {plan.RUN_LABEL: "true"},
        "annotations": {plan.DEVICE_MS_ANNOTATION: "80"},
    }
    return yaml.safe_dump(doc)


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
        other = {"scale-to-zero": demo_zero.run, "canary": demo_canary.run}
        if os.environ.get("DEMO") in other:
            config.load_kube_config(config_file=str(cluster.kubeconfig))
            other[os.environ["DEMO"]](
                kubectl=kubectl,
                core=client.CoreV1Api(),
                apps=client.AppsV1Api(),
                custom=client.CustomObjectsApi(),
                work=work,
                step=step,
            )
            return 0

        step("Applying examples/quickstart.yaml (an ONNX model on 1 GPU, 1-4 replicas)")
        print(
            "as applied here: the model is built on this machine (storageUri file://...), its\n"
            "pods run for real (label cluster.kubeinfer.io/run), each replica emulates a GPU\n"
            "that runs a batch of up to 4 in 80 ms, the windows are short (12 s / 10 s), and\n"
            "autoscaling starts Off (1 replica) until one replica's capacity is measured."
        )
        manifest = quickstart(scenario.model_uri(work))
        print(kubectl("apply", "-f", "-", stdin=manifest))
        config.load_kube_config(config_file=str(cluster.kubeconfig))
        core, apps = client.CoreV1Api(), client.AppsV1Api()
        custom = client.CustomObjectsApi()
        print(f"{'t (s)':>6}  READY  REASON")
        applied = time.monotonic()
        shown = ""
        while True:
            obj = custom.get_namespaced_custom_object(
                "kubeinfer.io", "v1alpha1", "default", "inferenceservices", "quickstart"
            )
            ready = scenario.condition(obj, "Ready")
            line = f"{ready.get('status', '-'):5}  {ready.get('reason', '')}"
            if line != shown:
                print(f"{time.monotonic() - applied:6.1f}  {line}", flush=True)
                shown = line
            if ready.get("status") == "True":
                break
            if time.monotonic() - applied > 120:
                raise SystemExit(f"quickstart not Ready after 120 s: {ready}")
            time.sleep(0.2)
        print(kubectl("get", "kisvc,pods", "-o", "wide"))

        with load.Endpoints(core, "default", f"{scenario.LABEL}=quickstart") as endpoints:
            [ip] = endpoints()
            print(f"ready: the server at {ip} answers; Ready turned True after its probe passed")
            step("Measuring one replica's capacity (closed loop, 3 s; autoscaling still off)")
            capacity = load.run(load.measure_capacity(ip))
            print(f"one replica serves {capacity:.0f} requests/s")
            print(
                kubectl(
                    "patch",
                    "kisvc",
                    "quickstart",
                    "--type=merge",
                    "-p",
                    '{"spec": {"scaling": {"mode": "Auto"}}}',
                ),
                end="",
            )
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                obj = custom.get_namespaced_custom_object(
                    "kubeinfer.io", "v1alpha1", "default", "inferenceservices", "quickstart"
                )
                auto = (obj.get("status") or {}).get("autoscaler") or {}
                if auto.get("signals", {}).get("scraped"):
                    break
                time.sleep(0.5)
            print("autoscaling on: the autoscaler scrapes the replica every 2 s")

            def replicas() -> tuple[int, int]:
                dep = apps.read_namespaced_deployment("quickstart-predictor", "default")
                return int(dep.spec.replicas or 0), int(dep.status.ready_replicas or 0)

            step(
                f"An open-loop burst: {BURST:g}x that, {BURST * capacity:.0f} requests/s for "
                f"{BURST_S:.0f} s; the autoscaler reacts"
            )
            print(f"{'t (s)':>6} {'desired':>8} {'ready':>6} {'sent':>7} {'ok':>7} {'p50 ms':>7}")
            started = time.monotonic()
            stop = threading.Event()
            result = load.LoadResult()

            def watch() -> None:
                while not stop.is_set():
                    want, ready = replicas()
                    done = sorted(result.latencies_s[-200:])
                    p50 = done[len(done) // 2] * 1000 if done else float("nan")
                    print(
                        f"{time.monotonic() - started:6.1f} {want:8d} {ready:6d} "
                        f"{result.sent:7d} {result.ok:7d} {p50:7.0f}",
                        flush=True,
                    )
                    stop.wait(2)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            load.run(
                load.open_loop(endpoints, rate=BURST * capacity, duration_s=BURST_S, result=result)
            )
            print(f"burst done: {result.summary()}")
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
