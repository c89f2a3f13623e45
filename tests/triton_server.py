"""Real Triton 2.51 for the test tiers: its installation, and a tritonserver process on loopback.

Triton comes from the ``nvidia-pytriton`` wheel, the one place PyPI ships a working
``tritonserver`` (2.51, python backend only, runs on CPU). The wheel pins numpy<2 and an older
tritonclient, which clash with the project's, so it lives in its own virtualenv in the shared
cache (``$KUBEINFER_CACHE/triton-2.51``, default ``~/.cache/kubeinfer``), never in the
repository. ``make triton`` (a prerequisite of the integration tier) creates it with
``python -m tests.triton_server install``; tests only read it, and fail with that command in the
message when it is missing, since in CI they run where the network is out of reach.

``TritonProcess`` starts the server the way a pod would (the runtime's own arguments), on
loopback (127.0.0.1 and free ports by default), waits for readiness by polling, and stops only
its own pid.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

from kubeinfer_cluster import build
from tests.waiting import wait_for

PYTRITON = "nvidia-pytriton==0.7.0"
TRITON_VERSION = "2.51.0"
PY = f"{sys.version_info.major}.{sys.version_info.minor}"
INSTALL_HINT = "run `make triton` (installs nvidia-pytriton 0.7.0 into the cache, ~300 MB once)"


class TritonMissing(RuntimeError):
    """Triton is not installed where the tests look; the message says how to install it."""


@dataclasses.dataclass(frozen=True)
class Installation:
    """Where the wheel's tritonserver, backends and Python environment are."""

    root: pathlib.Path

    @property
    def venv(self) -> pathlib.Path:
        return self.root / "venv"

    @property
    def site(self) -> pathlib.Path:
        return self.venv / "lib" / f"python{PY}" / "site-packages"

    @property
    def server(self) -> pathlib.Path:
        return self.site / "pytriton" / "tritonserver" / "bin" / "tritonserver"

    @property
    def backends(self) -> pathlib.Path:
        # A copy of the wheel's backends with the stub for our Python beside
        # libtriton_python.so, where the python backend looks for it.
        return self.root / "backends"

    @property
    def stamp(self) -> pathlib.Path:
        return self.root / ".installed"

    def env(self) -> dict[str, str]:
        """The server's environment: the wheel's libraries, and the venv as if activated, so
        the python backend's stub imports numpy and onnxruntime from it."""
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [str(self.site / "nvidia_pytriton.libs"), *filter(None, [env.get("LD_LIBRARY_PATH")])]
        )
        env["VIRTUAL_ENV"] = str(self.venv)
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env['PATH']}"
        env["PYTHONPATH"] = str(self.site)
        env.pop("PYTHONHOME", None)
        return env


def installation() -> Installation:
    return Installation(build.cache_root() / f"triton-{TRITON_VERSION.rsplit('.', 1)[0]}")


def require() -> Installation:
    """The installation, or ``TritonMissing`` saying how to create it."""
    found = installation()
    if not found.stamp.is_file() or found.stamp.read_text().strip() != PYTRITON:
        raise TritonMissing(f"real Triton is not installed in {found.root}: {INSTALL_HINT}")
    return found


def install() -> Installation:
    """Create the virtualenv and the backends directory once; a finished install is kept."""
    target = installation()
    target.root.parent.mkdir(parents=True, exist_ok=True)
    # The cache is shared by every checkout on the machine: one installer at a time.
    with open(target.root.parent / f"{target.root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _install(target)


def _install(target: Installation) -> Installation:
    if target.stamp.is_file() and target.stamp.read_text().strip() == PYTRITON:
        return target
    shutil.rmtree(target.root, ignore_errors=True)
    target.root.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "venv", str(target.venv)], check=True)
    # onnxruntime runs the ONNX stand-ins inside the python backend (see the integration tier).
    pip = [str(target.venv / "bin" / "pip"), "install", "-q", "--progress-bar", "off"]
    subprocess.run([*pip, PYTRITON, "onnxruntime"], check=True)
    wheel = target.site / "pytriton" / "tritonserver"
    shutil.copytree(
        wheel / "backends", target.backends, ignore=shutil.ignore_patterns("__pycache__")
    )
    stub = wheel / "python_backend_stubs" / PY / "triton_python_backend_stub"
    shutil.copy2(stub, target.backends / "python" / stub.name)
    target.stamp.write_text(PYTRITON + "\n")
    return target


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
                self.command, env=found.env(), stdout=log, stderr=subprocess.STDOUT
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


def main(argv: list[str]) -> int:
    if argv != ["install"]:
        print("usage: python -m tests.triton_server install", file=sys.stderr)
        return 2
    found = install()
    print(f"Triton {TRITON_VERSION} ({PYTRITON}) ready in {found.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
