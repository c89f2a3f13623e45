"""aiohttp serving an `http_server.Endpoints` table: the HTTP stack for what the fast path
does not read itself (chunked bodies, Expect: 100-continue, escaped paths, queries, unknown
routes and methods, upgrades, oversized heads and bodies).

Owns the adaptation only: routing by aiohttp's dispatcher (its 404 and 405 for what no route
takes), reading bodies within the size limit, and sending a `Reply`. What each endpoint
answers is `http_server`'s. The server imports this module the first time a connection needs
it (`http_fastpath.Fallback`), not at start: aiohttp's import is ~0.3 s.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from kubeinfer_onnx import http_server, protocol


def _response(reply: http_server.Reply, *, close: bool) -> web.Response:
    response = web.Response(
        body=reply.body,
        status=reply.status,
        content_type=reply.content_type,
        headers=reply.headers or None,
    )
    if close:
        response.headers["Connection"] = "close"  # Send clients to another replica.
    return response


def build_app(endpoints: http_server.Endpoints, *, max_request_bytes: int) -> web.Application:
    # aiohttp enforces client_max_size while reading; we also check Content-Length up front
    # so an oversized body is refused before any of it is buffered.
    app = web.Application(client_max_size=max_request_bytes)

    def adapt(route: http_server.Route) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            body: bytes | None = None
            if route.has_body:
                length = request.content_length
                if length is None or length <= max_request_bytes:
                    try:
                        body = await request.read()
                    except web.HTTPRequestEntityTooLarge:
                        body = None  # over the limit; the handler says so
            reply = await http_server.answer(
                route,
                http_server.Request(
                    params=dict(request.match_info),
                    body=body,
                    content_length=request.content_length,
                    header_length=request.headers.get(protocol.HEADER_LENGTH),
                ),
            )
            return _response(reply, close=endpoints.draining())

        return handler

    for route in endpoints:
        app.router.add_route(route.method, route.path, adapt(route))
    return app


async def start(
    endpoints: http_server.Endpoints, *, max_request_bytes: int, shutdown_timeout: float
) -> web.AppRunner:
    """A runner whose `server` makes aiohttp's per-connection protocol; it listens nowhere
    (connections come from the fast path's listener)."""
    runner = web.AppRunner(
        build_app(endpoints, max_request_bytes=max_request_bytes),
        access_log=None,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    return runner
