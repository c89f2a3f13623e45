"""HTTP scraping of serving pods' and router pods' Prometheus endpoints (aiohttp, which kopf
already brings).

Owns: one GET per pod with a short timeout, all pods concurrently, so one slow pod never stalls
the others. Returns raw text; parsing is the pure core's job (``core.metrics``).
"""

from __future__ import annotations

import asyncio

import aiohttp

from kubeinfer.clients import kube
from kubeinfer.core import api, builders, census, router

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


async def router_pages(
    session: aiohttp.ClientSession, *, namespace: str, name: str, timeout_s: float
) -> dict[str, str] | None:
    """Every Ready router pod's /metrics page for one service, by pod name; None when none is
    Ready or any did not answer (a partial sum would read as fewer requests: no evidence of
    anything). By pod, so a window can be taken per router and survive one's restart.

    The router's pods are listed from the API: the store holds the serving pods only (router
    pods do not carry their label). One list per call; the autoscaler (scale to zero) and the
    canary engine (analysis) are its callers."""
    owner = builders.Owner(name=name, namespace=namespace, uid="")
    pods = await asyncio.to_thread(
        kube.list_objects, "v1", "Pod", namespace, router.selector_string(owner)
    )
    ready = census.classify_pods(pods, api.GPUSpec().resource_name).ready
    if not ready:
        return None
    texts = await scrape_all(
        session, {p: (ip, router.HTTP_PORT) for p, ip in ready.items()}, timeout_s=timeout_s
    )
    pages = {pod: t for pod, t in texts.items() if t is not None}
    return pages if len(pages) == len(texts) else None
