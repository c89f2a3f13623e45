"""A real Prometheus server for the monitoring tests: started on 127.0.0.1 with a temporary data
directory, read through its HTTP API, stopped by pid.

Owns the process and the API calls; what it scrapes and evaluates is the caller's config.
"""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from typing import Any

import yaml

from kubeinfer_cluster import build
from tests.operator_process import free_port


class PrometheusError(RuntimeError):
    """The server would not start, or the API answered an error; the message says which."""


def tools() -> build.Prometheus:
    """prometheus and promtool from the shared cache, built from the Go module proxy if absent."""
    return build.build_prometheus(build.cache_root())


class Prometheus:
    def __init__(self, binary: pathlib.Path, workdir: pathlib.Path, config: dict[str, Any]) -> None:
        self.binary = binary
        self.workdir = workdir
        self.config = config
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> pathlib.Path:
        return self.workdir / "prometheus.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout_s: float = 60) -> None:
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.port = free_port()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=info",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise PrometheusError(f"prometheus not ready after {timeout_s:.0f} s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a GET /api/v1/``path``; PrometheusError with the server's words."""
        query = urllib.parse.urlencode(params)
        request = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector: [{"metric": {labels}, "value": [t, "v"]}, ...]."""
        data = self.api("query", query=expr)
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expr!r} is a {data['resultType']}, not a vector")
        result: list[dict[str, Any]] = data["result"]
        return result

    def series(self, match: str) -> list[dict[str, str]]:
        """Label sets of the series matching a selector now (the last five minutes)."""
        start = str(time.time() - 300)
        result: list[dict[str, str]] = self.api("series", **{"match[]": match, "start": start})
        return result

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("targets", state="active")["activeTargets"]
        return active

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts
