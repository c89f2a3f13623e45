"""The HTTP/1.1 hot path: plain requests to any endpoint, without aiohttp.

Owns one thing: reading plain requests (a GET or POST to a route of the `Endpoints` table, a
Content-Length body within the limit, a path that needs no decoding) off a connection and
writing their answers, one at a time and in order. Every other request (chunked or oversized
bodies, Expect, an escaped path or a query, no route, an upgrade) hands the connection, with the
bytes read so far, to aiohttp (`http_aiohttp`, through `Fallback`), which serves it from then on.
What a request means, its errors included, is `http_server`'s, shared by both.

Why: under perf_analyzer the event loop thread bounds HTTP throughput, and a third of its time
went to aiohttp building Request/Response objects, routing and header multidicts (bench/runtime
PROFILE.md). This path spends that on one bytes.split and a dict. And because probes, scrapes,
metadata and infer all come this way, aiohttp is imported only when a connection needs it:
its ~0.3 s import was half of the time from process start to ready.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kubeinfer_onnx import errors, http_server

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

_MAX_HEAD = 16 * 1024  # aiohttp's own limits are 8 KB per line; longer heads go to aiohttp
_METHODS = (b"GET", b"POST")
_STARTS = tuple(m + b" " for m in _METHODS)

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class _Clock:
    """The Date header, formatted once a second rather than once a response."""

    def __init__(self) -> None:
        self._second = 0
        self._value = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = email.utils.formatdate(now, usegmt=True).encode()
        return self._value


_clock = _Clock()


def _import_aiohttp_stack() -> Callable[..., Awaitable[web.AppRunner]]:
    # Here and not at the top: this import is what start-up no longer pays.
    from kubeinfer_onnx import http_aiohttp

    return http_aiohttp.start


class Fallback:
    """aiohttp for the connections this path hands over, loaded the first time one needs it
    (imported in a thread, so the event loop keeps serving meanwhile)."""

    def __init__(
        self,
        endpoints: http_server.Endpoints,
        *,
        max_request_bytes: int,
        shutdown_timeout: float,
    ) -> None:
        self._endpoints = endpoints
        self._max = max_request_bytes
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._loading: asyncio.Task[ProtocolFactory] | None = None
        self.factory: ProtocolFactory | None = None  # set once loaded

    async def load(self) -> ProtocolFactory:
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._start())
        return await self._loading

    async def _start(self) -> ProtocolFactory:
        log.info("loading aiohttp for a request the fast path does not read (once)")
        start = await asyncio.to_thread(_import_aiohttp_stack)
        self._runner = await start(
            self._endpoints, max_request_bytes=self._max, shutdown_timeout=self._shutdown_timeout
        )
        server = self._runner.server
        assert server is not None  # set by setup()
        self.factory = server
        return server

    async def close(self) -> None:
        """aiohttp's cleanup: closes its connections, then waits for running handlers."""
        if self._runner is not None:
            await self._runner.cleanup()


class FastProtocol(asyncio.Protocol):
    """One connection: serves plain requests itself; anything else goes to `fallback`."""

    def __init__(
        self,
        *,
        endpoints: http_server.Endpoints,
        max_request_bytes: int,
        fallback: Fallback,
    ) -> None:
        self._endpoints = endpoints
        self._max = max_request_bytes
        self._fallback = fallback
        self._transport: Any = None
        self._buffer = bytearray()
        self._busy = False  # a request is being answered; later ones wait in the buffer
        self._closing = False
        self._task: asyncio.Future[None] | None = None  # the answer in progress
        # Backpressure both ways, as aiohttp applies it: a client that stops reading its
        # answers gets no new ones started; one that sends far ahead is not read further.
        self._write_paused = False
        self._read_paused = False

    def connection_made(self, transport: Any) -> None:
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if not self._busy:
            self._next()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > self._max + _MAX_HEAD and self._transport is not None:
            self._pause_reading()
        if not self._busy:
            self._next()

    def eof_received(self) -> bool | None:
        # The client will send nothing more: answer what is in progress, then close.
        self._closing = True
        return True if self._busy else None

    def _pause_reading(self) -> None:
        if not self._read_paused:
            self._read_paused = True
            self._transport.pause_reading()

    def _next(self) -> None:
        """Start the next complete request in the buffer, or hand the connection over."""
        while (
            self._buffer
            and not self._busy
            and not self._write_paused
            and self._transport is not None
        ):
            end = self._buffer.find(b"\r\n\r\n", 0, _MAX_HEAD)
            if end < 0:
                start = bytes(self._buffer[:5])  # may be the first bytes of "POST " only
                plausible = any(start.startswith(m) or m.startswith(start) for m in _STARTS)
                if len(self._buffer) >= _MAX_HEAD or not plausible:
                    self._hand_over()
                return
            head = self._parse_head(bytes(self._buffer[:end]))
            if head is None:
                self._hand_over()
                return
            route, request, keep_alive = head
            start_of_body = end + 4
            length = request.content_length or 0
            if len(self._buffer) < start_of_body + length:
                return  # wait for the rest of the body
            if route.has_body:
                request = http_server.Request(
                    params=request.params,
                    body=bytes(self._buffer[start_of_body : start_of_body + length]),
                    content_length=request.content_length,
                    header_length=request.header_length,
                )
            del self._buffer[: start_of_body + length]
            if self._read_paused:
                self._read_paused = False
                self._transport.resume_reading()
            self._busy = True
            self._closing = self._closing or not keep_alive
            self._task = asyncio.ensure_future(self._answer(route, request))

    def _parse_head(
        self, head: bytes
    ) -> tuple[http_server.Route, http_server.Request, bool] | None:
        """(route, request without its body, keep-alive) of a plain request to a route;
        None for anything this path does not serve."""
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[0] not in _METHODS:
            return None
        method, path, version = parts
        if not path.startswith(b"/") or b"%" in path or b"?" in path or b"#" in path:
            return None
        matched = self._endpoints.match(method.decode(), path.decode("latin-1"))
        if matched is None:
            return None  # aiohttp answers 404 or 405
        route, params = matched
        if version == b"HTTP/1.1":
            keep_alive = True
        elif version == b"HTTP/1.0":
            keep_alive = False
        else:
            return None
        length: int | None = None
        header_length: str | None = None
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                return None
            name = name.strip().lower()
            value = value.strip()
            if name == b"content-length":
                if length is not None or not value.isdigit():
                    return None
                length = int(value)
            elif name == b"connection":
                token = value.lower()
                if token == b"close":
                    keep_alive = False
                elif token == b"keep-alive":
                    keep_alive = True
                else:
                    return None  # upgrade and friends: aiohttp's business
            elif name in (b"transfer-encoding", b"expect", b"upgrade"):
                return None
            elif name == b"inference-header-content-length":
                header_length = value.decode("latin-1")
        if route.has_body:
            if length is None or length > self._max:
                return None  # aiohttp refuses an oversized body as it always has
        elif length:
            return None  # a body where the route takes none: aiohttp reads and ignores it
        request = http_server.Request(
            params=params, content_length=length, header_length=header_length
        )
        return route, request, keep_alive

    async def _answer(self, route: http_server.Route, request: http_server.Request) -> None:
        try:
            reply = await http_server.answer(route, request)
        except Exception as exc:  # a bug, not a bad request: answer 500 as aiohttp would
            log.exception("%s %s failed", route.method, route.path)
            reply = http_server.Reply.error(errors.InferenceError(f"internal error: {exc}"))
        close = self._closing or self._endpoints.draining()
        self._write(reply, close=close)
        self._busy = False
        if close:
            if self._transport is not None:
                self._transport.close()
            return
        self._next()

    def _write(self, reply: http_server.Reply, *, close: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return  # the client went away; its answer has nowhere to go
        head = [
            b"HTTP/1.1 %d %s\r\n" % (reply.status, _REASONS.get(reply.status, b"Unknown")),
            b"Content-Type: %s\r\n" % reply.content_type.encode(),
            b"Content-Length: %d\r\n" % len(reply.body),
            b"Date: %s\r\n" % _clock.date(),
            b"Server: %s\r\n" % http_server.SERVER_NAME.encode(),
        ]
        for name, value in reply.headers.items():
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        if close:
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        head.append(reply.body)
        transport.write(b"".join(head))

    def _hand_over(self) -> None:
        """From now on aiohttp serves this connection, starting with the bytes buffered."""
        transport, data = self._transport, bytes(self._buffer)
        self._buffer.clear()
        factory = self._fallback.factory
        if factory is None:
            self._pause_reading()  # hold this connection (not the loop) while aiohttp loads
        self._transport = None  # nothing more is read or written here
        if factory is not None:
            self._switch(transport, data, factory)
            return
        loading = asyncio.ensure_future(self._fallback.load())

        def loaded(task: asyncio.Future[ProtocolFactory]) -> None:
            failure = "cancelled" if task.cancelled() else task.exception()
            if failure is not None:
                log.error("could not load aiohttp for a request: %r", failure)
                transport.close()
                return
            self._switch(transport, data, task.result())

        loading.add_done_callback(loaded)

    def _switch(self, transport: Any, data: bytes, factory: ProtocolFactory) -> None:
        if transport.is_closing():
            return  # the client left while aiohttp loaded
        protocol: Any = factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()  # aiohttp applies its own limits from here
        if data:
            protocol.data_received(data)


_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}
