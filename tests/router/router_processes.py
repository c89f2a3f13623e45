"""Real processes for the router's integration tests and its benchmark: `kubeinfer_onnx`
servers on 127.0.0.x addresses and the `kubeinfer-router` itself, the models they serve, and
an open-loop request generator.

Servers and routers are started as subprocesses and stopped by pid (SIGTERM, then SIGKILL
after a grace); readiness is polled, never slept on. The models come from the runtime suite's
builders (`runtime_models`, shared, not copied) plus one slower model with the same inputs and
outputs as `mlp`, so a "slow replica" serves the very same requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration" / "runtime"))
import runtime_models  # noqa: E402


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(check: Any, timeout: float, what: str, every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            last = check()
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last={last!r}")


def build_wide_mlp(path: pathlib.Path, *, width: int, layers: int) -> pathlib.Path:
    """Same signature as `mlp` (FP32 [-1, 64] -> [-1, 10]), `layers` hidden layers of `width`:
    compute per row grows with layers x width^2, so a slow replica serves the same requests."""
    rng = np.random.default_rng(3)
    widths = [64, *([width] * layers), 10]
    nodes, inits, current = [], [], "INPUT0"
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [f"m{i}"]))
        current = f"m{i}"
    nodes.append(helper.make_node("Identity", [current], ["OUTPUT0"]))
    graph = helper.make_graph(
        nodes,
        "wide_mlp",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", runtime_models.OPSET)])
    model.ir_version = runtime_models.IR_VERSION
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


# Repository kinds, each serving one model named `mlp` with the same inputs and outputs.
REPOS: dict[str, Callable[[pathlib.Path], pathlib.Path]] = {
    "mlp": lambda p: runtime_models.build_mlp(p, seed=1),
    "mlp2": lambda p: runtime_models.build_mlp(p, seed=2),  # a canary: other numerics
    "slow": lambda p: build_wide_mlp(p, width=2048, layers=5),  # ~100x mlp's compute
    "dense": lambda p: build_wide_mlp(p, width=1024, layers=2),  # ~1 M multiply-adds
    "dense3x": lambda p: build_wide_mlp(p, width=1024, layers=4),  # ~2.9x dense
    "wide2": lambda p: build_wide_mlp(p, width=2048, layers=2),  # ~4.3 M multiply-adds
    "wide5": lambda p: build_wide_mlp(p, width=2048, layers=5),  # ~3.9x wide2
}


def build_repo(root: pathlib.Path, kind: str, *, max_batch_size: int = 0) -> pathlib.Path:
    """A one-model repository of the given kind (see REPOS), built once per folder."""
    repo = root / f"repo-{kind}-b{max_batch_size}"
    target = repo / "mlp" / "1" / "model.onnx"
    if not target.exists():
        REPOS[kind](target)
        # Without batching (the default here) each server is a plain FIFO queue, so service
        # times are what they seem.
        (repo / "mlp" / "config.json").write_text(json.dumps({"max_batch_size": max_batch_size}))
    return repo


class Process:
    def __init__(self, process: subprocess.Popen[bytes], log_path: pathlib.Path) -> None:
        self.process = process
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM this process (ours, by pid); SIGKILL if it has not exited in `timeout`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)


class OnnxServer(Process):
    def __init__(
        self,
        process: subprocess.Popen[bytes],
        log_path: pathlib.Path,
        address: str,
        http_port: int,
        metrics_port: int,
    ) -> None:
        super().__init__(process, log_path)
        self.address = address
        self.http_port = http_port
        self.metrics_port = metrics_port

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.http_port}"

    @property
    def endpoint_flag(self) -> str:
        return f"{self.address}:{self.http_port}:{self.metrics_port}"

    def successes(self) -> float:
        """Successful requests so far, from the server's own Triton-named counter."""
        _, body = http_get(f"http://{self.address}:{self.metrics_port}/metrics")
        total = 0.0
        for line in body.decode().splitlines():
            if line.startswith("nv_inference_request_success{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


def start_onnx(
    repo: pathlib.Path,
    log_path: pathlib.Path,
    *extra: str,
    address: str = "127.0.0.1",
    http_port: int | None = None,
    metrics_port: int | None = None,
    wait: bool = True,
    cpu_wrapper: list[str] | None = None,
) -> OnnxServer:
    http_port = http_port or free_port(address)
    metrics_port = metrics_port or free_port(address)
    env = dict(os.environ)
    src = str(ROOT / "runtimes" / "onnxruntime")
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    command = [
        sys.executable,
        "-m",
        "kubeinfer_onnx.server",
        "--model-repository",
        str(repo),
        "--address",
        address,
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(free_port(address)),
        "--metrics-port",
        str(metrics_port),
        "--intra-op-threads",
        "1",
        *extra,
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*(cpu_wrapper or []), *command], stdout=log_file, stderr=subprocess.STDOUT, env=env
        )
    server = OnnxServer(process, log_path, address, http_port, metrics_port)
    if wait:
        wait_ready(server, 60)
    return server


def wait_ready(server: OnnxServer, timeout: float) -> None:
    def ready() -> bool:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited {server.process.returncode}:\n{server.log()}")
        return http_get(server.url + "/v2/health/ready", timeout=2)[0] == 200

    wait_for(ready, timeout, f"server {server.url} ready")


class Router(Process):
    def __init__(self, process: subprocess.Popen[bytes], log_path: pathlib.Path, port: int) -> None:
        super().__init__(process, log_path)
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        return http_get(self.url + "/metrics")[1].decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name):
                continue
            sample, value = line.rsplit(" ", 1)
            rest = sample[len(name) :]
            if rest and not rest.startswith("{"):
                continue
            if all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += float(value)
        return total

    def endpoints(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(http_get(self.url + "/router/endpoints")[1])
        return doc

    def cpu_seconds(self) -> float:
        """User + system CPU time of the router process, from /proc (Linux)."""
        fields = pathlib.Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_router(
    log_path: pathlib.Path,
    *args: str,
    port: int | None = None,
    wait: bool = True,
    cpu_wrapper: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Router:
    port = port or free_port()
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                *(cpu_wrapper or []),
                sys.executable,
                "-m",
                "kubeinfer_router",
                "--listen",
                f"127.0.0.1:{port}",
                *args,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    router = Router(process, log_path, port)
    if wait:

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"router exited {process.returncode}:\n{router.log()}")
            return http_get(router.url + "/readyz", timeout=2)[0] == 200

        wait_for(ready, 30, "router ready")
    return router


def mlp_request(rows: int = 1, seed: int = 0) -> bytes:
    """A JSON v2 request for `mlp`."""
    data = np.random.default_rng(seed).standard_normal((rows, 64)).astype(np.float32)
    tensor = {"name": "INPUT0", "shape": [rows, 64], "datatype": "FP32"}
    tensor["data"] = [float(x) for x in data.ravel()]
    return json.dumps({"inputs": [tensor]}).encode()


async def open_loop(
    url: str,
    *,
    rate: float,
    seconds: float,
    body: bytes,
    timeout: float = 30.0,
    stop: threading.Event | None = None,
) -> list[tuple[int, float]]:
    """POST `body` at a fixed rate (arrivals do not wait for answers): (status, latency) each.

    Sends for `seconds`, or until `stop` is set (from another thread), then waits for every
    answer. A transport error reads as status 0. Python drives a few hundred requests per
    second on two cores; that is what behaviour tests need, not what throughput figures need.
    """
    loop = asyncio.get_running_loop()
    results: list[tuple[int, float]] = []
    headers = {"Content-Type": "application/json"}

    async def one(session: aiohttp.ClientSession) -> None:
        sent = loop.time()
        try:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                results.append((response.status, loop.time() - sent))
        except (aiohttp.ClientError, TimeoutError):
            results.append((0, loop.time() - sent))

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as session:
        tasks = []
        start = loop.time()
        for i in range(int(rate * seconds)):
            if stop is not None and stop.is_set():
                break
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session)))
        await asyncio.gather(*tasks)
    return results


# -- the local cluster ---------------------------------------------------------------------

COLD_START = "kubeinfer.io/simulated-cold-start"  # the local cluster's kwok stage


def deployment(name: str, *, replicas: int, cold_start: str | None = None) -> dict[str, Any]:
    """A Deployment whose pods kwok runs (Ready at once, or after `cold_start`) on loopback IPs;
    the tests start a real server on a pod's IP as its container."""
    annotations = {COLD_START: cold_start} if cold_start else {}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": "example.invalid/kubeinfer-onnx:1",
                            "ports": [
                                {"name": "http", "containerPort": 8000},
                                {"name": "metrics", "containerPort": 8002},
                            ],
                        }
                    ]
                },
            },
        },
    }


def replicas(apps: Any, namespace: str, name: str) -> int:
    """The Deployment's replicas, read through its scale subresource (an AppsV1Api)."""
    return int(apps.read_namespaced_deployment_scale(name, namespace).spec.replicas or 0)
