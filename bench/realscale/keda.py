"""KEDA as host processes against the local cluster: its CRDs, its operator, and its metrics
apiserver registered as ``external.metrics.k8s.io`` through the API server's aggregation layer,
so the real HPA controller (the cluster's kube-controller-manager) reads KEDA's metrics exactly
as on a real cluster.

Owns: the certificates KEDA needs (one CA and one loopback certificate: the operator's gRPC
metrics service and the metrics apiserver authenticate each other with it, mutual TLS, and the
metrics apiserver serves HTTPS with it), the two processes (stopped by pid), the APIService and
its Service, and the ScaledObject manifest. Every listener binds 127.0.0.1 except the metrics
apiserver's own /metrics page, which KEDA binds on all interfaces (``:PORT``; a listener, it
dials nothing).

Why the Service is an ExternalName on 127.0.0.1: the aggregator marks an APIService whose
ClusterIP Service has no endpoints unavailable, and EndpointSlices reject loopback addresses;
an ExternalName Service skips that check and resolves to ``https://127.0.0.1:PORT``.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import signal
import socket
import subprocess
import time
from typing import Any

import yaml

from kubeinfer_cluster import build

NAMESPACE = "keda"
APISERVICE = "v1beta1.external.metrics.k8s.io"
SERVICE = "keda-metrics-apiserver"


class KedaError(RuntimeError):
    """KEDA did not come up; the message carries the log tails."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certs(folder: pathlib.Path) -> None:
    """ca.crt, tls.crt and tls.key as KEDA reads them from its cert dir: a certificate for
    127.0.0.1 and localhost, valid for both server and client authentication (mutual TLS
    between the operator and the metrics apiserver)."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    ca, ca_key = folder / "ca.crt", folder / "ca.key"
    _openssl(
        "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "30",
        "-subj", "/CN=keda-local-ca",
    )  # fmt: skip
    _openssl(
        "req", *ec, "-keyout", str(folder / "tls.key"), "-out", str(folder / "tls.csr"),
        "-subj", "/CN=keda-local",
    )  # fmt: skip
    ext = folder / "tls.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
    )
    _openssl(
        "x509", "-req", "-in", str(folder / "tls.csr"), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(folder / "tls.crt"), "-days", "30", "-extfile", str(ext),
    )  # fmt: skip


def aggregation_objects(port: int) -> list[dict[str, Any]]:
    """The Service and APIService that route external.metrics.k8s.io to 127.0.0.1:``port``."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE, "namespace": NAMESPACE},
            "spec": {
                "type": "ExternalName",
                "externalName": "127.0.0.1",
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            },
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": APISERVICE},
            "spec": {
                "group": "external.metrics.k8s.io",
                "version": "v1beta1",
                "service": {"name": SERVICE, "namespace": NAMESPACE, "port": port},
                # The metrics apiserver's certificate names 127.0.0.1, not the Service's DNS
                # name the aggregator would check; KEDA's chart uses a caBundle instead.
                "insecureSkipTLSVerify": True,
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]


# The HPA behaviour the ScaledObject asks for, as (type, value, period s): scale up by the larger
# of +1000 % or +4 pods per 15 s, down by up to 100 % per 15 s (the HPA default).
# bench/realscale/sim_check.py configures the simulated HPA from these.
SCALE_UP_POLICIES: tuple[tuple[str, int, int], ...] = (("Percent", 1000, 15), ("Pods", 4, 15))
SCALE_DOWN_POLICIES: tuple[tuple[str, int, int], ...] = (("Percent", 100, 15),)


def _policies(policies: tuple[tuple[str, int, int], ...]) -> list[dict[str, Any]]:
    return [{"type": t, "value": v, "periodSeconds": p} for t, v, p in policies]


def scaled_object(
    *,
    name: str,
    deployment: str,
    prometheus_url: str,
    query: str,
    threshold: float,
    min_replicas: int,
    max_replicas: int,
    scale_down_window_s: int,
) -> dict[str, Any]:
    """A ScaledObject with a Prometheus trigger and the HPA tuned as a careful operator would:
    no scale-up stabilization, up to +1000 % per 15 s, ``scale_down_window_s`` before a
    scale-down (the same window as kubeinfer's), 100 % per 15 s down (the HPA default)."""
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"name": deployment},
            # Only 0 <-> 1 uses KEDA's own poll; 1 -> N is the HPA's (15 s sync).
            "pollingInterval": 5,
            "minReplicaCount": min_replicas,
            "maxReplicaCount": max_replicas,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleUp": {
                            "stabilizationWindowSeconds": 0,
                            "selectPolicy": "Max",
                            "policies": _policies(SCALE_UP_POLICIES),
                        },
                        "scaleDown": {
                            "stabilizationWindowSeconds": scale_down_window_s,
                            "policies": _policies(SCALE_DOWN_POLICIES),
                        },
                    }
                }
            },
            "triggers": [
                {
                    "type": "prometheus",
                    "metricType": "AverageValue",
                    "metadata": {
                        "serverAddress": prometheus_url,
                        "query": query,
                        "threshold": f"{threshold:g}",
                    },
                }
            ],
        },
    }


@dataclasses.dataclass
class Keda:
    """The running KEDA: ``start`` brings it up and waits until the APIService is Available."""

    binaries: build.Keda
    workdir: pathlib.Path
    kubectl: pathlib.Path
    kubeconfig: pathlib.Path
    procs: dict[str, subprocess.Popen[bytes]] = dataclasses.field(default_factory=dict)

    def _kubectl(self, *args: str, stdin: str | None = None) -> str:
        proc = subprocess.run(
            [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            raise KedaError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        log.close()

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def start(self, timeout_s: float = 180) -> None:
        certs = self.workdir / "certs"
        make_certs(certs)
        (self.workdir / "ca").mkdir(exist_ok=True)
        for crd in sorted(self.binaries.crds.glob("*.yaml")):
            self._kubectl("apply", "--server-side", "-f", str(crd))
        self._kubectl(
            "wait", "--for=condition=Established", "--timeout=60s",
            "crd/scaledobjects.keda.sh", "crd/triggerauthentications.keda.sh",
        )  # fmt: skip
        self._kubectl("create", "namespace", NAMESPACE)
        env = dict(os.environ)
        env.update(
            KUBECONFIG=str(self.kubeconfig),
            # What KEDA's chart sets from the pod: its namespace, every namespace watched.
            POD_NAMESPACE=NAMESPACE,
            KEDA_CLUSTER_OBJECT_NAMESPACE=NAMESPACE,
            WATCH_NAMESPACE="",
        )
        grpc_port, api_port = free_port(), free_port()
        self._spawn(
            "keda-operator",
            [
                str(self.binaries.operator),
                f"--metrics-bind-address=127.0.0.1:{free_port()}",
                f"--health-probe-bind-address=127.0.0.1:{free_port()}",
                f"--metrics-service-bind-address=127.0.0.1:{grpc_port}",
                f"--cert-dir={certs}",
                f"--ca-dir={self.workdir / 'ca'}",
                "--enable-cert-rotation=false",
                "--leader-elect=false",
                "--zap-log-level=info",
            ],
            env,
        )
        self._spawn(
            "keda-metrics-apiserver",
            [
                str(self.binaries.adapter),
                "--bind-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={certs}",
                f"--tls-cert-file={certs / 'tls.crt'}",
                f"--tls-private-key-file={certs / 'tls.key'}",
                f"--lister-kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                f"--metrics-service-address=127.0.0.1:{grpc_port}",
                f"--port={free_port()}",
                "--zap-log-level=info",
            ],
            env,
        )
        self._kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(aggregation_objects(api_port)))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise KedaError(f"{name} exited {proc.returncode}:\n{self.log_tail(name)}")
            status = self._kubectl(
                "get", "apiservice", APISERVICE, "-o",
                "jsonpath={.status.conditions[?(@.type=='Available')].status}",
            )  # fmt: skip
            if status.strip() == "True":
                return
            time.sleep(1)
        condition = self._kubectl("get", "apiservice", APISERVICE, "-o", "yaml")
        raise KedaError(
            f"{APISERVICE} not Available after {timeout_s:.0f} s:\n{condition}\n"
            f"operator:\n{self.log_tail('keda-operator')}\n"
            f"metrics apiserver:\n{self.log_tail('keda-metrics-apiserver')}"
        )

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
