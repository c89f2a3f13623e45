"""Open-loop load for the behaviour tests and the demo, sized from capacity measured in the run.

Closed-loop clients (N workers, each waiting for its answer) measure the client as much as the
server: on a busy 2-core machine the queue they build, and so everything the autoscaler does
with it, is luck. Here requests are sent at a set arrival rate (Poisson or constant) whatever
the answers do, and the rate is a multiple of one replica's capacity measured at the start of
the same run, so "3x one replica" means the same on a fast and a slow machine.

Requests go to a random Ready pod, as a Service's kube-proxy would: ``Endpoints`` follows the
pods of a selector (Ready and not terminating). A client retries a 503 after its Retry-After
and a connection error at once, elsewhere, until the request's deadline; only a request that
never succeeds counts as failed. Every request's latency and outcome is recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
from kubernetes import client


def mlp_request(features: int = 64) -> bytes:
    data = np.random.default_rng(0).standard_normal(features).astype(np.float32).tolist()
    tensor = {"name": "INPUT0", "shape": [1, features], "datatype": "FP32", "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


class Endpoints:
    """The Ready, non-terminating pod IPs of a selector, refreshed in the background."""

    def __init__(self, core: client.CoreV1Api, namespace: str, selector: str) -> None:
        self.core, self.namespace, self.selector = core, namespace, selector
        self._ips: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self) -> Endpoints:
        self._refresh()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __call__(self) -> list[str]:
        return list(self._ips)

    def _refresh(self) -> None:
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector).items
        self._ips = sorted(
            p.status.pod_ip
            for p in pods
            if p.status.pod_ip
            and not p.metadata.deletion_timestamp
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        )

    def _follow(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self._refresh()
            except Exception:  # the API server may blink; the last list stays valid meanwhile
                continue


@dataclasses.dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    # 503 answers seen (each later retried); overload signalled, not a lost request.
    rejected_503: int = 0
    latencies_s: list[float] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    # How late the generator sent each request against its schedule, and how long sending
    # took: the proof that the load was delivered as planned (open loop held).
    lag_s: list[float] = dataclasses.field(default_factory=list)
    send_s: float = 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) if self.latencies_s else float("nan")

    def summary(self) -> str:
        lag = max(self.lag_s, default=0.0)
        return (
            f"{self.sent} sent in {self.send_s:.1f} s, {self.ok} ok, {self.failed} failed, "
            f"{self.rejected_503} x 503 (retried); p50 {self.percentile(50) * 1000:.0f} ms, "
            f"p99 {self.percentile(99) * 1000:.0f} ms; generator lag max {lag * 1000:.0f} ms"
        )


def _url(ip: str, model: str) -> str:
    # A pod IP gets the server's port; "host:port" (a router) is used as given.
    host = ip if ":" in ip else f"{ip}:8000"
    return f"http://{host}/v2/models/{model}/infer"


async def measure_capacity(
    ip: str, *, model: str = "mlp", concurrency: int = 16, seconds: float = 3.0
) -> float:
    """Requests per second one replica completes when kept saturated (closed loop)."""
    body = mlp_request()
    done = 0
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 0.5  # warm-up: connections, first batches

        async def worker(count: bool) -> None:
            nonlocal done
            while time.monotonic() < deadline:
                async with session.post(_url(ip, model), data=body) as resp:
                    await resp.read()
                    if count and resp.status == 200:
                        done += 1

        await asyncio.gather(*(worker(False) for _ in range(concurrency)))
        started = time.monotonic()
        deadline = started + seconds
        await asyncio.gather(*(worker(True) for _ in range(concurrency)))
        return done / (time.monotonic() - started)


async def open_loop(
    endpoints: Callable[[], list[str]],
    *,
    rate: float | Callable[[float], float],
    duration_s: float,
    model: str = "mlp",
    poisson: bool = True,
    seed: int = 0,
    deadline_s: float = 60.0,
    timeout_s: float = 30.0,
    on_progress: Callable[[float, LoadResult], None] | None = None,
    result: LoadResult | None = None,
) -> LoadResult:
    """Send requests at ``rate`` per second (a number or a function of elapsed seconds) for
    ``duration_s``, then wait for the last answers. Poisson arrivals unless ``poisson`` is
    False (evenly spaced). Pass ``result`` to watch the counters while it runs."""
    result = result if result is not None else LoadResult()
    body = mlp_request()
    rng = random.Random(seed)
    headers = {"Content-Type": "application/json"}

    async def one(session: aiohttp.ClientSession) -> None:
        started = time.monotonic()
        give_up = started + deadline_s
        last = "no Ready endpoint"
        while time.monotonic() < give_up:
            targets = endpoints()
            if not targets:
                await asyncio.sleep(0.1)
                continue
            try:
                async with session.post(
                    _url(rng.choice(targets), model),
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout_s),
                ) as resp:
                    await resp.read()
                    if resp.status == 200:
                        result.ok += 1
                        result.latencies_s.append(time.monotonic() - started)
                        return
                    if resp.status == 503:
                        result.rejected_503 += 1
                        await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))
                        continue
                    last = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                    break  # a real error: retrying would not change the answer
            except (aiohttp.ClientError, TimeoutError) as exc:
                # A replica that went away mid-request: another one gets it, as a client would.
                last = repr(exc)
                await asyncio.sleep(0.05)
        result.failed += 1
        result.errors.append(last)

    rate_at = rate if callable(rate) else (lambda _t, r=float(rate): r)
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        started = time.monotonic()
        due = 0.0
        next_progress = 1.0
        while due < duration_s:
            now = time.monotonic() - started
            if due > now:
                await asyncio.sleep(due - now)
                now = time.monotonic() - started
            result.lag_s.append(max(0.0, now - due))
            result.sent += 1
            task = asyncio.create_task(one(session))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            current = max(rate_at(due), 1e-6)
            due += rng.expovariate(current) if poisson else 1.0 / current
            if on_progress is not None and now >= next_progress:
                on_progress(now, result)
                next_progress += 1.0
        result.send_s = time.monotonic() - started
        if tasks:
            await asyncio.wait(tasks)
    return result


def run(coro: Any) -> Any:
    """Run a load coroutine to completion in its own event loop (tests call it in a thread)."""
    return asyncio.run(coro)
