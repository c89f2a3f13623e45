"""Run the real operator as a process against the test cluster (integration and e2e tiers)."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.processes import die_with_parent

REPO = pathlib.Path(__file__).resolve().parents[1]


# A log line's own timestamp ("2026-12-03 19:00:50,403 INFO ..."): its milliseconds can read
# 403, which is no refusal.
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[,.]\d+)?\s*")
_STATUS_403 = re.compile(r"(?<![\d.,:])403(?![\d.,:])")


def forbidden_lines(log: str) -> list[str]:
    """The operator's log lines that report an API request refused by RBAC or admission
    (HTTP 403, "forbidden"), ignoring the numbers in each line's timestamp."""
    found = []
    for line in log.splitlines():
        text = _TIMESTAMP.sub("", line)
        if _STATUS_403.search(text) or "forbidden" in text.lower():
            found.append(line)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def install(kubectl: pathlib.Path, env: dict[str, str]) -> None:
    """CRDs and the default runtimes, as `make demo` and the chart install them."""
    for path in ("crds", "runtimes/defaults"):
        subprocess.run(
            [str(kubectl), "apply", "--server-side", "--force-conflicts", "-f", str(REPO / path)],
            env=env,
            check=True,
            capture_output=True,
        )
    subprocess.run(
        [
            str(kubectl),
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/inferenceservices.kubeinfer.io",
            "crd/inferenceruntimes.kubeinfer.io",
        ],
        env=env,
        check=True,
        capture_output=True,
    )


class OperatorProcess:
    def __init__(
        self, env: dict[str, str], log_dir: pathlib.Path, extra_args: list[str] | None = None
    ) -> None:
        self.env = dict(env)
        self.log_dir = log_dir
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.starts = 0

    def start(self) -> None:
        self.metrics_port, live = free_port(), free_port()
        self.starts += 1
        log = (self.log_dir / f"operator-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubeinfer.cli",
                "operator",
                f"--metrics-port={self.metrics_port}",
                f"--liveness=http://127.0.0.1:{live}/healthz",
                *self.extra_args,
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited: {self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{live}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"operator not live: {self.log()[-3000:]}")

    def log(self) -> str:
        return (self.log_dir / f"operator-{self.starts}.log").read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def metrics_text(self, prefix: str, *, timeout: float = 5) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=timeout
        ) as resp:
            lines = resp.read().decode().splitlines()
        return "\n".join(line for line in lines if line.startswith(prefix))

    def metric(self, name: str, *, timeout: float = 5, **labels: str) -> float:
        """Sum of the samples of ``name`` matching ``labels`` on the operator's /metrics."""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=timeout
        ) as resp:
            text = resp.read().decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total


def python_env(env: dict[str, str]) -> dict[str, str]:
    out = dict(env)
    out["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "operator"), str(REPO / "runtimes" / "onnxruntime")]
    )
    return out
