"""Start and stop the local control plane: etcd, API server, controllers, scheduler, kwok.

Owns: the state directory of one named cluster (pids, logs, certificates, kubeconfig), the
process lifecycle (every child is recorded by pid; ``down`` stops exactly those), and the fake
GPU nodes. Every listener binds 127.0.0.1 and every node and pod address is inside 127.0.0.0/8,
so nothing here can dial outside loopback.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import dataclasses
import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import yaml

from kubeinfer_cluster import build
from kubeinfer_cluster.kubelet import plan

DEFAULT_NAME = "default"
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
SERVICE_CIDR = "127.96.0.0/16"
# kwok's fallback pool; nodes get their own 127.1.N.0/24 so pod IPs say which node they are on.
KWOK_CIDR = "127.2.0.0/16"
# The common name the API server's front-proxy client certificate carries (aggregation layer).
FRONT_PROXY_CLIENT = "front-proxy-client"


class ClusterError(RuntimeError):
    """The cluster could not be started; the message names the component and its log tail."""


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    count: int = 4
    gpus_per_node: int = 8
    gpu_product: str = GPU_PRODUCT
    cpu: str = "32"
    memory: str = "256Gi"
    # The last node also offers MIG slices (mixed strategy), for MIG InferenceServices.
    mig_profile: str = "nvidia.com/mig-1g.10gb"
    mig_slices: int = 7


def state_root() -> pathlib.Path:
    return build.cache_root() / "clusters"


def state_dir(name: str = DEFAULT_NAME) -> pathlib.Path:
    return state_root() / name


def kubeconfig_path(name: str = DEFAULT_NAME) -> pathlib.Path:
    return state_dir(name) / "kubeconfig"


# Ports handed out by this process: see _free_port.
_HANDED_OUT: set[int] = set()


def _free_port() -> int:
    """A loopback port nothing listens on, never one this process handed out before.

    The ports are chosen before the components bind them, and the kernel offers a port again
    once the probe socket is closed: the scheduler was once given etcd's client port, failed
    to bind it, and no pod was ever scheduled (a fresh-clone e2e run failed on it)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _die_with_parent() -> None:
    # Used for test clusters: if the pytest process dies (even SIGKILL), the kernel stops
    # the control plane too, so a crashed run leaves nothing behind.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def _read_pids(state: pathlib.Path) -> dict[str, int]:
    try:
        data: dict[str, int] = json.loads((state / "pids.json").read_text())
        return data
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    with contextlib.suppress(FileNotFoundError):
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _started_by_us(pid: int, state: pathlib.Path) -> bool:
    """Guard against pid reuse: the process must still reference our state directory."""
    try:
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return False
    return str(state) in cmdline


def _stop_pids(state: pathlib.Path, pids: dict[str, int], timeout: float = 10.0) -> None:
    mine = {n: p for n, p in pids.items() if _alive(p) and _started_by_us(p, state)}
    # Stop in reverse start order: kwok and controllers before the API server, etcd last.
    for pid in reversed(list(mine.values())):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in mine.values():
        while _alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


@dataclasses.dataclass
class Cluster:
    """A running local cluster; build with :func:`up`."""

    name: str
    state: pathlib.Path
    kubeconfig: pathlib.Path
    server: str
    pids: dict[str, int]
    tools: build.Tools

    def down(self) -> None:
        down(self.name)

    def restart_component(self, component: str) -> None:
        """Kill one component (kube-apiserver, etcd, ...) and start it again with the same args."""
        args = json.loads((self.state / "args.json").read_text())[component]
        pid = self.pids[component]
        _stop_pids(self.state, {component: pid})
        self.pids[component] = _spawn(self.state, component, args, tie=_tied(self.state))
        _save_pids(self.state, self.pids)


def _tied(state: pathlib.Path) -> bool:
    return (state / "tied").exists()


def _save_pids(state: pathlib.Path, pids: dict[str, int]) -> None:
    (state / "pids.json").write_text(json.dumps(pids, indent=2))


def _spawn(state: pathlib.Path, component: str, args: list[str], *, tie: bool) -> int:
    log = (state / "logs" / f"{component}.log").open("ab")
    preexec: Callable[[], None] | None = _die_with_parent if tie else None
    proc = subprocess.Popen(
        args,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=not tie,
        preexec_fn=preexec,
        cwd=state,
    )
    log.close()
    return proc.pid


def _wait(
    what: str,
    check: Callable[[], bool],
    *,
    timeout: float,
    state: pathlib.Path,
    component: str,
    pid: int,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if not _alive(pid):
            break
        time.sleep(0.2)
    tail = (state / "logs" / f"{component}.log").read_text(errors="replace")[-3000:]
    raise ClusterError(f"{what} did not become ready; {component} log tail:\n{tail}")


def _http_ok(url: str, token: str | None = None) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=2, context=ctx) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _service_account_keys(pki: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    key, pub = pki / "sa.key", pki / "sa.pub"
    if not key.exists():
        if shutil.which("openssl") is None:
            raise ClusterError(
                "openssl is needed to create the service-account key (apt install openssl)"
            )
        subprocess.run(
            ["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True
        )
        subprocess.run(
            ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)],
            check=True,
            capture_output=True,
        )
    return key, pub


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def front_proxy_certs(pki: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """The aggregation layer's front-proxy CA and the API server's client certificate under it.

    With them the API server proxies aggregated APIs (``external.metrics.k8s.io`` served by
    KEDA's metrics apiserver, say) with the caller's identity in request headers, and an
    extension API server trusts those headers because the client certificate is signed by the
    CA the API server publishes in ``kube-system/extension-apiserver-authentication``.
    Returns (CA certificate, client certificate, client key)."""
    ca, ca_key = pki / "front-proxy-ca.crt", pki / "front-proxy-ca.key"
    cert, key = pki / "front-proxy-client.crt", pki / "front-proxy-client.key"
    if cert.exists():
        return ca, cert, key
    if shutil.which("openssl") is None:
        raise ClusterError(
            "openssl is needed for the front-proxy certificates (apt install openssl)"
        )
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "3650",
        "-subj",
        "/CN=kubeinfer-front-proxy-ca",
    )
    csr = pki / "front-proxy-client.csr"
    _openssl(
        "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={FRONT_PROXY_CLIENT}"
    )
    ext = pki / "front-proxy-client.ext"
    ext.write_text("extendedKeyUsage=clientAuth\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "3650",
        "-extfile",
        str(ext),
    )
    return ca, cert, key


def _write_kubeconfig(
    path: pathlib.Path, server: str, token: str, name: str, ca: pathlib.Path | None = None
) -> None:
    # Until the API server has generated its self-signed certificate there is nothing to
    # verify against; the final kubeconfig pins that certificate.
    tls: dict[str, Any] = (
        {"certificate-authority-data": base64.b64encode(ca.read_bytes()).decode()}
        if ca is not None
        else {"insecure-skip-tls-verify": True}
    )
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": f"kubeinfer-{name}", "cluster": {"server": server, **tls}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [
            {
                "name": f"kubeinfer-{name}",
                "context": {"cluster": f"kubeinfer-{name}", "user": "admin"},
            }
        ],
        "current-context": f"kubeinfer-{name}",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


def _kwok_config(tools: build.Tools, state: pathlib.Path) -> pathlib.Path:
    """kwok's stages, minus the pods the local kubelet runs, plus a cold start: a pod annotated
    ``kubeinfer.io/simulated-cold-start: "5s"`` becomes Ready only after that delay (model
    download and load, simulated)."""
    docs = [yaml.safe_load(f.read_text()) for f in sorted(tools.kwok_stages.glob("*.yaml"))]
    annotation = f'.metadata.annotations["{plan.COLD_START_ANNOTATION}"]'
    for doc in docs:
        if doc["spec"]["resourceRef"]["kind"] == "Pod":
            doc["spec"]["selector"]["matchExpressions"].append(
                {"key": f'.metadata.labels["{plan.RUN_LABEL}"]', "operator": "DoesNotExist"}
            )
    for doc in list(docs):
        if doc["metadata"]["name"] != "pod-ready":
            continue
        delayed = yaml.safe_load(yaml.safe_dump(doc))
        doc["spec"]["selector"]["matchExpressions"].append(
            {"key": annotation, "operator": "DoesNotExist"}
        )
        delayed["metadata"]["name"] = "pod-ready-after-cold-start"
        delayed["spec"]["selector"]["matchExpressions"].append(
            {"key": annotation, "operator": "Exists"}
        )
        delayed["spec"]["delay"] = {
            "durationMilliseconds": 0,
            "durationFrom": {"expressionFrom": annotation},
        }
        docs.append(delayed)
    out = state / "kwok.yaml"
    out.write_text(yaml.safe_dump_all(docs))
    return out


@dataclasses.dataclass(frozen=True)
class _Ports:
    etcd: int
    etcd_peer: int
    api: int


def _component_args(
    tools: build.Tools,
    state: pathlib.Path,
    ports: _Ports,
    kubeconfig: pathlib.Path,
    sa_key: pathlib.Path,
    sa_pub: pathlib.Path,
) -> dict[str, list[str]]:
    """Each component's command line, in start order; recorded so one can be restarted."""
    etcd_url = f"http://127.0.0.1:{ports.etcd}"
    proxy_ca, proxy_cert, proxy_key = front_proxy_certs(state / "pki")
    return {
        "etcd": [
            str(tools.etcd),
            "--name=kubeinfer",
            f"--data-dir={state / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
            f"--initial-cluster=kubeinfer=http://127.0.0.1:{ports.etcd_peer}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ],
        "kube-apiserver": [
            str(tools.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports.api}",
            # Endpoints reject loopback addresses; with no reconciler the API server does not
            # try to publish its own.
            "--endpoint-reconciler-type=none",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--cert-dir={state / 'pki'}",
            f"--token-auth-file={state / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={sa_pub}",
            f"--service-account-signing-key-file={sa_key}",
            "--kubelet-preferred-address-types=InternalIP",
            # The aggregation layer, as kubeadm configures it: aggregated APIs (an external
            # metrics server for a real HPA) are proxied with the caller's identity in headers.
            # An APIService's Service must be an ExternalName on a loopback address here:
            # EndpointSlices reject loopback, and a ClusterIP Service without endpoints is
            # marked unavailable.
            f"--requestheader-client-ca-file={proxy_ca}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={proxy_cert}",
            f"--proxy-client-key-file={proxy_key}",
            "--v=1",
        ],
        "kube-controller-manager": [
            str(tools.kube_controller_manager),
            f"--kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
            f"--service-account-private-key-file={sa_key}",
            # Publishes the kube-root-ca.crt ConfigMap in every namespace, which the token
            # volume of every pod that talks to the API server mounts.
            f"--root-ca-file={state / 'pki' / 'apiserver.crt'}",
            "--use-service-account-credentials=false",
            "--allocate-node-cidrs=false",
            # Endpoints cannot hold loopback pod IPs, so their controllers would only log
            # errors; kubeinfer reads pod IPs from pod status instead.
            "--controllers=*,-node-ipam-controller,-service-lb-controller,"
            "-cloud-node-lifecycle-controller,-endpoints-controller,-endpointslice-controller,"
            "-endpointslice-mirroring-controller",
            # kwok renews node leases from one process; on a loaded 2-core machine a renewal
            # can come late, and a node marked NotReady has its pods marked NotReady for good
            # (kwok only readies Pending pods). Real node failures are simulated explicitly.
            "--node-monitor-grace-period=180s",
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--v=1",
        ],
        "kube-scheduler": [
            str(tools.kube_scheduler),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={_free_port()}",
            "--leader-elect=false",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--v=1",
        ],
        "kwok": [
            str(tools.kwok),
            f"--kubeconfig={kubeconfig}",
            f"--config={_kwok_config(tools, state)}",
            "--manage-all-nodes=true",
            # Heartbeats through node leases, renewed every 10 s (a quarter of the duration).
            # Without them kwok reports a node only through its status every few minutes, and
            # the node lifecycle controller marks every pod NotReady whenever one report comes
            # later than its grace period.
            "--node-lease-duration-seconds=40",
            f"--cidr={KWOK_CIDR}",
            "--node-ip=127.0.0.1",
            f"--server-address=127.0.0.1:{_free_port()}",
        ],
        # Runs the pods labelled cluster.kubeinfer.io/run=true as real processes.
        "kubelet": [
            sys.executable,
            "-m",
            "kubeinfer_cluster.kubelet",
            f"--kubeconfig={kubeconfig}",
            f"--state={state / 'kubelet'}",
        ],
    }


def up(
    name: str = DEFAULT_NAME,
    *,
    nodes: NodeSpec | None = None,
    tie_to_parent: bool = False,
    log: Callable[[str], None] | None = None,
) -> Cluster:
    """Build what is missing, start every component, create the GPU nodes, return the cluster.

    With ``tie_to_parent`` the components die with the calling process (test sessions).
    """
    say = log or (lambda msg: print(f"[kubeinfer-cluster] {msg}", file=sys.stderr, flush=True))
    nodes = nodes or NodeSpec()
    tools = build.ensure_tools(with_helm=False)
    state = state_dir(name)
    if state.exists():
        say(f"stopping leftovers of cluster {name!r}")
        _stop_pids(state, _read_pids(state))
        shutil.rmtree(state)
    for sub in ("logs", "pki", "etcd"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    if tie_to_parent:
        (state / "tied").touch()
    started = time.monotonic()
    token = secrets.token_hex(16)
    (state / "tokens.csv").write_text(f"{token},admin,admin,system:masters\n")
    sa_key, sa_pub = _service_account_keys(state / "pki")
    etcd_port, etcd_peer, api_port = _free_port(), _free_port(), _free_port()
    server = f"https://127.0.0.1:{api_port}"
    kubeconfig = state / "kubeconfig"
    _write_kubeconfig(kubeconfig, server, token, name)
    ports = _Ports(etcd=etcd_port, etcd_peer=etcd_peer, api=api_port)
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    args = _component_args(tools, state, ports, kubeconfig, sa_key, sa_pub)
    (state / "args.json").write_text(json.dumps(args, indent=2))
    pids: dict[str, int] = {}
    try:
        say(f"starting etcd on {etcd_url}")
        pids["etcd"] = _spawn(state, "etcd", args["etcd"], tie=tie_to_parent)
        _save_pids(state, pids)
        _wait(
            "etcd",
            lambda: _http_ok(f"{etcd_url}/health"),
            timeout=30,
            state=state,
            component="etcd",
            pid=pids["etcd"],
        )
        say(f"starting kube-apiserver {tools.kubernetes_version} on {server}")
        pids["kube-apiserver"] = _spawn(
            state, "kube-apiserver", args["kube-apiserver"], tie=tie_to_parent
        )
        _save_pids(state, pids)
        _wait(
            "kube-apiserver",
            lambda: _http_ok(f"{server}/readyz", token),
            timeout=90,
            state=state,
            component="kube-apiserver",
            pid=pids["kube-apiserver"],
        )
        _write_kubeconfig(kubeconfig, server, token, name, ca=state / "pki" / "apiserver.crt")
        for component in ("kube-controller-manager", "kube-scheduler", "kwok", "kubelet"):
            pids[component] = _spawn(state, component, args[component], tie=tie_to_parent)
            _save_pids(state, pids)
        say("creating GPU nodes")
        _create_nodes(kubeconfig, nodes)
        _wait_nodes_ready(kubeconfig, nodes.count, state=state, pid=pids["kwok"])
    except BaseException:
        _stop_pids(state, pids)
        raise
    say(
        f"cluster {name!r} up in {time.monotonic() - started:.1f} s: "
        f"{nodes.count} nodes x {nodes.gpus_per_node} nvidia.com/gpu"
    )
    return Cluster(
        name=name, state=state, kubeconfig=kubeconfig, server=server, pids=pids, tools=tools
    )


def _kubectl(kubeconfig: pathlib.Path, *args: str, stdin: str | None = None) -> str:
    tools = build.ensure_tools(with_helm=False)
    proc = subprocess.run(
        [str(tools.kubectl), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def build_node(index: int, spec: NodeSpec) -> dict[str, Any]:
    """A fake GPU node whose addresses are all loopback (node N: 127.0.1.N, pods 127.1.N.0/24)."""
    name = f"gpu-node-{index}"
    resources = {
        "cpu": spec.cpu,
        "memory": spec.memory,
        "pods": "110",
        "nvidia.com/gpu": str(spec.gpus_per_node),
    }
    if index == spec.count and spec.mig_slices:
        resources[spec.mig_profile] = str(spec.mig_slices)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": spec.gpu_product,
                "nvidia.com/gpu.count": str(spec.gpus_per_node),
            },
        },
        "spec": {"podCIDR": f"127.1.{index}.0/24", "podCIDRs": [f"127.1.{index}.0/24"]},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "addresses": [
                {"type": "InternalIP", "address": f"127.0.1.{index}"},
                {"type": "Hostname", "address": name},
            ],
        },
    }


def _create_nodes(kubeconfig: pathlib.Path, spec: NodeSpec, start: int = 1) -> None:
    docs = [build_node(i, spec) for i in range(start, start + spec.count)]
    _kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))


def add_node(kubeconfig: pathlib.Path, index: int, spec: NodeSpec | None = None) -> str:
    """Add one more GPU node (tests use it to relieve GPU exhaustion)."""
    spec = spec or NodeSpec()
    _kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump(build_node(index, spec)))
    return f"gpu-node-{index}"


def _wait_nodes_ready(
    kubeconfig: pathlib.Path, count: int, *, state: pathlib.Path, pid: int
) -> None:
    def ready() -> bool:
        out = _kubectl(
            kubeconfig,
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{'\\n'}{end}",
        )
        return out.split().count("True") >= count

    _wait("nodes", ready, timeout=60, state=state, component="kwok", pid=pid)


def down(name: str = DEFAULT_NAME) -> bool:
    """Stop every process this cluster started (by recorded pid) and remove its state."""
    state = state_dir(name)
    if not state.exists():
        return False
    _stop_pids(state, _read_pids(state))
    shutil.rmtree(state, ignore_errors=True)
    return True


def status(name: str = DEFAULT_NAME) -> dict[str, bool]:
    state = state_dir(name)
    return {
        component: _alive(pid) and _started_by_us(pid, state)
        for component, pid in _read_pids(state).items()
    }


def env_exports(name: str = DEFAULT_NAME) -> str:
    """Shell exports so ``eval "$(kubeinfer-cluster env)"`` gives a plain working kubectl."""
    tools = build.ensure_tools(with_helm=True)
    path = ":".join(str(d) for d in tools.bin_dirs)
    return f"export KUBECONFIG={kubeconfig_path(name)}\nexport PATH={path}:$PATH\n"
