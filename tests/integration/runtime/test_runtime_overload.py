"""Overload (bounded queue -> 503 + Retry-After / UNAVAILABLE, then recovery) and the
SIGTERM drain (readiness false, every accepted request answered, clean exit)."""

from __future__ import annotations

import asyncio
import pathlib
import signal
import time
from collections.abc import Iterator

import aiohttp
import numpy as np
import pytest
import tritonclient.grpc.aio as aiogrpcclient
from tritonclient.utils import InferenceServerException

from conftest import Server, start_server

BIG = np.random.default_rng(0).standard_normal((128, 512)).astype(np.float32)


def big_body() -> tuple[bytes, dict[str, str]]:
    header = (
        b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[128,512],'
        b'"parameters":{"binary_data_size":%d}}]}' % BIG.nbytes
    )
    return header + BIG.tobytes(), {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


@pytest.fixture(scope="module")
def small_queue_server(
    heavy_repo: pathlib.Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    server = start_server(
        heavy_repo, tmp_path_factory.mktemp("logs") / "overload.log", "--max-queue-size", "2"
    )
    yield server
    assert server.stop() == 0, server.log()


def rss_kib(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def flood(server: Server, count: int) -> list[tuple[int, str | None]]:
    body, headers = big_body()
    connector = aiohttp.TCPConnector(limit=count)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> tuple[int, str | None]:
            async with session.post(
                f"http://{server.http_url}/v2/models/heavy/infer", data=body, headers=headers
            ) as response:
                await response.read()
                return response.status, response.headers.get("Retry-After")

        return await asyncio.gather(*(one() for _ in range(count)))


async def test_http_overload_answers_503_then_recovers(small_queue_server: Server) -> None:
    server = small_queue_server
    rejected_before = server.metric(
        "nv_inference_request_failure", model="heavy", reason="REJECTED"
    )
    rss_before = rss_kib(server.process.pid)
    results = await flood(server, 60)
    statuses = [status for status, _ in results]
    assert set(statuses) <= {200, 503}
    assert statuses.count(503) > 0 and statuses.count(200) > 0
    assert all(retry == "1" for status, retry in results if status == 503)
    assert server.metric(
        "nv_inference_request_failure", model="heavy", reason="REJECTED"
    ) == rejected_before + statuses.count(503)
    # A second, bigger flood does not grow memory without bound: the queue holds 2 requests.
    await flood(server, 120)
    assert rss_kib(server.process.pid) - rss_before < 300 * 1024
    # Recovery: once the flood is over, requests succeed again.
    assert [status for status, _ in await flood(server, 2)] == [200, 200]


async def test_grpc_overload_answers_unavailable(small_queue_server: Server) -> None:
    client = aiogrpcclient.InferenceServerClient(small_queue_server.grpc_url)

    async def one() -> str:
        tensor = aiogrpcclient.InferInput("INPUT0", [128, 512], "FP32")
        tensor.set_data_from_numpy(BIG)
        try:
            await client.infer("heavy", [tensor])
        except InferenceServerException as exc:
            assert "queue is full" in str(exc)
            return str(exc.status())
        return "OK"

    try:
        outcomes = await asyncio.gather(*(one() for _ in range(40)))
        assert "StatusCode.UNAVAILABLE" in outcomes and "OK" in outcomes
        assert set(outcomes) <= {"OK", "StatusCode.UNAVAILABLE"}
        assert await one() == "OK"
    finally:
        await client.close()


async def test_sigterm_drains_every_accepted_request(
    heavy_repo: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    # A non-default loopback address, as the operator's e2e test binds one per fake pod IP.
    server = start_server(
        heavy_repo, tmp_path / "drain.log", "--drain-delay-secs", "1", address="127.0.0.2"
    )
    body, headers = big_body()
    url = f"http://{server.http_url}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def infer() -> int:
            async with session.post(
                f"{url}/v2/models/heavy/infer", data=body, headers=headers
            ) as response:
                await response.read()
                return response.status

        accepted = [asyncio.create_task(infer()) for _ in range(24)]
        await server.wait_queued("heavy", 4)
        server.process.send_signal(signal.SIGTERM)

        async def ready_status() -> int:
            async with session.get(f"{url}/v2/health/ready") as response:
                return response.status

        # Not ready once the signal is handled (waited for, not slept on)...
        deadline = time.monotonic() + 10
        while await ready_status() != 503:
            assert time.monotonic() < deadline, "still ready 10 s after SIGTERM"
        late = await infer()  # ...but still answering during the drain delay.
        statuses = await asyncio.gather(*accepted)
    assert statuses == [200] * len(accepted)
    assert late == 200
    assert await asyncio.to_thread(server.process.wait, 30) == 0
    assert "stopped" in server.log()
