"""A tritonserver process on loopback for the test tiers (the installation is the local
cluster's: ``kubeinfer_cluster.triton.install``, made by ``make triton``).

``TritonProcess`` starts the server the way a pod would (the runtime's own arguments), on
loopback (127.0.0.1 and free ports by default), waits for readiness by polling, and stops only
its own pid.
"""

from __future__ import annotations

import pathlib
import signal
import socket
import subprocess
import urllib.error
import urllib.request

from kubeinfer_cluster.triton import install
from tests.processes import die_with_parent
from tests.waiting import wait_for

Installation = install.Installation
TritonMissing = install.TritonMissing
require = install.require


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TritonProcess:
    """One tritonserver; ``runtime_args`` are the runtime's, with $(VARS) expanded here.

    It listens on ``address`` (loopback; a kwok pod's 127.x IP for the e2e harness) on the
    given ports, or on free ones.
    """

    def __init__(
        self,
        found: Installation,
        repository: pathlib.Path,
        runtime_args: list[str],
        log_path: pathlib.Path,
        *,
        address: str = "127.0.0.1",
        ports: tuple[int, int, int] | None = None,
    ) -> None:
        self.address = address
        self.http_port, self.grpc_port, self.metrics_port = ports or (
            free_port(),
            free_port(),
            free_port(),
        )
        variables = {
            "MODEL_REPOSITORY": str(repository),
            "HTTP_PORT": str(self.http_port),
            "GRPC_PORT": str(self.grpc_port),
            "METRICS_PORT": str(self.metrics_port),
        }
        args = [_expand(a, variables) for a in runtime_args]
        self.command = [
            str(found.server),
            *args,
            # Only what this machine needs beyond a pod: the address and the wheel's backends.
            f"--http-address={address}",
            f"--grpc-address={address}",
            f"--metrics-address={address}",
            f"--backend-directory={found.backends}",
        ]
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                env=found.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )

    @property
    def http_url(self) -> str:
        return f"{self.address}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.address}:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, port: int | None = None) -> tuple[int, bytes]:
        url = f"http://{self.address}:{port or self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, ConnectionError):
            return 0, b""

    def wait_ready(self, timeout: float = 120) -> None:
        """Poll /v2/health/ready; fail at once, with the log, if the server exits."""

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"tritonserver exited with {self.process.returncode} before it was ready:\n"
                    + self.log()[-4000:]
                )
            return self.get("/v2/health/ready")[0] == 200

        wait_for(ready, timeout=timeout, what=f"tritonserver ready at {self.http_url}")

    def wait_exit(self, timeout: float = 120) -> int:
        return self.process.wait(timeout)

    def metrics(self) -> str:
        status, body = self.get("/metrics", self.metrics_port)
        assert status == 200, f"GET :{self.metrics_port}/metrics -> {status}"
        return body.decode()

    def stop(self, timeout: float = 30) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _expand(arg: str, variables: dict[str, str]) -> str:
    # Kubernetes' $(VAR) expansion in container args, for the variables the pod sets.
    for name, value in variables.items():
        arg = arg.replace(f"$({name})", value)
    return arg
