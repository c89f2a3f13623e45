"""Make kwok's fake pods real: one `kubeinfer-onnx-server` process per Running pod, bound to
that pod's 127.x IP and the runtime's ports, stopped when the pod goes.

kwok marks pods Running and gives them loopback IPs but runs no container; this harness plays
the kubelet's part for the serving container, so the operator scrapes real servers at real pod
IPs and the load generator sends real inference requests.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import threading
import time
import urllib.request

from kubernetes import client


class PodServers:
    def __init__(
        self,
        core: client.CoreV1Api,
        namespace: str,
        selector: str,
        repository: pathlib.Path,
        log_dir: pathlib.Path,
    ) -> None:
        self.core, self.namespace, self.selector = core, namespace, selector
        self.repository, self.log_dir = repository, log_dir
        self.procs: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
        self.started_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._lock = threading.Lock()
        self._ready: list[str] = []

    def __enter__(self) -> PodServers:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for _ip, proc in self.procs.values():
            proc.terminate()
        for _ip, proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()

    def ready_ips(self) -> list[str]:
        """IPs whose server answered ready lately (what a Service's endpoints would hold)."""
        return list(self._ready)

    def _probe(self) -> list[str]:
        with self._lock:
            ips = [ip for ip, proc in self.procs.values() if proc.poll() is None]
        ready = []
        for ip in ips:
            try:
                with urllib.request.urlopen(f"http://{ip}:8000/v2/health/ready", timeout=0.5):
                    ready.append(ip)
            except OSError:
                pass
        return ready

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                pods = self.core.list_namespaced_pod(
                    self.namespace, label_selector=self.selector
                ).items
            except Exception:  # the API server may blink; try again next round
                time.sleep(0.5)
                continue
            running = {
                p.metadata.name: p.status.pod_ip
                for p in pods
                if p.status.phase == "Running"
                and p.status.pod_ip
                and not p.metadata.deletion_timestamp
            }
            with self._lock:
                for name in set(self.procs) - set(running):
                    _ip, proc = self.procs.pop(name)
                    proc.terminate()
                for name, ip in running.items():
                    if name not in self.procs:
                        self.procs[name] = (ip, self._start(name, ip))
            self._ready = self._probe()
            time.sleep(0.3)

    def _start(self, name: str, ip: str) -> subprocess.Popen[bytes]:
        self.started_total += 1
        log = (self.log_dir / f"{name}.log").open("wb")
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubeinfer_onnx.server",
                f"--model-repository={self.repository}",
                f"--address={ip}",
                "--http-port=8000",
                "--grpc-port=8001",
                "--metrics-port=8002",
                "--intra-op-threads=1",
                "--log-level=WARNING",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
