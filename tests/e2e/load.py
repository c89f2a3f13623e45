"""A closed-loop load generator over the Ready pods' IPs, with client retries on 503."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable

import aiohttp
import numpy as np


@dataclasses.dataclass
class LoadResult:
    ok: int = 0
    rejected_503: int = 0
    failed: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)


def mlp_request() -> dict[str, object]:
    data = np.random.default_rng(0).standard_normal(64).astype(np.float32).tolist()
    return {"inputs": [{"name": "INPUT0", "shape": [1, 64], "datatype": "FP32", "data": data}]}


async def run_load(
    ips: Callable[[], list[str]],
    *,
    concurrency: int,
    duration_s: float,
    model: str = "mlp",
    retries: int = 5,
) -> LoadResult:
    result = LoadResult()
    body = mlp_request()
    deadline = time.monotonic() + duration_s

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            targets = ips()
            if not targets:
                await asyncio.sleep(0.2)
                continue
            for attempt in range(retries + 1):
                ip = random.choice(targets)
                try:
                    async with session.post(
                        f"http://{ip}:8000/v2/models/{model}/infer",
                        json=body,
                        timeout=aiohttp.ClientTimeout(total=10),
                    ) as resp:
                        await resp.read()
                        if resp.status == 200:
                            result.ok += 1
                            break
                        if resp.status == 503:
                            result.rejected_503 += 1
                            await asyncio.sleep(float(resp.headers.get("Retry-After", "0.1")))
                            continue
                        result.failed += 1
                        result.errors.append(f"{resp.status}")
                        break
                except (aiohttp.ClientError, TimeoutError) as exc:
                    # A replica going away mid-request: retry elsewhere, as a client would.
                    if attempt == retries:
                        result.failed += 1
                        result.errors.append(repr(exc))
                    await asyncio.sleep(0.05)

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency * 2)
    ) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return result
