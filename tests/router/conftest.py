"""Fixtures for the router's tests: small upstreams on loopback (raw asyncio and aiohttp)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict
from router_upstreams import AppServer, RawHandler, RawServer, RouterHandle

from kubeinfer_router import config, proxy, table, telemetry


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[RawHandler], Awaitable[RawServer]]]:
    """Start a raw TCP server on 127.0.0.1 with the given connection handler."""
    servers: list[asyncio.Server] = []

    async def start(handler: RawHandler) -> RawServer:
        holder: list[RawServer] = []

        async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            holder[0].connections += 1
            try:
                await handler(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(counted, "127.0.0.1", 0)
        servers.append(server)
        holder.append(RawServer(server))
        return holder[0]

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def app_server() -> AsyncIterator[Callable[..., Awaitable[AppServer]]]:
    """An aiohttp upstream on 127.0.0.1 that records each request and runs `handler`."""
    runners: list[web.AppRunner] = []

    async def start(
        handler: Callable[[web.Request, bytes], Awaitable[web.StreamResponse]] | None = None,
    ) -> AppServer:
        box: list[AppServer] = []

        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            box[0].requests.append(
                {"path": request.path_qs, "headers": CIMultiDict(request.headers), "body": body}
            )
            if handler is not None:
                return await handler(request, body)
            return web.Response(body=body, headers={"X-Seen-Path": request.path_qs})

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        box.append(AppServer(runner, port))
        return box[0]

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def make_router() -> AsyncIterator[Callable[..., Awaitable[RouterHandle]]]:
    handles: list[RouterHandle] = []

    async def start(variants: dict[str, int] | None = None, **settings: Any) -> RouterHandle:
        doc: dict[str, Any] = {
            "variants": [{"name": n, "weight": w} for n, w in (variants or {"stable": 100}).items()]
        }
        doc.update(settings)
        cfg = config.parse_document(doc)
        endpoints = table.Table(v.name for v in cfg.variants)
        box: list[RouterHandle] = []

        async def wake() -> None:
            box[0].wakes.append(asyncio.get_running_loop().time())

        router = proxy.Proxy(cfg=cfg, endpoints=endpoints, stats=telemetry.Telemetry(), wake=wake)
        await router.start()
        router.synced.set()
        runner = web.AppRunner(router.build_app(), access_log=None, shutdown_timeout=5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        box.append(RouterHandle(router, endpoints, runner, port))
        handles.append(box[0])
        return box[0]

    yield start
    for handle in handles:
        await handle.proxy.stop()
        await handle.runner.cleanup()
        await handle.proxy.close()
