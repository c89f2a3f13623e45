"""The ONNX Runtime server at 2x and 5x its measured capacity, open loop, for a few seconds
each: every request is answered 200 or 503 with Retry-After, the accepted ones within a p99
bound that the bounded queue implies, memory stays flat, and it recovers as soon as load drops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import time
from collections.abc import Iterator

import aiohttp
import numpy as np
import pytest

from tests.reliability.conftest import Figures, Server, rss_mib, start_server

QUEUE = 16
ROWS = 64  # rows per request: heavy's compute dominates, so capacity is the model's, not HTTP's
PAYLOAD = np.random.default_rng(0).standard_normal((ROWS, 512)).astype(np.float32)
STEP_S = 4.0


def body() -> tuple[bytes, dict[str, str]]:
    header = (
        b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[%d,512],'
        b'"parameters":{"binary_data_size":%d}}]}' % (ROWS, PAYLOAD.nbytes)
    )
    return header + PAYLOAD.tobytes(), {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


@dataclasses.dataclass
class Step:
    offered: int = 0
    ok: int = 0
    rejected: int = 0
    rejected_without_retry_after: int = 0
    other: list[str] = dataclasses.field(default_factory=list)
    latencies: list[float] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def p99(self) -> float:
        return float(np.percentile(self.latencies, 99)) if self.latencies else 0.0


@pytest.fixture(scope="module")
def load_server(
    reliability_repo: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    server = start_server(
        reliability_repo,
        tmp_path_factory.mktemp("logs") / "load.log",
        "--max-queue-size",
        str(QUEUE),
        "--intra-op-threads",
        "1",
        "--log-level",
        "WARNING",
    )
    yield server
    assert server.stop() == 0, server.log()[-3000:]


async def closed_loop(server: Server, concurrency: int, seconds: float) -> float:
    """Requests per second with `concurrency` clients back to back: the capacity."""
    data, headers = body()
    url = f"http://{server.http_url}/v2/models/heavy/infer"
    done = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def client() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                async with session.post(url, data=data, headers=headers) as response:
                    await response.read()
                    assert response.status == 200
                    done += 1

        start = time.monotonic()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return done / (time.monotonic() - start)


async def open_loop(server: Server, rate: float, seconds: float) -> Step:
    """Send at `rate` per second whatever the answers: what a burst of users does."""
    data, headers = body()
    url = f"http://{server.http_url}/v2/models/heavy/infer"
    step = Step()
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=30)
    ) as session:

        async def one() -> None:
            sent = time.monotonic()
            try:
                async with session.post(url, data=data, headers=headers) as response:
                    await response.read()
                    if response.status == 200:
                        step.ok += 1
                        step.latencies.append(time.monotonic() - sent)
                    elif response.status == 503:
                        step.rejected += 1
                        if not response.headers.get("Retry-After"):
                            step.rejected_without_retry_after += 1
                    else:
                        step.other.append(str(response.status))
            except (aiohttp.ClientError, TimeoutError) as exc:
                step.other.append(repr(exc))

        tasks = []
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate) + 1 - step.offered
            for _ in range(due):
                tasks.append(asyncio.create_task(one()))
                step.offered += 1
            await asyncio.sleep(0.002)
        step.seconds = time.monotonic() - start
        await asyncio.gather(*tasks)
    return step


async def overload(server: Server, factor: int, capacity: float) -> Step:
    """An open-loop step at ``factor`` x ``capacity``. This host's speed drifts 2-3x within
    minutes (noisy neighbours): a step that rejected nothing may have met a server that got
    faster since its capacity was measured, so the capacity is measured again and, if it
    has grown, the step is offered again at the new figure (twice at most). A server that
    rejects nothing at ``factor`` x a capacity it still shows fails the test."""
    step = await open_loop(server, factor * capacity, STEP_S)
    for _ in range(2):
        if step.rejected > 0:
            break
        again = await closed_loop(server, 4, 3.0)
        if again <= capacity * 1.2:
            break
        capacity = again
        step = await open_loop(server, factor * capacity, STEP_S)
    return step


async def test_overload_2x_and_5x(load_server: Server, figures: Figures) -> None:
    await closed_loop(load_server, 4, 1.0)  # warm-up: sessions, allocator, thread pools
    capacity = await closed_loop(load_server, 4, 3.0)
    rss_before = rss_mib(load_server.process.pid)
    # Accepted requests wait for the queue ahead of them plus the batch in flight (about
    # (QUEUE + 4) / capacity), plus requests whose bodies the event loop has not read yet
    # (admission happens at enqueue, after the read). The stated bound is 10x the queue's
    # drain time: the load generator, the server's event loop and onnxruntime share 2 CPU
    # cores with other tests in CI, and 5x load measured up to 6x there (REPORT.md).
    p99_bound = max(2.0, 10 * (QUEUE + 4) / capacity)
    results = {}
    for factor in (2, 5):
        step = await overload(load_server, factor, capacity)
        results[factor] = step
        assert not step.other, step.other[:5]
        assert step.rejected_without_retry_after == 0
        assert step.ok > 0 and step.rejected > 0, step
        assert step.p99() < p99_bound, (factor, step.p99(), p99_bound)
        figures.record(
            f"load.{factor}x",
            offered_rps=round(step.offered / step.seconds, 1),
            ok=step.ok,
            rejected_503=step.rejected,
            other=len(step.other),
            accepted_p99_ms=round(step.p99() * 1000, 1),
            p99_bound_ms=round(p99_bound * 1000, 1),
        )
    # Recovery: the first request after the burst is served at once.
    sent = time.monotonic()
    recovered = await open_loop(load_server, 1, 0.001)
    recovery_s = time.monotonic() - sent
    rss_after = rss_mib(load_server.process.pid)
    figures.record(
        "load.summary",
        capacity_rps=round(capacity, 1),
        queue=QUEUE,
        rows_per_request=ROWS,
        step_seconds=STEP_S,
        rss_before_mib=round(rss_before, 1),
        rss_after_mib=round(rss_after, 1),
        first_request_after_burst_ms=round(recovery_s * 1000, 1),
    )
    assert recovered.ok == 1, recovered
    assert recovery_s < 0.5
    assert rss_after - rss_before < 50, (rss_before, rss_after)
