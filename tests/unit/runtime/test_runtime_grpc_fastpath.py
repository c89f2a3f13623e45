"""The gRPC frontend's HTTP/2 side, driven frame by frame through a fake transport: calls and
their statuses, flow control both ways, resets, deadlines, streams, GOAWAY.

The real clients (tritonclient, grpcio, perf_analyzer) against the real server are the
integration tests' (tests/integration/runtime/test_runtime_grpc.py and friends)."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import tracemalloc
from typing import Any

import hpack
import pytest

from kubeinfer_onnx import errors, grpc_fastpath, grpc_server
from kubeinfer_onnx.grpc_fastpath import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PING,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    STATUS,
    WINDOW_UPDATE,
    frame,
)


class Transport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.writes = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data
        self.writes += 1

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


@dataclasses.dataclass
class Frame:
    kind: int
    flags: int
    stream: int
    payload: bytes


class Message:
    """A stand-in protobuf message: the bytes are the message."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    @classmethod
    def FromString(cls, data: bytes) -> Message:
        if data.startswith(b"bad"):
            raise ValueError("not a message")
        return cls(data)

    def SerializeToString(self) -> bytes:
        return self.data


class Peer:
    """The client end: writes frames into the connection, reads what it answers."""

    def __init__(self, methods: dict[str, grpc_server.Method], max_bytes: int = 1000) -> None:
        self.transport = Transport()
        self.registry: set[grpc_fastpath.Connection] = set()
        self.connection = grpc_fastpath.Connection(methods, max_bytes, self.registry)
        self.connection.connection_made(self.transport)
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.read = 0
        self.send(PREFACE + frame(SETTINGS, 0, 0))

    def send(self, data: bytes) -> None:
        self.connection.data_received(data)

    def call(
        self,
        stream: int,
        path: str,
        *messages: bytes,
        end: bool = True,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "x"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *extra,
        ]
        self.send(frame(HEADERS, END_HEADERS, stream, self.encoder.encode(headers)))
        for index, message in enumerate(messages):
            last = end and index == len(messages) - 1
            self.send(frame(DATA, END_STREAM if last else 0, stream, wire(message)))

    async def frames(self) -> list[Frame]:
        """The frames written since the last call, once the loop has run what was ready."""
        await settle()
        data = bytes(self.transport.written[self.read :])
        self.read = len(self.transport.written)
        out = []
        while data:
            length = int.from_bytes(data[:3], "big")
            out.append(
                Frame(data[3], data[4], int.from_bytes(data[5:9], "big"), data[9 : 9 + length])
            )
            data = data[9 + length :]
        return out

    async def answer(self, stream: int) -> tuple[list[bytes], dict[str, str]]:
        """The messages and the trailers of one stream, from what was written so far."""
        messages, trailers, body = [], {}, b""
        for f in await self.frames():
            if f.stream != stream:
                continue
            if f.kind == HEADERS:
                for name, value in self.decoder.decode(f.payload):
                    trailers[name] = value
            elif f.kind == DATA:
                body += f.payload
        while body:
            size = int.from_bytes(body[1:5], "big")
            messages.append(body[5 : 5 + size])
            body = body[5 + size :]
        return messages, trailers


def wire(message: bytes, compressed: bool = False) -> bytes:
    return bytes((int(compressed),)) + len(message).to_bytes(4, "big") + message


def echo_methods(**handlers: Any) -> dict[str, grpc_server.Method]:
    async def echo(request: Message) -> Message:
        return Message(b"re:" + request.data)

    table = {"Echo": grpc_server.Method("Echo", Message, echo)}
    table["Stream"] = grpc_server.Method("Stream", Message, echo, streaming=True)
    for name, handler in handlers.items():
        table[name] = grpc_server.Method(name, Message, handler)
    return {f"/svc/{name}": method for name, method in table.items()}


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_unary_call_is_answered_with_headers_message_and_ok() -> None:
    peer = Peer(echo_methods())
    peer.call(1, "/svc/Echo", b"hello")
    await settle()
    messages, trailers = await peer.answer(1)
    assert messages == [b"re:hello"]
    assert trailers[":status"] == "200"
    assert trailers["content-type"] == "application/grpc"
    assert trailers["grpc-status"] == "0"
    assert not peer.connection.busy  # the stream is forgotten once both sides ended


async def test_answers_finished_together_go_out_in_one_send() -> None:
    release = asyncio.Event()

    async def batched(request: Message) -> Message:
        await release.wait()  # as the calls of one batch wait on it
        return request

    peer = Peer(echo_methods(Batched=batched))
    for stream in (1, 3, 5):
        peer.call(stream, "/svc/Batched", b"%d" % stream)
    await peer.frames()
    before = peer.transport.writes
    release.set()
    frames = await peer.frames()
    assert [(f.stream, f.payload[5:]) for f in frames if f.kind == DATA] == [
        (1, b"1"),
        (3, b"3"),
        (5, b"5"),
    ]
    assert peer.transport.writes == before + 1


async def test_a_lone_calls_answer_and_trailers_go_out_in_one_send() -> None:
    release = asyncio.Event()

    async def slow(request: Message) -> Message:
        await release.wait()
        return Message(b"x" * 4096)  # a heavy model's answer, as perf_analyzer reads it

    peer = Peer(echo_methods(Slow=slow))
    peer.call(1, "/svc/Slow", b"")
    await peer.frames()
    before = peer.transport.writes
    release.set()
    messages, trailers = await peer.answer(1)
    assert messages == [b"x" * 4096]
    assert trailers["grpc-status"] == "0"
    assert peer.transport.writes == before + 1


async def test_frames_split_anywhere_read_the_same() -> None:
    peer = Peer(echo_methods())
    request = frame(
        HEADERS,
        END_HEADERS,
        1,
        peer.encoder.encode([(":method", "POST"), (":path", "/svc/Echo")]),
    ) + frame(DATA, END_STREAM, 1, wire(b"split"))
    for byte in range(len(request)):
        peer.send(request[byte : byte + 1])
    await settle()
    assert (await peer.answer(1))[0] == [b"re:split"]


async def test_header_block_in_continuation_frames() -> None:
    peer = Peer(echo_methods())
    block = peer.encoder.encode([(":method", "POST"), (":path", "/svc/Echo")])
    peer.send(frame(HEADERS, 0, 1, block[:3]) + frame(CONTINUATION, END_HEADERS, 1, block[3:]))
    peer.send(frame(DATA, END_STREAM, 1, wire(b"c")))
    await settle()
    assert (await peer.answer(1))[0] == [b"re:c"]


async def test_unknown_method_is_unimplemented_trailers_only() -> None:
    peer = Peer(echo_methods())
    peer.call(1, "/svc/Nope", b"x")
    frames = [f for f in await peer.frames() if f.stream == 1]
    # Answered from the headers alone; the client, still sending, is told to stop (NO_ERROR).
    assert [(f.kind, f.flags) for f in frames] == [
        (HEADERS, END_HEADERS | END_STREAM),
        (RST_STREAM, 0),
    ]
    assert frames[1].payload == bytes(4)
    headers = dict(peer.decoder.decode(frames[0].payload))
    assert headers["grpc-status"] == str(STATUS["UNIMPLEMENTED"])
    assert "/svc/Nope" in headers["grpc-message"]


@pytest.mark.parametrize(
    ("error", "code", "retry_after"),
    [
        (errors.InvalidInputError("bad shape [1, x]\n"), "INVALID_ARGUMENT", None),
        (errors.ModelNotFoundError("no model m"), "NOT_FOUND", None),
        (errors.ServerBusyError("queue full"), "UNAVAILABLE", "1"),
    ],
)
async def test_inference_errors_end_the_call_with_their_status(
    error: errors.InferenceError, code: str, retry_after: str | None
) -> None:
    async def fail(request: Message) -> Message:
        raise error

    peer = Peer(echo_methods(Fail=fail))
    peer.call(1, "/svc/Fail", b"x")
    await settle()
    messages, trailers = await peer.answer(1)
    assert messages == []
    assert trailers["grpc-status"] == str(STATUS[code])
    # grpc-message is percent-encoded: the newline travels as %0A.
    assert trailers["grpc-message"] == grpc_fastpath.percent_encode(str(error)).decode()
    assert trailers.get("retry-after") == retry_after


async def test_an_unexpected_exception_is_internal_and_the_connection_lives() -> None:
    async def crash(request: Message) -> Message:
        raise RuntimeError("boom")

    peer = Peer(echo_methods(Crash=crash))
    peer.call(1, "/svc/Crash", b"x")
    await settle()
    assert (await peer.answer(1))[1]["grpc-status"] == str(STATUS["INTERNAL"])
    peer.call(3, "/svc/Echo", b"after")
    await settle()
    assert (await peer.answer(3))[0] == [b"re:after"]


async def test_an_unparsable_message_is_invalid_argument() -> None:
    peer = Peer(echo_methods())
    peer.call(1, "/svc/Echo", b"bad bytes")
    await settle()
    assert (await peer.answer(1))[1]["grpc-status"] == str(STATUS["INVALID_ARGUMENT"])


async def test_an_oversized_message_is_refused_from_its_prefix() -> None:
    peer = Peer(echo_methods(), max_bytes=100)
    peer.call(1, "/svc/Echo", end=False)
    # Only the 5-byte prefix of a 10 MB message: refused before any of it is buffered.
    peer.send(frame(DATA, 0, 1, b"\x00" + (10_000_000).to_bytes(4, "big")))
    frames = [f for f in await peer.frames() if f.stream == 1]
    headers = dict(peer.decoder.decode(frames[0].payload))
    assert headers["grpc-status"] == str(STATUS["RESOURCE_EXHAUSTED"])
    assert "10000000 vs. 100" in headers["grpc-message"]
    # The client is still sending: told to stop, and what it sends next is dropped.
    assert frames[-1].kind == RST_STREAM
    peer.send(frame(DATA, END_STREAM, 1, b"\x00" * 50))
    assert not peer.connection.busy


async def test_a_compressed_message_is_inflated_no_further_than_the_limit() -> None:
    peer = Peer(echo_methods(), max_bytes=100_000)
    bomb = gzip.compress(b"\x00" * 10_000_000)  # ~10 KB, within the limit, inflating to 10 MB
    peer.call(1, "/svc/Echo", end=False, extra=(("grpc-encoding", "gzip"),))
    tracemalloc.start()
    try:
        peer.send(frame(DATA, END_STREAM, 1, wire(bomb, compressed=True)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # the 10 MB were never allocated
    trailers = (await peer.answer(1))[1]
    assert trailers["grpc-status"] == str(STATUS["RESOURCE_EXHAUSTED"])
    peer.call(3, "/svc/Echo", end=False, extra=(("grpc-encoding", "deflate"),))
    peer.send(frame(DATA, END_STREAM, 3, wire(b"not deflate", compressed=True)))
    assert (await peer.answer(3))[1]["grpc-status"] == str(STATUS["INTERNAL"])


async def test_a_unary_call_with_two_messages_is_refused() -> None:
    peer = Peer(echo_methods())
    peer.call(1, "/svc/Echo", b"a", b"b")
    await settle()
    assert (await peer.answer(1))[1]["grpc-status"] == str(STATUS["UNIMPLEMENTED"])


async def test_gzip_messages_are_read_and_unknown_encodings_refused() -> None:
    peer = Peer(echo_methods())
    peer.call(1, "/svc/Echo", end=False, extra=(("grpc-encoding", "gzip"),))
    peer.send(frame(DATA, END_STREAM, 1, wire(gzip.compress(b"zipped"), compressed=True)))
    await settle()
    assert (await peer.answer(1))[0] == [b"re:zipped"]
    peer.call(3, "/svc/Echo", b"x", extra=(("grpc-encoding", "snappy"),))
    trailers = (await peer.answer(3))[1]
    assert trailers["grpc-status"] == str(STATUS["UNIMPLEMENTED"])
    assert "gzip" in trailers["grpc-accept-encoding"]


async def test_answers_wait_for_the_peers_window_then_trailers_follow() -> None:
    async def big(request: Message) -> Message:
        return Message(b"y" * 100)

    peer = Peer(echo_methods(Big=big))
    # The client allows 40 bytes per stream (the 5-byte prefix counts).
    peer.send(frame(SETTINGS, 0, 0, (4).to_bytes(2, "big") + (40).to_bytes(4, "big")))
    await peer.frames()
    peer.call(1, "/svc/Big", b"x")
    await settle()
    sent = [f for f in await peer.frames() if f.stream == 1]
    assert [f.kind for f in sent] == [HEADERS, DATA]
    assert len(sent[1].payload) == 40
    peer.send(frame(WINDOW_UPDATE, 0, 1, (30).to_bytes(4, "big")))
    sent = [f for f in await peer.frames() if f.stream == 1]
    assert [(f.kind, len(f.payload)) for f in sent] == [(DATA, 30)]
    peer.send(frame(WINDOW_UPDATE, 0, 1, (1000).to_bytes(4, "big")))
    sent = [f for f in await peer.frames() if f.stream == 1]
    assert [f.kind for f in sent] == [DATA, HEADERS]
    assert len(sent[0].payload) == 35
    assert sent[1].flags & END_STREAM
    assert not peer.connection.busy


async def test_large_requests_get_window_updates_as_they_arrive() -> None:
    peer = Peer(echo_methods(), max_bytes=4 << 20)
    peer.call(1, "/svc/Echo", end=False)
    chunk = b"\x00" + (2 << 20).to_bytes(4, "big") + b"z" * ((1 << 20) - 5)
    peer.send(frame(DATA, 0, 1, chunk))
    updates = [f for f in await peer.frames() if f.kind == WINDOW_UPDATE and f.stream == 1]
    assert sum(int.from_bytes(f.payload, "big") for f in updates) == len(chunk)


async def test_settings_and_pings_are_acknowledged() -> None:
    peer = Peer(echo_methods())
    await peer.frames()
    peer.send(frame(SETTINGS, 0, 0, (5).to_bytes(2, "big") + (32768).to_bytes(4, "big")))
    peer.send(frame(PING, 0, 0, b"12345678"))
    assert [(f.kind, f.flags, f.payload) for f in await peer.frames()] == [
        (SETTINGS, ACK, b""),
        (PING, ACK, b"12345678"),
    ]


class Slow:
    """A handler that never answers by itself; it records being started and cancelled."""

    def __init__(self) -> None:
        self.started, self.cancelled = asyncio.Event(), asyncio.Event()

    async def __call__(self, request: Message) -> Message:
        self.started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return request


async def test_a_reset_stream_cancels_its_handler() -> None:
    slow = Slow()
    peer = Peer(echo_methods(Slow=slow))
    peer.call(1, "/svc/Slow", b"x")
    await asyncio.wait_for(slow.started.wait(), 5)
    peer.send(frame(RST_STREAM, 0, 1, (8).to_bytes(4, "big")))
    await asyncio.wait_for(slow.cancelled.wait(), 5)
    assert not peer.connection.busy
    assert [f for f in await peer.frames() if f.stream == 1] == []


async def test_a_deadline_ends_the_call_and_cancels_the_handler() -> None:
    slow = Slow()
    peer = Peer(echo_methods(Slow=slow))
    peer.call(1, "/svc/Slow", b"x", extra=(("grpc-timeout", "20m"),))
    await asyncio.wait_for(slow.cancelled.wait(), 5)
    assert (await peer.answer(1))[1]["grpc-status"] == str(STATUS["DEADLINE_EXCEEDED"])


async def test_a_stream_is_answered_in_order_and_ends_when_the_client_does() -> None:
    peer = Peer(echo_methods())
    peer.call(1, "/svc/Stream", b"one", b"two", end=False)
    await settle()
    messages, trailers = await peer.answer(1)
    assert messages == [b"re:one", b"re:two"]
    assert "grpc-status" not in trailers  # still open
    peer.send(frame(DATA, END_STREAM, 1, wire(b"three")))
    await settle()
    messages, trailers = await peer.answer(1)
    assert messages == [b"re:three"]
    assert trailers["grpc-status"] == "0"
    assert not peer.connection.busy


async def test_a_stream_faster_than_its_answers_is_held_back_by_flow_control() -> None:
    gate, answered = asyncio.Event(), []

    async def gated(request: Message) -> Message:
        await gate.wait()
        answered.append(request)
        return Message(b"ok")  # small: the answers need no window from the client

    methods = echo_methods()
    methods["/svc/Gated"] = grpc_server.Method("Gated", Message, gated, streaming=True)
    peer = Peer(methods, max_bytes=1 << 20)
    big = b"m" * 100_000
    peer.call(1, "/svc/Gated", *[big] * 30, end=False)  # 3 MB, nothing answered yet

    def returned(frames: list[Frame]) -> int:
        return sum(
            int.from_bytes(f.payload, "big")
            for f in frames
            if f.kind == WINDOW_UPDATE and f.stream == 1
        )

    held = returned(await peer.frames())
    # With 16 requests queued the window stops coming back: what the client may still send
    # is bounded by the window, however fast it streams.
    assert held < 20 * (len(big) + 5)
    gate.set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while len(answered) < 30:  # a condition, not a sleep: the 30 drain the queue
        assert loop.time() < deadline, f"only {len(answered)} of 30 answered"
        await asyncio.sleep(0)
    frames = await peer.frames()
    assert returned(frames) > 0  # given back as the queue drained
    assert sum(f.kind == DATA and f.stream == 1 for f in frames) == 30
    peer.send(frame(DATA, END_STREAM, 1, b""))
    assert (await peer.answer(1))[1]["grpc-status"] == "0"


async def test_a_bad_message_ends_a_stream_and_stops_its_task() -> None:
    peer = Peer(echo_methods())
    peer.call(1, "/svc/Stream", b"one", b"bad", end=False)
    await settle()
    messages, trailers = await peer.answer(1)
    assert messages == [b"re:one"]
    assert trailers["grpc-status"] == str(STATUS["INVALID_ARGUMENT"])
    assert not peer.connection.busy


async def test_goaway_lets_running_calls_finish_and_ignores_new_ones() -> None:
    release = asyncio.Event()

    async def wait(request: Message) -> Message:
        await release.wait()
        return request

    peer = Peer(echo_methods(Wait=wait))
    peer.call(1, "/svc/Wait", b"running")
    await settle()
    peer.connection.go_away()
    goaway = [f for f in await peer.frames() if f.kind == GOAWAY]
    assert int.from_bytes(goaway[0].payload[:4], "big") == 1  # the last stream it will serve
    peer.call(3, "/svc/Echo", b"late")
    release.set()
    await settle()
    assert (await peer.answer(1))[0] == [b"running"]
    assert not peer.connection.busy
    assert [f for f in await peer.frames() if f.stream == 3] == []


async def test_an_http1_client_is_disconnected() -> None:
    transport = Transport()
    connection = grpc_fastpath.Connection(echo_methods(), 100, set())
    connection.connection_made(transport)
    connection.data_received(b"GET / HTTP/1.1\r\n\r\n")
    assert transport.closed


async def test_an_impossible_frame_size_setting_closes_the_connection() -> None:
    peer = Peer(echo_methods())
    peer.send(frame(SETTINGS, 0, 0, (5).to_bytes(2, "big") + (0).to_bytes(4, "big")))
    assert [f.kind for f in await peer.frames()][-1] == GOAWAY
    assert peer.transport.closed


async def test_a_connection_without_the_preface_is_closed_after_the_handshake_timeout() -> None:
    silent, talking = Transport(), Transport()
    for transport, data in ((silent, b""), (talking, PREFACE)):
        connection = grpc_fastpath.Connection(echo_methods(), 100, set(), handshake_timeout=0.05)
        connection.connection_made(transport)
        connection.data_received(data)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not silent.closed:  # the timeout firing, waited for
        assert loop.time() < deadline, "the silent connection was never closed"
        await asyncio.sleep(0.01)
    await settle()  # the talking one's timer, had it not been cancelled, was due as early
    assert not talking.closed


async def test_a_broken_header_block_closes_the_connection_with_goaway() -> None:
    peer = Peer(echo_methods())
    peer.send(frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff"))
    assert [f.kind for f in await peer.frames()][-1] == GOAWAY
    assert peer.transport.closed


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(b"20m", 0.02), (b"3S", 3.0), (b"1H", 3600.0), (b"999999u", 0.999999), (b"", None)],
)
def test_parse_timeout(value: bytes, seconds: float | None) -> None:
    assert grpc_fastpath.parse_timeout(value) == seconds
    assert grpc_fastpath.parse_timeout(b"123456789S") is None  # at most 8 digits
    assert grpc_fastpath.parse_timeout(b"5x") is None


def test_percent_encoding_keeps_printable_ascii() -> None:
    assert grpc_fastpath.percent_encode("shape [1, 2]: 50%\né") == b"shape [1, 2]: 50%25%0A%C3%A9"
