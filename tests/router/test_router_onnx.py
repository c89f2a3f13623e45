"""The router as a process in front of real `kubeinfer_onnx` servers on 127.0.0.x addresses.

Load in the behaviour tests is open-loop, at a rate derived from the servers' service times
measured at the start of the test; every wait is on a condition, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

import aiohttp
import numpy as np
import pytest
import tritonclient.http as httpclient
from aiohttp import web
from router_processes import (
    OnnxServer,
    Router,
    build_repo,
    free_port,
    http_get,
    mlp_request,
    open_loop,
    start_onnx,
    start_router,
    wait_for,
)

INFER = "/v2/models/mlp/infer"


@dataclasses.dataclass
class Fleet:
    fast1: OnnxServer
    fast2: OnnxServer
    slow: OnnxServer
    canary: OnnxServer


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    servers = Fleet(
        fast1=start_onnx(build_repo(root, "mlp"), root / "fast1.log", address="127.0.0.2"),
        fast2=start_onnx(build_repo(root, "mlp"), root / "fast2.log", address="127.0.0.3"),
        slow=start_onnx(build_repo(root, "slow"), root / "slow.log", address="127.0.0.4"),
        canary=start_onnx(build_repo(root, "mlp2"), root / "canary.log", address="127.0.0.5"),
    )
    yield servers
    for server in (servers.fast1, servers.fast2, servers.slow, servers.canary):
        assert server.stop() == 0, server.log()


@pytest.fixture
def routers(tmp_path: pathlib.Path) -> Iterator[Callable[..., Router]]:
    started: list[Router] = []

    def start(*args: str, wait: bool = True) -> Router:
        router = start_router(tmp_path / f"router{len(started)}.log", *args, wait=wait)
        started.append(router)
        return router

    yield start
    for router in started:
        router.stop()


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": content_type}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_v2_through_the_router_is_byte_for_byte_the_pods(
    fleet: Fleet, routers: Callable[..., Router]
) -> None:
    pod = fleet.fast1
    router = routers("--endpoint", pod.endpoint_flag)
    for body in (mlp_request(1), mlp_request(3, seed=4), b"{bad", b'{"inputs": []}'):
        assert post(router.url + INFER, body) == post(pod.url + INFER, body)
    assert post(router.url + "/v2/models/nope/infer", b"{}")[0] == 404
    for path in ("/v2", "/v2/models/mlp", "/v2/models/mlp/config", "/v2/health/ready"):
        assert http_get(router.url + path) == http_get(pod.url + path), path
    # A real KServe v2 client, binary tensors both ways, through the router.
    data = np.random.default_rng(5).standard_normal((8, 64)).astype(np.float32)
    results = []
    for url in (f"127.0.0.1:{router.port}", f"{pod.address}:{pod.http_port}"):
        client = httpclient.InferenceServerClient(url)
        tensor = httpclient.InferInput("INPUT0", list(data.shape), "FP32")
        tensor.set_data_from_numpy(data, binary_data=True)
        out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)
        results.append(client.infer("mlp", [tensor], outputs=[out]).as_numpy("OUTPUT0"))
        client.close()
    np.testing.assert_array_equal(results[0], results[1])
    # Bad input is the pod's 400, counted as a success of the variant, never a router error.
    assert router.metric("kubeinfer_router_requests_total", variant="stable", outcome="error") == 0


def service_times(servers: list[OnnxServer], body: bytes, rounds: int = 25) -> list[float]:
    """Each server's fastest answer to sequential requests, taken in turns: on a busy machine
    the minimum is the service time and the rest is scheduling noise, and taking turns
    spreads a noisy moment over all of them instead of one."""
    best = [float("inf")] * len(servers)
    for _ in range(rounds):
        for i, server in enumerate(servers):
            started = time.perf_counter()
            assert post(server.url + INFER, body)[0] == 200
            best[i] = min(best[i], time.perf_counter() - started)
    return best


async def test_least_wait_keeps_load_off_a_slow_replica(
    fleet: Fleet, routers: Callable[..., Router]
) -> None:
    body = mlp_request(1)
    servers = [fleet.fast1, fleet.fast2, fleet.slow]
    times = await asyncio.to_thread(service_times, servers, body)
    assert times[2] > 3 * max(times[:2]), f"the slow model is not slow here: {times}"
    capacity = sum(1 / t for t in times)
    # Half the measured capacity, capped at what a Python client drives on 2 busy cores.
    rate = min(0.5 * capacity, 150.0)
    router = routers(*(a for s in servers for a in ("--endpoint", s.endpoint_flag)))
    before = [s.successes() for s in servers]
    results = await open_loop(router.url + INFER, rate=rate, seconds=4.0, body=body)
    assert {status for status, _ in results} == {200}
    served = [s.successes() - b for s, b in zip(servers, before, strict=True)]
    share = served[2] / sum(served)
    # A random pick would send it a third. Least expected wait sends it its warm-up answers and
    # whatever arrives while both fast pods hold 4+ requests, which a stalled core makes
    # happen (0.125 measured at load average 20 on 2 cores; ~0.05 on a quiet machine): at most
    # half of random's share.
    assert share < 1 / 6, f"slow replica served {served} at {rate:.0f}/s (times {times})"
    service = {e["key"]: e["service_s"] for e in router.endpoints()["endpoints"]}
    slow_key = f"{fleet.slow.address}:{fleet.slow.http_port}"
    assert service[slow_key] is not None
    assert all(s is None or s < service[slow_key] for k, s in service.items() if k != slow_key)


def test_canary_split_over_real_servers(fleet: Fleet, routers: Callable[..., Router]) -> None:
    router = routers(
        "--endpoint",
        fleet.fast1.endpoint_flag,
        "--endpoint",
        "canary=" + fleet.canary.endpoint_flag,
        "--weight",
        "stable=90",
        "--weight",
        "canary=10",
    )
    before = (fleet.fast1.successes(), fleet.canary.successes())
    bodies = {post(router.url + INFER, mlp_request(1))[1] for _ in range(200)}
    after = (fleet.fast1.successes(), fleet.canary.successes())
    assert (after[0] - before[0], after[1] - before[1]) == (180, 20)
    assert len(bodies) == 2  # two model versions, two answers to one input
    assert router.metric("kubeinfer_router_requests_total", variant="canary") == 20
    assert router.metric("kubeinfer_router_request_duration_seconds_count", variant="canary") == 20


def test_draining_by_config_reload(
    fleet: Fleet, routers: Callable[..., Router], tmp_path: pathlib.Path
) -> None:
    keep, drain = fleet.fast1, fleet.fast2

    def write(draining: bool) -> None:
        endpoints = [
            {"address": f"{keep.address}:{keep.http_port}", "metricsPort": keep.metrics_port},
            {"address": f"{drain.address}:{drain.http_port}", "draining": draining},
        ]
        doc = {"variants": [{"name": "stable", "endpoints": endpoints}]}
        path.write_text(json.dumps(doc))

    path = tmp_path / "router.json"
    write(False)
    router = routers("--config", str(path))
    wait_for(lambda: len(router.endpoints()["endpoints"]) == 2, 10, "two endpoints")
    write(True)
    wait_for(
        lambda: any(e["draining"] for e in router.endpoints()["endpoints"]), 10, "reload applied"
    )
    before = (keep.successes(), drain.successes())
    for _ in range(40):
        assert post(router.url + INFER, mlp_request(1))[0] == 200
    assert (keep.successes() - before[0], drain.successes() - before[1]) == (40, 0)


async def test_a_server_shutting_down_under_load_loses_no_request(
    tmp_path: pathlib.Path, routers: Callable[..., Router]
) -> None:
    repo = build_repo(tmp_path, "mlp")
    a = start_onnx(repo, tmp_path / "a.log", address="127.0.0.7")
    b = start_onnx(repo, tmp_path / "b.log", address="127.0.0.8")
    try:
        router = routers("--endpoint", a.endpoint_flag, "--endpoint", b.endpoint_flag)
        load = asyncio.create_task(
            open_loop(router.url + INFER, rate=100, seconds=3.0, body=mlp_request(1))
        )
        await asyncio.to_thread(wait_for, lambda: a.successes() >= 5, 20, "load on a")
        assert await asyncio.to_thread(a.stop) == 0  # SIGTERM: drain, stop listening, exit
        results = await load
        assert [s for s, _ in results if s != 200] == []
        assert b.successes() > 0
    finally:
        a.stop()
        b.stop()


class Webhook:
    """The wake hook's receiving end: records calls and runs `on_call` in a thread."""

    def __init__(self, on_call: Callable[[], None]) -> None:
        self.calls: list[float] = []
        self.on_call = on_call
        self.port = free_port()

    async def __aenter__(self) -> Webhook:
        async def wake(request: web.Request) -> web.Response:
            self.calls.append(time.monotonic())
            threading.Thread(target=self.on_call, daemon=True).start()
            return web.Response()

        app = web.Application()
        app.router.add_post("/wake", wake)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/wake"


async def send_concurrently(url: str, n: int, body: bytes) -> list[tuple[int, float, str]]:
    """n requests at once: (status, latency, Retry-After) each."""
    loop = asyncio.get_running_loop()

    async def one(session: aiohttp.ClientSession) -> tuple[int, float, str]:
        sent = loop.time()
        async with session.post(url, data=body) as response:
            await response.read()
            return response.status, loop.time() - sent, response.headers.get("Retry-After", "")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        return await asyncio.gather(*(one(session) for _ in range(n)))


async def test_scale_from_zero_holds_wakes_once_and_flushes(
    tmp_path: pathlib.Path, routers: Callable[..., Router]
) -> None:
    address, http_port, metrics_port = "127.0.0.9", free_port("127.0.0.9"), free_port("127.0.0.9")
    repo = build_repo(tmp_path, "mlp")
    started: list[OnnxServer] = []

    def bring_up() -> None:  # what the scale 0 -> 1 does, minus Kubernetes
        started.append(
            start_onnx(
                repo,
                tmp_path / "woken.log",
                address=address,
                http_port=http_port,
                metrics_port=metrics_port,
                wait=False,
            )
        )

    async with Webhook(bring_up) as hook:
        router = routers(
            "--endpoint", f"{address}:{http_port}:{metrics_port}", "--wake-webhook", hook.url
        )
        first = time.monotonic()
        try:
            results = await send_concurrently(router.url + INFER, 20, mlp_request(1))
        finally:
            for server in started:
                server.stop()
    assert [s for s, _, _ in results] == [200] * 20
    assert len(hook.calls) == 1
    assert hook.calls[0] - first < 1.0  # the bench holds this to 100 ms on a quiet machine
    assert router.metric("kubeinfer_router_wake_calls_total", outcome="ok") == 1
    assert router.metric("kubeinfer_router_hold_duration_seconds_count", outcome="flushed") == 20
    assert router.endpoints()["held"] == 0


async def test_a_router_stopping_answers_every_held_request(
    tmp_path: pathlib.Path, routers: Callable[..., Router]
) -> None:
    nowhere = f"127.0.0.10:{free_port('127.0.0.10')}"
    router = routers("--endpoint", nowhere, "--max-queued", "5", "--hold-timeout", "120")
    held = asyncio.create_task(send_concurrently(router.url + INFER, 5, mlp_request(1)))
    await asyncio.to_thread(wait_for, lambda: router.endpoints()["held"] == 5, 20, "5 held")
    over = await send_concurrently(router.url + INFER, 1, mlp_request(1))
    assert [(s, r) for s, _, r in over] == [(429, "1")]
    stopped = time.monotonic()
    assert await asyncio.to_thread(router.stop) == 0
    async with asyncio.timeout(10):
        results = await held
    assert [(s, r) for s, _, r in results] == [(503, "1")] * 5
    assert time.monotonic() - stopped < 10
