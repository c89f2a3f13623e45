"""upstream: keep-alive, framing, and the first-byte boundary that decides retries."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from router_upstreams import RawHandler, RawServer, closed_port, wait_until

from kubeinfer_router import upstream

HEAD = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
Start = Callable[[RawHandler], Awaitable[RawServer]]


def pool(timeout: float = 5.0) -> upstream.Pool:
    return upstream.Pool(connect_timeout_s=1.0, request_timeout_s=timeout)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def answering(*answers: bytes, then_close: bool = False) -> RawHandler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            await read_request(reader)
            writer.write(answer)
            await writer.drain()
        if not then_close:
            await reader.read()  # keep the connection until the client closes it

    return handler


async def test_keep_alive_reuses_one_connection(raw_server: Start) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nhi"
    server = await raw_server(answering(ok, ok, ok))
    p = pool()
    for _ in range(3):
        answer = await p.request("127.0.0.1", server.port, HEAD, b"hello")
        assert (answer.status, answer.reason, answer.body) == (200, "OK", b"hi")
        assert ("X-A", "b") in answer.headers
    assert server.connections == 1
    p.close()


@pytest.mark.parametrize(
    ("raw", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n", b"abcde"),
        (b"HTTP/1.1 200 OK\r\n\r\nuntil-close", b"until-close"),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc", b"abc"),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nz", b"z"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
    ],
)  # fmt: skip
async def test_framings(raw_server: Start, raw: bytes, body: bytes) -> None:
    server = await raw_server(answering(raw, then_close=True))
    p = pool()
    answer = await p.request("127.0.0.1", server.port, HEAD, b"hello")
    assert answer.body == body
    p.close()


async def test_refused_is_connect_failed() -> None:
    with pytest.raises(upstream.ConnectFailed):
        await pool().request("127.0.0.1", closed_port(), HEAD, b"hello")


async def test_closed_before_any_byte_is_connect_failed(raw_server: Start) -> None:
    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    server = await raw_server(close_at_once)
    with pytest.raises(upstream.ConnectFailed):
        await pool().request("127.0.0.1", server.port, HEAD, b"hello")


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",  # cut short
        b"HTTP/1.1 200 OK\r\nContent-",  # head cut short
        b"SSH-2.0-OpenSSH\r\n\r\n",  # not HTTP
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    ],
)
async def test_an_answer_that_began_and_failed_is_broken(raw_server: Start, raw: bytes) -> None:
    server = await raw_server(answering(raw, then_close=True))
    with pytest.raises(upstream.AnswerBroken):
        await pool().request("127.0.0.1", server.port, HEAD, b"hello")


async def test_a_stale_keep_alive_connection_is_replaced_once(raw_server: Start) -> None:
    # The pod answers once with keep-alive, then closes the idle connection: the next request
    # meets the closed connection and must go out again on a fresh one.
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    server = await raw_server(answering(ok, then_close=True))
    p = pool()
    assert (await p.request("127.0.0.1", server.port, HEAD, b"hello")).body == b"ok"
    conn = p.idle[("127.0.0.1", server.port)][0]
    conn.closed = False  # pretend we have not noticed the close yet: the race itself
    assert (await p.request("127.0.0.1", server.port, HEAD, b"hello")).body == b"ok"
    assert server.connections == 2
    p.close()


async def test_timeout(raw_server: Start) -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = await raw_server(never)
    with pytest.raises(upstream.UpstreamTimeout):
        await pool(timeout=0.2).request("127.0.0.1", server.port, HEAD, b"hello")


async def test_sweep_closes_idle_connections(raw_server: Start) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    server = await raw_server(answering(ok))
    p = pool()
    await p.request("127.0.0.1", server.port, HEAD, b"hello")
    conn = p.idle[("127.0.0.1", server.port)][0]
    conn.idle_since -= upstream.IDLE_TIMEOUT_S + 1
    p.sweep()
    assert p.idle == {} and conn.closed


async def test_connections_per_pod_are_capped_and_waiters_go_in_order(raw_server: Start) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    gate = asyncio.Event()
    open_now = [0]
    peak = [0]

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        open_now[0] += 1
        peak[0] = max(peak[0], open_now[0])
        try:
            while True:
                await read_request(reader)
                await gate.wait()
                writer.write(ok)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            open_now[0] -= 1

    server = await raw_server(slow)
    p = upstream.Pool(connect_timeout_s=1.0, request_timeout_s=5.0, max_per_endpoint=2)
    tasks = [
        asyncio.create_task(p.request("127.0.0.1", server.port, HEAD, b"hello")) for _ in range(6)
    ]
    await wait_until(lambda: open_now[0] == 2, what="two connections")
    assert len(p.slots[("127.0.0.1", server.port)].waiters) == 4
    gate.set()
    answers = await asyncio.gather(*tasks)
    assert [a.body for a in answers] == [b"ok"] * 6
    assert peak[0] == 2 and server.connections == 2
    assert p.slots == {}
    p.close()


async def test_a_waiter_that_gives_up_frees_its_place(raw_server: Start) -> None:
    gate = asyncio.Event()

    async def held(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            await gate.wait()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    server = await raw_server(held)
    p = upstream.Pool(connect_timeout_s=1.0, request_timeout_s=5.0, max_per_endpoint=1)
    key = ("127.0.0.1", server.port)
    first = asyncio.create_task(p.request(*key, HEAD, b"hello"))
    await wait_until(lambda: server.connections == 1)
    gone = asyncio.create_task(p.request(*key, HEAD, b"hello"))  # its client goes away
    third = asyncio.create_task(p.request(*key, HEAD, b"hello"))
    await wait_until(lambda: len(p.slots[key].waiters) == 2)
    gone.cancel()
    gate.set()
    assert (await first).status == 200 and (await third).status == 200
    assert gone.cancelled() and p.slots == {} and server.connections == 1
    p.close()
