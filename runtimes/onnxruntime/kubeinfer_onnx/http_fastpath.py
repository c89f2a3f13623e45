"""The HTTP infer hot path: POST .../infer on HTTP/1.1 without aiohttp's per-request machinery.

Owns one thing: reading plain infer requests (Content-Length bodies within the limit, a path
that needs no decoding) off a connection and writing their answers, one at a time and in
order. Every other request (GETs, chunked or oversized bodies, Expect, an odd path, an upgrade)
hands the connection, with the bytes read so far, to aiohttp's own protocol, which serves it
from then on exactly as before.
What an infer request means, its errors included, is `http_server.run_infer`'s, shared by both.

Why: under perf_analyzer the event loop thread bounds HTTP throughput, and a third of its time
went to aiohttp building Request/Response objects, routing and header multidicts (bench/runtime
PROFILE.md). This path spends that on one bytes.split and a dict.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Callable
from typing import Any

from kubeinfer_onnx import errors, http_server, model

log = logging.getLogger(__name__)

_MAX_HEAD = 16 * 1024  # aiohttp's own limits are 8 KB per line; longer heads go to aiohttp
_PREFIXES = (b"/v2/models/",)


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


class InferProtocol(asyncio.Protocol):
    """One connection: serves infer requests itself; anything else goes to `fallback`."""

    def __init__(
        self,
        *,
        models: model.ModelSet,
        max_request_bytes: int,
        in_flight: http_server.InFlight,
        fallback: Callable[[], asyncio.Protocol],
    ) -> None:
        self._models = models
        self._max = max_request_bytes
        self._in_flight = in_flight
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
            self._read_paused = True
            self._transport.pause_reading()
        if not self._busy:
            self._next()

    def eof_received(self) -> bool | None:
        # The client will send nothing more: answer what is in progress, then close.
        self._closing = True
        return True if self._busy else None

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
                prefix = bytes(self._buffer[:5])  # may be the first bytes of "POST " only
                if len(self._buffer) >= _MAX_HEAD or not b"POST ".startswith(prefix):
                    self._hand_over()
                return
            head = self._parse_head(bytes(self._buffer[:end]))
            if head is None:
                self._hand_over()
                return
            route, length, keep_alive, header_length = head
            start = end + 4
            if len(self._buffer) < start + length:
                return  # wait for the rest of the body
            body = bytes(self._buffer[start : start + length])
            del self._buffer[: start + length]
            if self._read_paused:
                self._read_paused = False
                self._transport.resume_reading()
            self._busy = True
            self._closing = self._closing or not keep_alive
            self._task = asyncio.ensure_future(self._answer(route, body, header_length, length))

    def _parse_head(
        self, head: bytes
    ) -> tuple[tuple[str, str | None], int, bool, str | None] | None:
        """((model, version), content length, keep-alive, Inference-Header-Content-Length) of a
        plain infer POST; None for anything this path does not serve."""
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[0] != b"POST" or not parts[1].endswith(b"/infer"):
            return None
        path, version = parts[1], parts[2]
        if not path.startswith(_PREFIXES) or b"%" in path or b"?" in path:
            return None
        route = _route(path)
        if route is None:
            return None
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
        if length is None or length > self._max:
            return None  # aiohttp refuses an oversized body as it always has
        return route, length, keep_alive, header_length

    async def _answer(
        self, route: tuple[str, str | None], body: bytes, header_length: str | None, length: int
    ) -> None:
        try:
            reply = await http_server.run_infer(
                self._models,
                name=route[0],
                version=route[1],
                body=body,
                content_length=length,
                header_length=header_length,
                max_request_bytes=self._max,
                in_flight=self._in_flight,
            )
        except Exception as exc:  # a bug, not a bad request: answer 500 as aiohttp would
            log.exception("infer failed")
            reply = http_server.Reply.error(errors.InferenceError(f"internal error: {exc}"))
        close = self._closing or self._models.draining
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
        if self._read_paused:
            transport.resume_reading()  # aiohttp applies its own limits from here
        self._buffer.clear()
        self._transport = None
        protocol = self._fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if data:
            protocol.data_received(data)


def _route(path: bytes) -> tuple[str, str | None] | None:
    """/v2/models/{m}/infer or /v2/models/{m}/versions/{v}/infer -> (m, v)."""
    parts = path.decode("latin-1").split("/")  # '', 'v2', 'models', m, ..., 'infer'
    if len(parts) == 5 and parts[3]:
        return parts[3], None
    if len(parts) == 7 and parts[4] == "versions" and parts[3] and parts[5]:
        return parts[3], parts[5]
    return None


_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}
