"""``tritonserver`` for a Triton pod on the local cluster (the command the local kubelet runs).

The pod's serving container says ``tritonserver --model-repository=... --http-port=...``; on
this machine that becomes the pytriton wheel's real tritonserver 2.51, after the one change it
needs to load what the operator generated (``standin.prepare_repository``: platforms it has no
backend for are served by the onnxruntime stand-in, KIND_GPU becomes KIND_CPU). It listens on
the pod's IP (``POD_IP``, which the kubelet sets) and uses the wheel's backends. Everything else
is the runtime's own arguments, untouched.
"""

from __future__ import annotations

import os
import pathlib
import sys

from kubeinfer_cluster.kubelet.plan import DEVICE_MS_ENV
from kubeinfer_cluster.triton import install, standin


def _repository(args: list[str]) -> pathlib.Path:
    for arg in args:
        if arg.startswith("--model-repository="):
            return pathlib.Path(arg.split("=", 1)[1])
    raise SystemExit("tritonserver: --model-repository=DIR is required here")


def main(argv: list[str]) -> int:
    try:
        found = install.require()
    except install.TritonMissing as exc:
        # The last line of the log: the container's termination message in status.
        print(f"tritonserver: {exc}", file=sys.stderr)
        return 1
    standin.prepare_repository(_repository(argv))
    ip = os.environ.get("POD_IP", "127.0.0.1")
    args = [
        str(found.server),
        *argv,
        f"--http-address={ip}",
        f"--grpc-address={ip}",
        f"--metrics-address={ip}",
        f"--backend-directory={found.backends}",
    ]
    env = found.env()
    if os.environ.get(DEVICE_MS_ENV):
        env[DEVICE_MS_ENV] = os.environ[DEVICE_MS_ENV]
    sys.stdout.flush()
    os.execve(args[0], args, env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
