"""The queue scrape: every ~250 ms, each routable pod's queue depth from its /metrics.

Owns the loop that feeds `picking.observe_queue` (the pod's pending requests, less the ones
this router had in flight there) and the table's per-tick bookkeeping (service-rate windows,
stale queue reports). All pods are scraped concurrently with a timeout of one interval, so a
slow pod delays nothing; a pod that does not answer keeps its last report until it goes stale.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp

from kubeinfer_router import config, exposition, picking, table

log = logging.getLogger("kubeinfer_router.scraping")

MAX_BYTES = 4 * 1024 * 1024  # a metrics page larger than this is a bug, not a signal


class Scraper:
    def __init__(
        self,
        *,
        cfg: config.RouterConfig,
        endpoints: table.Table,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.table = endpoints
        self.clock = clock

    def reconfigure(self, cfg: config.RouterConfig) -> None:
        """A reloaded config: the variants' queue metrics apply from the next scrape."""
        self.cfg = cfg

    async def run(self) -> None:
        interval = self.cfg.scrape_interval_s
        timeout = aiohttp.ClientTimeout(total=interval)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                began = self.clock()
                targets = [
                    e
                    for eps in self.table.routable.values()
                    for e in eps
                    if e.metrics_port is not None
                ]
                if targets:
                    await asyncio.gather(*(self._scrape(session, e) for e in targets))
                now = self.clock()
                self.table.tick(now, interval_s=interval)
                await asyncio.sleep(max(0.0, interval - (now - began)))

    async def _scrape(self, session: aiohttp.ClientSession, ep: picking.Endpoint) -> None:
        host = f"[{ep.host}]" if ":" in ep.host else ep.host
        before = ep.in_flight
        try:
            async with session.get(f"http://{host}:{ep.metrics_port}/metrics") as response:
                if response.status != 200:
                    return
                text = (await response.content.read(MAX_BYTES)).decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError, OSError):
            return
        pending = exposition.sum_samples(text, self.cfg.queue_metric_of(ep.variant))
        if pending is None:
            return
        # The pod counted some of our own requests as pending: subtract the larger of our
        # in-flight counts around the scrape, so ours are never counted twice.
        own = max(before, ep.in_flight)
        picking.observe_queue(ep, pending=pending, own_in_flight=own, now=self.clock())
