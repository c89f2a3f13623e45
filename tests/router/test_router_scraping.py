"""The queue scrape reads each pod's queue depth under its own variant's metric name: a
canary on a runtime that names it otherwise is scraped by that name, the rest by the router's."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from kubeinfer_router import config, picking, scraping, table

PAGE = """\
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="m",version="1"} 3
# TYPE my_queue gauge
my_queue 7
"""


async def test_each_variant_is_scraped_by_its_own_queue_metric() -> None:
    app = web.Application()

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=PAGE)

    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        doc = {
            "variants": [
                {"name": "stable", "endpoints": ["127.0.0.1:1"]},
                {"name": "canary", "endpoints": ["127.0.0.1:2"], "queueMetric": "my_queue"},
            ]
        }
        cfg = config.parse_document(doc)
        scraper = scraping.Scraper(cfg=cfg, endpoints=table.Table(["stable", "canary"]))
        eps = {
            v: picking.Endpoint(key=v, host="127.0.0.1", port=1, metrics_port=port, variant=v)
            for v in ("stable", "canary")
        }
        async with aiohttp.ClientSession() as session:
            for ep in eps.values():
                await scraper._scrape(session, ep)
        assert (eps["stable"].external_queued, eps["canary"].external_queued) == (3.0, 7.0)
        # A reload that drops the canary's own name: the router's name from the next scrape.
        scraper.reconfigure(config.parse_document({**doc, "variants": doc["variants"][:1]}))
        async with aiohttp.ClientSession() as session:
            await scraper._scrape(session, eps["canary"])
        assert eps["canary"].external_queued == 3.0
    finally:
        await runner.cleanup()
