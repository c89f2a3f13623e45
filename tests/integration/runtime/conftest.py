"""Fixtures for the runtime's integration tests: a model repository built in code and real
`kubeinfer-onnx-server` processes on loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import runtime_models

from tests.processes import die_with_parent

ROOT = pathlib.Path(__file__).resolve().parents[3]
RUNTIME_SRC = ROOT / "runtimes" / "onnxruntime"


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass
class Server:
    process: subprocess.Popen[bytes]
    address: str
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: pathlib.Path

    @property
    def http_url(self) -> str:
        return f"{self.address}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.address}:{self.grpc_port}"

    def get(self, path: str, port: int | None = None) -> tuple[int, bytes]:
        url = f"http://{self.address}:{port or self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def metrics(self) -> str:
        status, body = self.get("/metrics", self.metrics_port)
        assert status == 200
        return body.decode()

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample; labels must match exactly the ones given (a subset)."""
        for line in self.metrics().splitlines():
            if line.startswith("#") or not line.startswith(name + "{"):
                continue
            sample, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in sample for k, v in labels.items()):
                return float(value)
        raise AssertionError(f"no sample {name} {labels}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_queued(self, model: str, count: int, timeout: float = 10) -> None:
        """Until at least `count` requests wait in the model's queue (its pending gauge)."""
        deadline = time.monotonic() + timeout
        while (
            await asyncio.to_thread(self.metric, "nv_inference_pending_request_count", model=model)
            < count
        ):
            assert time.monotonic() < deadline, f"{count} requests never queued for {model}"

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def start_server(
    repo: pathlib.Path,
    log_path: pathlib.Path,
    *extra: str,
    address: str = "127.0.0.1",
    preamble: str = "",
) -> Server:
    """A server process, started and ready."""
    server = launch_server(repo, log_path, *extra, address=address, preamble=preamble)
    process = server.process
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        with contextlib.suppress(OSError):
            if server.get("/v2/health/ready")[0] == 200:
                return server
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server not ready in 60s:\n{server.log()}")


def launch_server(
    repo: pathlib.Path,
    log_path: pathlib.Path,
    *extra: str,
    address: str = "127.0.0.1",
    preamble: str = "",
) -> Server:
    """A server process, started: it may still be loading. ``preamble``: Python run in the
    process before the server's main module (the command becomes ``python -c``)."""
    ports = [free_port(address) for _ in range(3)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(RUNTIME_SRC), *filter(None, [env.get("PYTHONPATH")])])
    log_file = log_path.open("wb")
    main = (
        ["-c", f"{preamble}\nimport runpy\nrunpy.run_module('kubeinfer_onnx.server', "
         "run_name='__main__', alter_sys=True)"]
        if preamble
        else ["-m", "kubeinfer_onnx.server"]
    )
    process = subprocess.Popen(
        [
            sys.executable,
            *main,
            "--model-repository",
            str(repo),
            "--address",
            address,
            "--http-port",
            str(ports[0]),
            "--grpc-port",
            str(ports[1]),
            "--metrics-port",
            str(ports[2]),
            *extra,
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=die_with_parent,
    )
    return Server(process, address, *ports, log_path)


def write_config(model_dir: pathlib.Path, config: dict[str, object]) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    repo = tmp_path_factory.mktemp("repo")
    runtime_models.build_mlp(repo / "mlp" / "1" / "model.onnx", seed=1)
    runtime_models.build_mlp(repo / "mlp" / "2" / "model.onnx", seed=2)
    write_config(repo / "mlp", {"max_batch_size": 64})
    runtime_models.build_heavy(repo / "heavy" / "1" / "model.onnx")
    runtime_models.build_addsub(repo / "addsub" / "1" / "model.onnx")
    runtime_models.build_fixed(repo / "fixed" / "1" / "model.onnx")
    runtime_models.build_mlp(repo / "mlp_cached" / "1" / "model.onnx", seed=1)
    write_config(repo / "mlp_cached", {"cache": True, "cache_max_entries": 16})
    runtime_models.build_heavy(repo / "heavy_int8" / "1" / "model.onnx")
    write_config(repo / "heavy_int8", {"quantize": True})
    return repo


@pytest.fixture(scope="session")
def heavy_repo(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Only the compute-bound model: for queues that fill (overload, drain, deadlines)."""
    repo = tmp_path_factory.mktemp("heavy-repo")
    runtime_models.build_heavy(repo / "heavy" / "1" / "model.onnx")
    return repo


@pytest.fixture(scope="session")
def server(model_repo: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared server: every model above, default limits, a 1 MiB body limit."""
    log_path = tmp_path_factory.mktemp("logs") / "server.log"
    started = start_server(model_repo, log_path, "--max-request-bytes", str(1024 * 1024))
    yield started
    assert started.stop() == 0, started.log()
