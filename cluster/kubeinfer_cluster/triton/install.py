"""Real Triton 2.51 on this machine: its installation, for the local cluster and the tests.

Triton comes from the ``nvidia-pytriton`` wheel, the one place PyPI ships a working
``tritonserver`` (2.51, python backend only, runs on CPU). The wheel pins numpy<2 and an older
tritonclient, which clash with the project's, so it lives in its own virtualenv in the shared
cache (``$KUBEINFER_CACHE/triton-2.51``, default ``~/.cache/kubeinfer``), never in the
repository. ``make triton`` creates it (``python -m kubeinfer_cluster.triton.install``); the
local kubelet and the tests only read it, and fail with that command in the message when it is
missing, since in CI they run where the network is out of reach.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import pathlib
import shutil
import subprocess
import sys

from kubeinfer_cluster import build

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
    # onnxruntime runs the ONNX stand-ins inside the python backend (see standin.py).
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


def main(argv: list[str]) -> int:
    if argv != ["install"]:
        print("usage: python -m kubeinfer_cluster.triton.install install", file=sys.stderr)
        return 2
    found = install()
    print(f"Triton {TRITON_VERSION} ({PYTRITON}) ready in {found.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
