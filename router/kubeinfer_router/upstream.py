"""The client side of the proxy: HTTP/1.1 keep-alive connections to the pods, on asyncio.

Owns sending one buffered request to one pod and reading its whole answer, over a pool of
idle connections per pod, and the one distinction the router's retry rule needs exactly:
whether any byte of an answer arrived. `ConnectFailed` (refused, reset or closed before the
first answer byte) may be retried on another pod; `AnswerBroken` (the answer began, then the
connection failed or the bytes were not HTTP) never is; `UpstreamTimeout` is the request
timeout. A reused idle connection that turns out closed before any answer byte is replaced
by a fresh one once, transparently: that is the keep-alive race, not a pod failure.

Why not aiohttp's client: per request it builds a ClientRequest, a ClientResponse, timer
handles and header multidicts; this module writes one buffer and parses the status line and
headers with bytes.find. That halves the client's share of the router's CPU per request
(bench/router), and it knows the first-byte boundary instead of inferring it.
"""

from __future__ import annotations

import asyncio
import collections
import time
import typing
from collections.abc import Iterable

IDLE_TIMEOUT_S = 30.0  # below common server keep-alive timeouts (aiohttp 75 s, Triton 60 s)
MAX_HEAD_BYTES = 64 * 1024
NO_BODY_STATUSES = frozenset({204, 304})


class UpstreamError(Exception):
    pass


class ConnectFailed(UpstreamError):
    """No answer byte arrived: refused, reset, or closed before the answer began."""


class AnswerBroken(UpstreamError):
    """The answer began and then failed (connection lost, not HTTP): never retried."""


class UpstreamTimeout(UpstreamError):
    pass


class Answer:
    __slots__ = ("body", "headers", "reason", "status")

    def __init__(
        self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body


class _Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Answer] | None = None
        self.buffer = bytearray()
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self.head_only = False
        self._reset()

    def _reset(self) -> None:
        self.got_bytes = False
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.length: int | None = None  # body bytes expected; None: chunked or until close
        self.chunked = False
        self.keep_alive = True
        self.body_start = -1

    # -- protocol callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = typing.cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            # Bytes nobody asked for: the connection is out of step; drop it.
            self._close()
            return
        self.got_bytes = True
        self.buffer += data
        try:
            self._parse()
        except AnswerBroken as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is None or self.waiter.done():
            return
        if not self.got_bytes:
            self.waiter.set_exception(ConnectFailed(f"closed before any answer byte ({exc})"))
        elif self.body_start >= 0 and self.length is None and not self.chunked:
            self._finish(bytes(self.buffer[self.body_start :]))  # body delimited by close
        else:
            self.waiter.set_exception(AnswerBroken(f"connection lost mid-answer ({exc})"))

    # -- parsing ---------------------------------------------------------------------------

    def _parse(self) -> None:
        buf = self.buffer
        if self.body_start < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise AnswerBroken("answer head too large")
                return
            self._parse_head(bytes(buf[:end]))
            self.body_start = end + 4
            if 100 <= self.status < 200:  # an interim answer: the real one follows
                del buf[: self.body_start]
                self._reset()
                self.got_bytes = True
                self._parse()
                return
        if self.chunked:
            self._parse_chunked()
            return
        if self.length is None:
            return  # until the pod closes the connection
        end = self.body_start + self.length
        if len(buf) >= end:
            if len(buf) > end:
                raise AnswerBroken("more bytes than Content-Length")
            body = bytes(buf[self.body_start : end])
            self._finish(body)

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise AnswerBroken(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        self.status = int(parts[1])
        self.reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
        self.keep_alive = parts[0] != b"HTTP/1.0"
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise AnswerBroken(f"malformed header line: {line[:80]!r}")
            key = name.decode("latin-1")
            text = value.strip().decode("latin-1")
            lower = key.lower()
            if lower == "content-length":
                if not text.isdigit():
                    raise AnswerBroken(f"bad Content-Length: {text!r}")
                self.length = int(text)
            elif lower == "transfer-encoding":
                self.chunked = "chunked" in text.lower()
            elif lower == "connection":
                tokens = text.lower()
                if "close" in tokens:
                    self.keep_alive = False
                elif "keep-alive" in tokens:
                    self.keep_alive = True
            headers.append((key, text))
        self.headers = headers
        if self.head_only or self.status in NO_BODY_STATUSES:
            self.length, self.chunked = 0, False
        elif self.length is None and not self.chunked:
            self.keep_alive = False  # the body runs until the connection closes

    def _parse_chunked(self) -> None:
        # Rare for KServe v2 servers (both ours and Triton send Content-Length); kept simple.
        buf = self.buffer
        at = self.body_start
        body = bytearray()
        while True:
            line_end = buf.find(b"\r\n", at)
            if line_end < 0:
                return
            size_text = bytes(buf[at:line_end]).split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise AnswerBroken(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                trailer_end = buf.find(b"\r\n\r\n", line_end)
                if buf[line_end : line_end + 4] == b"\r\n\r\n":
                    trailer_end = line_end
                if trailer_end < 0:
                    return
                self._finish(bytes(body))
                return
            start = line_end + 2
            if len(buf) < start + size + 2:
                return
            body += buf[start : start + size]
            at = start + size + 2

    def _finish(self, body: bytes) -> None:
        answer = Answer(self.status, self.reason, self.headers, body)
        keep = self.keep_alive
        self.buffer.clear()
        self._reset()
        assert self.waiter is not None
        self.waiter.set_result(answer)
        if not keep:
            self._close()

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self._close()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- one exchange ----------------------------------------------------------------------

    def send(
        self, data: Iterable[bytes], *, head_only: bool, timeout_s: float
    ) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self.head_only = head_only
        waiter = self.waiter = self.loop.create_future()
        # One timer handle, cancelled when the answer is in: cheaper per request than
        # asyncio.timeout's task cancellation machinery.
        timer = self.loop.call_later(timeout_s, self._expire, waiter)
        waiter.add_done_callback(lambda _: timer.cancel())
        self.transport.writelines(data)
        return waiter

    def _expire(self, waiter: asyncio.Future[Answer]) -> None:
        if not waiter.done():
            waiter.set_exception(UpstreamTimeout("no answer in time"))
            self._close()


class _Slots:
    """Requests using (or opening) a connection to one pod, and those waiting their turn."""

    __slots__ = ("used", "waiters")

    def __init__(self) -> None:
        self.used = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()


class Pool:
    """Keep-alive connections per (host, port), at most `max_per_endpoint` at a time.

    The cap matters in a burst: thousands of connects at once overflow a server's accept
    backlog (aiohttp's is 128), the kernel drops SYNs, and each retransmit costs a second.
    Past the cap a request waits here, in FIFO order, for a connection to come free; it is
    still in flight for the picker, so the pod looks as loaded as it is.
    """

    def __init__(
        self,
        *,
        connect_timeout_s: float,
        request_timeout_s: float,
        max_per_endpoint: int = 128,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.max_per_endpoint = max_per_endpoint
        self.idle: dict[tuple[str, int], collections.deque[_Connection]] = {}
        self.slots: dict[tuple[str, int], _Slots] = {}
        self._closing = False

    async def _open(self, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(lambda: _Connection(loop), host, port)
        except (OSError, TimeoutError) as exc:
            reason = str(exc) or f"no connection in {self.connect_timeout_s:g}s"
            raise ConnectFailed(f"connect to {host}:{port}: {reason}") from None
        return conn

    def _take(self, key: tuple[str, int]) -> _Connection | None:
        idle = self.idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_TIMEOUT_S:
                conn.reused = True
                return conn
            conn._close()
        return None

    async def _acquire(self, key: tuple[str, int]) -> None:
        slots = self.slots.get(key)
        if slots is None:
            slots = self.slots[key] = _Slots()
        if slots.used < self.max_per_endpoint and not slots.waiters:
            slots.used += 1
            return
        turn = asyncio.get_running_loop().create_future()
        slots.waiters.append(turn)
        try:
            async with asyncio.timeout(self.request_timeout_s):
                await turn
        except BaseException as exc:
            if turn.done() and not turn.cancelled():
                self._release(key)  # the slot was handed to us as we gave up: pass it on
            else:
                turn.cancel()
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout(f"no free connection to {key[0]}:{key[1]} in time") from None
            raise

    def _release(self, key: tuple[str, int]) -> None:
        slots = self.slots[key]
        while slots.waiters:
            turn = slots.waiters.popleft()
            if not turn.done():
                turn.set_result(None)  # hand our slot over: `used` stays as it is
                return
        slots.used -= 1
        if slots.used == 0:
            del self.slots[key]

    async def request(
        self, host: str, port: int, head: bytes, body: bytes, *, head_only: bool = False
    ) -> Answer:
        """Send `head` (request line and headers, ending in a blank line) and `body`."""
        key = (host, port)
        await self._acquire(key)
        try:
            return await self._exchange(key, head, body, head_only=head_only)
        finally:
            self._release(key)

    async def _exchange(
        self, key: tuple[str, int], head: bytes, body: bytes, *, head_only: bool
    ) -> Answer:
        host, port = key
        conn = self._take(key)
        fresh = conn is None
        if conn is None:
            conn = await self._open(host, port)
        timeout = self.request_timeout_s
        try:
            try:
                answer = await conn.send((head, body), head_only=head_only, timeout_s=timeout)
            except ConnectFailed:
                if fresh:
                    raise
                # The keep-alive race: the pod closed this idle connection as we wrote.
                conn = await self._open(host, port)
                answer = await conn.send((head, body), head_only=head_only, timeout_s=timeout)
        except UpstreamTimeout:
            conn._close()
            raise UpstreamTimeout(f"no answer from {host}:{port} in {timeout:g}s") from None
        except BaseException:
            conn._close()
            raise
        if not conn.closed and not self._closing:
            conn.idle_since = time.monotonic()
            self.idle.setdefault(key, collections.deque()).append(conn)
        return answer

    def sweep(self) -> None:
        """Close connections idle too long (pods that went away, quiet periods)."""
        now = time.monotonic()
        for key, idle in list(self.idle.items()):
            keep = collections.deque(
                c for c in idle if not c.closed and now - c.idle_since < IDLE_TIMEOUT_S
            )
            for c in idle:
                if c not in keep:
                    c._close()
            if keep:
                self.idle[key] = keep
            else:
                del self.idle[key]

    def close(self) -> None:
        self._closing = True
        for idle in self.idle.values():
            for conn in idle:
                conn._close()
        self.idle.clear()
