"""The gRPC frontend: GRPCInferenceService's calls over HTTP/2, read and written here.

Owns the connection: HTTP/2 framing (RFC 9113: settings, pings, flow control both ways,
resets, GOAWAY), header blocks (HPACK, decoded by `hpack`; our own headers are constant or
literal, so nothing is encoded through a table), and gRPC's length-prefixed messages, deadlines
(`grpc-timeout`) and statuses. What each call answers is `grpc_server`'s, so this frontend and
grpcio's (`grpc_aio`) answer alike.

Why: under perf_analyzer grpc.aio spent 0.6-0.7 ms of server CPU per unary call, against
0.2-0.3 ms for the same request over HTTP (bench/runtime PROFILE.md): gRPC throughput was
0.4-0.7x Triton's. A unary call here is a few frames parsed with int.from_bytes, one header
block decoded (mostly table references after the first call), and three frames written in one
send. It also keeps grpcio out of the process: its import was ~0.1 s of every start.

Not served: TLS (the pod speaks plaintext, as it did on grpcio), server push (never used by
gRPC), HTTP/1.1 upgrade (gRPC clients start with the HTTP/2 preface).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl as ssl_
import zlib
from collections.abc import Iterable
from typing import Any

import hpack

from kubeinfer_onnx import errors, grpc_server

log = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types and flags (RFC 9113 section 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20

# Settings (section 6.5.2) and error codes (section 7).
HEADER_TABLE_SIZE, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE = 0x1, 0x3, 0x4
MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 0x5, 0x6
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR = 0x0, 0x1, 0x2
FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR = 0x3, 0x6
REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x7, 0x8, 0x9, 0xB

# gRPC status codes by name (errors.InferenceError.grpc_code holds the name).
_STATUS_NAMES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
STATUS = {name: code for code, name in enumerate(_STATUS_NAMES)}

# What we accept. Streams: a client past the limit queues its calls (grpcio does) or gets
# REFUSED_STREAM. Windows: a unary request up to 1 MiB arrives without a WINDOW_UPDATE.
MAX_STREAMS = 1024
STREAM_WINDOW = 1 << 20
CONNECTION_WINDOW = 1 << 24
MAX_FRAME = 1 << 20
# Requests waiting on one stream before its window stops being given back: a client that
# streams faster than the model answers is slowed by flow control, not buffered without end.
STREAM_QUEUE = 16
MAX_HEADER_BLOCK = 64 * 1024
# A connection that has not sent the client preface by then is closed (grpc core's default).
HANDSHAKE_TIMEOUT_S = 120.0
DEFAULT_WINDOW = 65_535  # the peer's windows until it says otherwise
DEFAULT_FRAME = 16_384

_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
# grpc-encoding's names and zlib's wbits for each: gzip has a gzip header, deflate is zlib's format.
_WBITS: dict[bytes, int | None] = {b"identity": None, b"gzip": 31, b"deflate": 15}


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes((kind, flags))
        + stream_id.to_bytes(4, "big")
        + payload
    )


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """A header as an HPACK literal without indexing: no table on either side changes."""
    return b"\x00" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value


def percent_encode(message: str) -> bytes:
    """grpc-message's encoding: printable ASCII as is, everything else (and '%') as %XX."""
    return b"".join(
        bytes((b,)) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in message.encode()
    )


# `:status: 200` is static table entry 8; content-type is entry 31, its value a literal.
RESPONSE_HEADERS = b"\x88" + _hpack_int(31, 4) + _hpack_int(16, 7) + b"application/grpc"
TRAILERS_OK = literal(b"grpc-status", b"0")


def trailers(code: int, message: str = "", metadata: Iterable[tuple[str, str]] = ()) -> bytes:
    block = literal(b"grpc-status", str(code).encode())
    if message:
        block += literal(b"grpc-message", percent_encode(message))
    for name, value in metadata:
        block += literal(name.encode(), value.encode())
    return block


def parse_timeout(value: bytes) -> float | None:
    """grpc-timeout (`<up to 8 digits><H|M|S|m|u|n>`) in seconds; None when malformed."""
    unit = _TIMEOUT_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit


class CallError(Exception):
    """Ends one call with a gRPC status (not the connection)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = STATUS[code]


class ProtocolFault(Exception):
    """Ends the connection: GOAWAY with an HTTP/2 error code, then close."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclasses.dataclass(eq=False, slots=True)
class _Stream:
    id: int
    method: grpc_server.Method | None
    wbits: int | None = None  # the request's grpc-encoding, for zlib; None: identity
    send_window: int = DEFAULT_WINDOW
    body: bytearray = dataclasses.field(default_factory=bytearray)
    messages: list[bytes] = dataclasses.field(default_factory=list)
    queue: asyncio.Queue[Any] | None = None  # a streaming call's requests; None ends it
    unacked: int = 0  # bytes received since our last WINDOW_UPDATE for this stream
    remote_closed: bool = False  # the client sent END_STREAM
    headers_sent: bool = False
    pending: bytearray = dataclasses.field(default_factory=bytearray)  # DATA over the window
    trailers: bytes | None = None  # written once `pending` is
    reading: bool = True  # request messages are still read (not ended, refused or answered)
    finished: bool = False  # the status is decided
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None


class Server:
    """The listening socket and its connections: `stop` is grpcio's stop(grace)."""

    def __init__(self, service: grpc_server.Service, *, max_request_bytes: int) -> None:
        self._methods = service.methods()
        self._max = max_request_bytes
        self._server: asyncio.Server | None = None
        self.connections: set[Connection] = set()

    async def listen(
        self,
        address: str,
        port: int,
        *,
        reuse_port: bool = False,
        ssl: ssl_.SSLContext | None = None,
    ) -> int:
        """Bind and start serving; returns the bound port (for port 0). `reuse_port`: on a
        port that sibling server processes listen on too (SO_REUSEPORT). `ssl`: serve HTTP/2
        over TLS (tls.Rotation.context); the connections read the decrypted bytes as before."""
        self._server = await asyncio.get_running_loop().create_server(
            lambda: Connection(self._methods, self._max, self.connections),
            address,
            port,
            backlog=128,
            reuse_port=reuse_port,
            ssl=ssl,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S if ssl is not None else None,
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self, grace: float) -> None:
        """Accept no connection and no call; let the running calls finish within `grace`."""
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.go_away()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(c.busy for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            connection.close()


class Connection(asyncio.Protocol):
    """One HTTP/2 connection carrying any number of calls."""

    def __init__(
        self,
        methods: dict[str, grpc_server.Method],
        max_request_bytes: int,
        registry: set[Connection],
        handshake_timeout: float = HANDSHAKE_TIMEOUT_S,
    ) -> None:
        self._methods = methods
        self._handshake_timeout = handshake_timeout
        self._handshake: asyncio.TimerHandle | None = None
        self._max = max_request_bytes
        self._registry = registry
        self._transport: Any = None
        self._buffer = bytearray()
        self._preface = False
        self._decoder = hpack.Decoder(max_header_list_size=MAX_HEADER_BLOCK)
        self._streams: dict[int, _Stream] = {}
        self._last_stream = 0
        self._goaway = False
        # A header block awaiting its CONTINUATION frames: (stream, first flags, bytes so far).
        self._block: tuple[int, int, bytearray] | None = None
        self._send_window = DEFAULT_WINDOW
        self._peer_window = DEFAULT_WINDOW  # the peer's initial window for new streams
        self._peer_frame = DEFAULT_FRAME
        self._unacked = 0  # connection-level bytes received since our last WINDOW_UPDATE
        self._loop = asyncio.get_running_loop()  # protocols are made inside the loop
        self._out: list[bytes] = []  # frames to send at the end of this loop iteration
        self._send_soon = False  # a _send is scheduled for the end of this loop iteration
        self._held = False  # frames wait for _answer to finish (one call's whole answer)

    @property
    def busy(self) -> bool:
        return bool(self._streams)

    # -- the connection --------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        self._registry.add(self)
        self._handshake = self._loop.call_later(self._handshake_timeout, self.close)
        settings = b"".join(
            key.to_bytes(2, "big") + value.to_bytes(4, "big")
            for key, value in (
                (MAX_CONCURRENT_STREAMS, MAX_STREAMS),
                (INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                (MAX_FRAME_SIZE, MAX_FRAME),
                (MAX_HEADER_LIST_SIZE, MAX_HEADER_BLOCK),
            )
        )
        increment = CONNECTION_WINDOW - DEFAULT_WINDOW
        transport.write(
            frame(SETTINGS, 0, 0, settings)
            + frame(WINDOW_UPDATE, 0, 0, increment.to_bytes(4, "big"))
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._registry.discard(self)
        if self._handshake is not None:
            self._handshake.cancel()
        for stream in self._streams.values():
            self._cancel(stream)
        self._streams.clear()

    def go_away(self) -> None:
        """No new calls on this connection; the ones it has run to the end."""
        if not self._goaway and self._transport is not None:
            self._goaway = True
            payload = self._last_stream.to_bytes(4, "big") + NO_ERROR.to_bytes(4, "big")
            self._write(frame(GOAWAY, 0, 0, payload))

    def close(self) -> None:
        if self._transport is not None:
            self._send()
            self._transport.close()

    def _fail(self, code: int, message: str) -> None:
        log.info("closing a gRPC connection: %s", message)
        payload = self._last_stream.to_bytes(4, "big") + code.to_bytes(4, "big")
        self._write(frame(GOAWAY, 0, 0, payload + message.encode()[:256]))
        self._goaway = True
        self.close()

    def _write(self, data: bytes) -> None:
        """Queue frames; they leave together once the loop has run what is ready now.

        Why: the calls of one batch finish in the same loop iteration, and on one connection
        their answers then go out in one send, as grpcio's and Triton's C core batch them,
        instead of one TCP segment each. It is the client that gains most: perf_analyzer
        spent ~10-15 % less CPU per request reading our answers (PROFILE.md), CPU that on
        shared cores the server gets back. With one call open there is nothing to share a send
        with, and the frames go at once (no loop iteration added to a lone call's latency).
        """
        self._out.append(data)
        self._release()

    def _release(self) -> None:
        """Send what is queued now (a lone call), or at the end of this loop iteration;
        nothing while an answer is being put together or a send is already scheduled."""
        if self._held or self._send_soon or not self._out:
            return
        if len(self._streams) <= 1:
            self._send()
        else:
            self._send_soon = True
            self._loop.call_soon(self._send)

    def _send(self) -> None:
        self._send_soon = False
        out, self._out = self._out, []
        if out and not self._transport.is_closing():
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    # -- reading frames --------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._preface:
            if len(buffer) < len(PREFACE):
                if not PREFACE.startswith(bytes(buffer)):
                    self._transport.close()
                return
            if buffer[: len(PREFACE)] != PREFACE:
                self._transport.close()  # not HTTP/2 (an HTTP/1.1 client on the gRPC port)
                return
            del buffer[: len(PREFACE)]
            self._preface = True
            if self._handshake is not None:
                self._handshake.cancel()
        position, size = 0, len(buffer)
        try:
            while size - position >= 9:
                length = int.from_bytes(buffer[position : position + 3], "big")
                if length > MAX_FRAME:
                    raise ProtocolFault(FRAME_SIZE_ERROR, f"a {length}-byte frame")
                end = position + 9 + length
                if end > size:
                    break
                kind, flags = buffer[position + 3], buffer[position + 4]
                stream_id = int.from_bytes(buffer[position + 5 : position + 9], "big") & 0x7FFFFFFF
                payload = bytes(buffer[position + 9 : end])
                position = end
                self._frame(kind, flags, stream_id, payload)
        except ProtocolFault as exc:
            self._fail(exc.code, str(exc))
            return
        except hpack.HPACKError as exc:
            self._fail(COMPRESSION_ERROR, f"header block: {exc}")
            return
        except Exception:  # a bug here must cost one connection, not the server
            log.exception("gRPC connection failed")
            self._fail(INTERNAL_ERROR, "internal error")
            return
        del buffer[:position]

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._block is not None and kind != CONTINUATION:
            raise ProtocolFault(PROTOCOL_ERROR, "a header block was interrupted")
        if kind == DATA:
            self._data(flags, stream_id, payload)
        elif kind == HEADERS:
            if flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            if flags & END_HEADERS:
                self._headers(stream_id, flags, payload)
            else:
                self._block = (stream_id, flags, bytearray(payload))
        elif kind == CONTINUATION:
            if self._block is None or self._block[0] != stream_id:
                raise ProtocolFault(PROTOCOL_ERROR, "CONTINUATION without HEADERS")
            block = self._block[2]
            block += payload
            if len(block) > MAX_HEADER_BLOCK:
                raise ProtocolFault(ENHANCE_YOUR_CALM, "header block too large")
            if flags & END_HEADERS:
                first_flags = self._block[1]
                self._block = None
                self._headers(stream_id, first_flags, bytes(block))
        elif kind == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
        elif kind == PING:
            if not flags & ACK:
                self._write(frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, int.from_bytes(payload[:4], "big") & 0x7FFFFFFF)
        elif kind == RST_STREAM:
            stream = self._streams.pop(stream_id, None)
            if stream is not None:
                self._cancel(stream)
        elif kind == GOAWAY:
            self._goaway = True  # the client opens no more streams; running ones finish
        elif kind == PUSH_PROMISE:
            raise ProtocolFault(PROTOCOL_ERROR, "a client cannot push")
        # PRIORITY and unknown frame types are ignored, as the RFC says.

    def _settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise ProtocolFault(FRAME_SIZE_ERROR, "SETTINGS length")
        for offset in range(0, len(payload), 6):
            key = int.from_bytes(payload[offset : offset + 2], "big")
            value = int.from_bytes(payload[offset + 2 : offset + 6], "big")
            if key == INITIAL_WINDOW_SIZE:
                if value > 0x7FFFFFFF:
                    raise ProtocolFault(FLOW_CONTROL_ERROR, "initial window too large")
                delta, self._peer_window = value - self._peer_window, value
                for stream in self._streams.values():
                    stream.send_window += delta
            elif key == MAX_FRAME_SIZE:
                if not DEFAULT_FRAME <= value < 1 << 24:
                    raise ProtocolFault(PROTOCOL_ERROR, f"MAX_FRAME_SIZE {value}")
                self._peer_frame = value
            # Our header blocks never use the table (HEADER_TABLE_SIZE is moot) and are small.
        self._write(frame(SETTINGS, ACK, 0))
        self._flush_all()

    def _window_update(self, stream_id: int, increment: int) -> None:
        if stream_id == 0:
            self._send_window += increment
            self._flush_all()
            return
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.send_window += increment
            self._flush(stream)

    def _headers(self, stream_id: int, flags: int, block: bytes) -> None:
        headers = self._decoder.decode(block, raw=True)  # decoded always: the table must follow
        stream = self._streams.get(stream_id)
        if stream is not None:  # trailers from the client
            if flags & END_STREAM:
                self._end_of_input(stream)
            return
        if stream_id % 2 == 0 or stream_id <= self._last_stream:
            if stream_id <= self._last_stream:
                return  # a closed stream's late trailers
            raise ProtocolFault(PROTOCOL_ERROR, f"stream {stream_id} from a client")
        if self._goaway:
            return  # after our GOAWAY: ignored, and the client retries it elsewhere
        self._last_stream = stream_id
        if len(self._streams) >= MAX_STREAMS:
            self._write(frame(RST_STREAM, 0, stream_id, REFUSED_STREAM.to_bytes(4, "big")))
            return
        path = encoding = timeout = b""
        for name, value in headers:
            if name == b":path":
                path = value
            elif name == b"grpc-encoding":
                encoding = value
            elif name == b"grpc-timeout":
                timeout = value
        method = self._methods.get(path.decode("latin-1"))
        stream = _Stream(stream_id, method, send_window=self._peer_window)
        self._streams[stream_id] = stream
        if method is None:
            self._finish(
                stream, STATUS["UNIMPLEMENTED"], f"unknown method {path.decode('latin-1')}"
            )
        elif encoding and encoding not in _WBITS:
            self._finish(
                stream,
                STATUS["UNIMPLEMENTED"],
                f"grpc-encoding {encoding.decode('latin-1')} is not supported",
                (("grpc-accept-encoding", "identity,deflate,gzip"),),
            )
        else:
            stream.wbits = _WBITS.get(encoding)
            if method.streaming:
                stream.queue = asyncio.Queue()
                stream.task = asyncio.ensure_future(self._run_stream(stream, method))
            if timeout:
                seconds = parse_timeout(timeout)
                if seconds is not None:
                    stream.timer = self._loop.call_later(seconds, self._deadline, stream)
        if flags & END_STREAM:
            self._end_of_input(stream)

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        length = len(payload)
        if flags & PADDED and payload:
            payload = payload[1 : len(payload) - payload[0]]
        # Flow control counts the whole frame, padding included; the window is given back as
        # it arrives, since every byte is either buffered (bounded by the message limit) or
        # dropped.
        self._unacked += length
        if self._unacked >= CONNECTION_WINDOW // 2:
            self._write(frame(WINDOW_UPDATE, 0, 0, self._unacked.to_bytes(4, "big")))
            self._unacked = 0
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # a stream already answered (or reset): its data is dropped
        if stream.reading:
            stream.body += payload
            try:
                self._take_messages(stream)
            except CallError as exc:
                stream.reading = False
                stream.body.clear()
                if stream.queue is not None:
                    stream.queue.put_nowait(exc)  # after the messages before it are answered
                else:
                    self._abort(stream, exc.code, str(exc))
        if flags & END_STREAM:
            self._end_of_input(stream)
        elif stream.reading:
            stream.unacked += length
            self._give_back(stream)

    def _give_back(self, stream: _Stream) -> None:
        """Return the stream's window once half of it is used, unless its queue is full."""
        if (
            stream.reading
            and stream.unacked >= STREAM_WINDOW // 2
            and (stream.queue is None or stream.queue.qsize() < STREAM_QUEUE)
        ):
            self._write(frame(WINDOW_UPDATE, 0, stream.id, stream.unacked.to_bytes(4, "big")))
            stream.unacked = 0

    def _take_messages(self, stream: _Stream) -> None:
        """Cut the complete length-prefixed messages off the stream's body."""
        body = stream.body
        while len(body) >= 5:
            size = int.from_bytes(body[1:5], "big")
            if size > self._max:
                raise CallError(
                    "RESOURCE_EXHAUSTED",
                    f"received message larger than max ({size} vs. {self._max})",
                )
            if len(body) < 5 + size:
                return
            compressed, message = body[0], bytes(body[5 : 5 + size])
            del body[: 5 + size]
            if compressed:
                message = self._inflate(stream, message)
            if stream.queue is not None:
                stream.queue.put_nowait(self._parse(stream, message))
            else:
                stream.messages.append(message)

    def _inflate(self, stream: _Stream, message: bytes) -> bytes:
        """A compressed message, decompressed no further than the message limit: a small
        message that inflates to gigabytes is refused, not inflated."""
        if stream.wbits is None:
            raise CallError("INTERNAL", "a compressed message without grpc-encoding")
        inflater = zlib.decompressobj(stream.wbits)
        try:
            out = inflater.decompress(message, self._max + 1)
        except zlib.error as exc:
            raise CallError("INTERNAL", f"cannot decompress the message: {exc}") from exc
        if len(out) > self._max:
            raise CallError(
                "RESOURCE_EXHAUSTED",
                f"received message larger than max (over {self._max} bytes once decompressed)",
            )
        return out

    def _parse(self, stream: _Stream, message: bytes) -> Any:
        assert stream.method is not None
        try:
            return stream.method.request_type.FromString(message)
        except Exception as exc:  # protobuf's DecodeError, and whatever upb raises
            raise CallError("INVALID_ARGUMENT", f"cannot parse the request message: {exc}") from exc

    def _end_of_input(self, stream: _Stream) -> None:
        stream.remote_closed = True
        if not stream.reading:
            self._forget_if_done(stream)
            return
        stream.reading = False
        if stream.body:
            self._abort(stream, STATUS["INTERNAL"], "the request ended inside a message")
            return
        if stream.queue is not None:
            stream.queue.put_nowait(None)
            return
        assert stream.method is not None
        if len(stream.messages) != 1:
            self._finish(
                stream,
                STATUS["UNIMPLEMENTED"],
                f"a unary call takes one request message, got {len(stream.messages)}",
            )
            return
        try:
            request = self._parse(stream, stream.messages.pop())
        except CallError as exc:
            self._finish(stream, exc.code, str(exc))
            return
        stream.task = asyncio.ensure_future(self._run_unary(stream, stream.method, request))

    # -- running calls ---------------------------------------------------------------------

    async def _run_unary(self, stream: _Stream, method: grpc_server.Method, request: Any) -> None:
        try:
            response = await method.handler(request)
        except errors.InferenceError as exc:
            self._finish(
                stream, STATUS[exc.grpc_code], str(exc), grpc_server.trailing_metadata(exc)
            )
        except Exception as exc:
            log.exception("gRPC %s failed", method.name)
            self._finish(stream, STATUS["INTERNAL"], f"{type(exc).__name__}: {exc}")
        else:
            self._answer(stream, response.SerializeToString())

    def _answer(self, stream: _Stream, message: bytes) -> None:
        """A unary call's headers, message and trailers in one send, not two.

        Written apart, the trailers trail the message in a second TCP segment, and a client
        that has already read the message wakes up once more to read them.
        """
        self._held = True
        try:
            self._send_message(stream, message)
            self._finish(stream, 0)
        finally:
            self._held = False
        self._release()

    async def _run_stream(self, stream: _Stream, method: grpc_server.Method) -> None:
        assert stream.queue is not None
        try:
            while (request := await stream.queue.get()) is not None:
                if isinstance(request, CallError):
                    raise request
                self._give_back(stream)
                response = await method.handler(request)
                self._send_message(stream, response.SerializeToString())
        except CallError as exc:
            self._finish(stream, exc.code, str(exc))
        except Exception as exc:
            log.exception("gRPC %s failed", method.name)
            self._finish(stream, STATUS["INTERNAL"], f"{type(exc).__name__}: {exc}")
        else:
            self._finish(stream, 0)

    def _deadline(self, stream: _Stream) -> None:
        stream.timer = None
        if not stream.finished:
            self._abort(stream, STATUS["DEADLINE_EXCEEDED"], "Deadline Exceeded")

    def _abort(self, stream: _Stream, code: int, message: str) -> None:
        """End a call from outside its task (a bad message, its deadline): stop the task."""
        self._cancel(stream)
        self._finish(stream, code, message)

    def _cancel(self, stream: _Stream) -> None:
        stream.finished = True
        stream.reading = False
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None

    # -- writing answers -------------------------------------------------------------------

    def _send_message(self, stream: _Stream, message: bytes) -> None:
        if stream.finished or self._streams.get(stream.id) is not stream:
            return  # reset by the client, or past its deadline
        out = b""
        if not stream.headers_sent:
            stream.headers_sent = True
            out = frame(HEADERS, END_HEADERS, stream.id, RESPONSE_HEADERS)
        data = b"\x00" + len(message).to_bytes(4, "big") + message
        size = len(data)
        if (
            not stream.pending
            and size <= stream.send_window
            and size <= self._send_window
            and size <= self._peer_frame
        ):
            # The common case: the whole message in one frame, written with the headers.
            stream.send_window -= size
            self._send_window -= size
            self._write(out + frame(DATA, 0, stream.id, data))
            return
        if out:
            self._write(out)
        stream.pending += data
        self._flush(stream)

    def _finish(
        self,
        stream: _Stream,
        code: int,
        message: str = "",
        metadata: Iterable[tuple[str, str]] = (),
    ) -> None:
        """End the call with a status, after any data still waiting for window."""
        if stream.trailers is not None or self._streams.get(stream.id) is not stream:
            return
        stream.finished = True
        stream.reading = False
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        block = TRAILERS_OK if code == 0 and not message else trailers(code, message, metadata)
        if not stream.headers_sent:
            # Trailers-Only: one HEADERS frame with the status.
            stream.headers_sent = True
            stream.trailers = b""
            self._write(
                frame(HEADERS, END_HEADERS | END_STREAM, stream.id, RESPONSE_HEADERS + block)
            )
            self._done_sending(stream)
            return
        stream.trailers = frame(HEADERS, END_HEADERS | END_STREAM, stream.id, block)
        self._flush(stream)

    def _flush(self, stream: _Stream) -> None:
        """Send what the windows allow of the stream's pending data, then its trailers."""
        pending = stream.pending
        out = []
        while pending and stream.send_window > 0 and self._send_window > 0:
            size = min(len(pending), stream.send_window, self._send_window, self._peer_frame)
            out.append(frame(DATA, 0, stream.id, bytes(pending[:size])))
            del pending[:size]
            stream.send_window -= size
            self._send_window -= size
        if not pending and stream.trailers:
            out.append(stream.trailers)
            stream.trailers = b""
        if out:
            self._write(b"".join(out))
        if not pending and stream.trailers == b"":
            self._done_sending(stream)

    def _flush_all(self) -> None:
        for stream in list(self._streams.values()):
            if stream.pending or stream.trailers:
                self._flush(stream)

    def _done_sending(self, stream: _Stream) -> None:
        if not stream.remote_closed:
            # The answer is complete but the client is still sending: tell it to stop.
            self._write(frame(RST_STREAM, 0, stream.id, NO_ERROR.to_bytes(4, "big")))
            stream.remote_closed = True
        self._forget_if_done(stream)

    def _forget_if_done(self, stream: _Stream) -> None:
        if stream.remote_closed and stream.trailers == b"":
            self._streams.pop(stream.id, None)
