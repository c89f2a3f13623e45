"""HTTP scraping of serving pods' Prometheus endpoints (aiohttp, which kopf already brings).

Owns: one GET per pod with a short timeout, all pods concurrently, so one slow pod never stalls
the others. Returns raw text; parsing is the pure core's job (``core.metrics``).
"""

from __future__ import annotations

import asyncio

import aiohttp

MAX_BYTES = 4 * 1024 * 1024  # a metrics page larger than this is a bug, not a signal


async def scrape_one(
    session: aiohttp.ClientSession,
    *,
    host: str,
    port: int,
    timeout_s: float,
    path: str = "/metrics",
) -> str | None:
    try:
        async with session.get(
            f"http://{host}:{port}{path}", timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as resp:
            if resp.status != 200:
                return None
            body = await resp.content.read(MAX_BYTES)
            return body.decode("utf-8", errors="replace")
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None


async def scrape_all(
    session: aiohttp.ClientSession, targets: dict[str, tuple[str, int]], *, timeout_s: float
) -> dict[str, str | None]:
    """{pod name: metrics text or None} for {pod name: (ip, port)}."""
    names = list(targets)
    results = await asyncio.gather(
        *(
            scrape_one(session, host=targets[n][0], port=targets[n][1], timeout_s=timeout_s)
            for n in names
        )
    )
    return dict(zip(names, results, strict=True))
