"""The proxy in-process against small upstreams: pass-through, retries, holding, draining, split."""

from __future__ import annotations

import asyncio
import collections
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from router_upstreams import (
    AppServer,
    RawHandler,
    RawServer,
    RouterHandle,
    closed_port,
    wait_until,
)

MakeRouter = Callable[..., Awaitable[RouterHandle]]
StartApp = Callable[..., Awaitable[AppServer]]
StartRaw = Callable[[RawHandler], Awaitable[RawServer]]
INFER = "/v2/models/m/infer"


async def post(router: RouterHandle, data: bytes = b"{}", **headers: str) -> tuple[int, bytes, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(router.url + INFER, data=data, headers=headers) as response,
    ):
        return response.status, await response.read(), response.headers


async def test_bodies_and_headers_pass_through_untouched(
    make_router: MakeRouter, app_server: StartApp
) -> None:
    pod = await app_server()
    router = await make_router()
    router.set_endpoints("stable", (pod.port, False))
    tensor = {"name": "x", "shape": [1024], "datatype": "FP32"}
    tensor["parameters"] = {"binary_data_size": 4096}
    header = json.dumps({"inputs": [tensor]}).encode()
    body = header + os.urandom(4096)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            router.url + INFER + "?trace=1",
            data=body,
            expect100=True,
            headers={
                "Inference-Header-Content-Length": str(len(header)),
                "Content-Type": "application/octet-stream",
                "X-Request-Id": "abc",
                "Connection": "keep-alive, X-Hop",
                "X-Hop": "dropped",
            },
        ) as response,
    ):
        assert response.status == 200
        assert await response.read() == body
        assert response.headers["X-Seen-Path"] == INFER + "?trace=1"
    seen = pod.requests[0]
    assert seen["body"] == body
    assert seen["headers"]["Inference-Header-Content-Length"] == str(len(header))
    assert seen["headers"]["Content-Type"] == "application/octet-stream"
    assert seen["headers"]["X-Request-Id"] == "abc"
    assert "X-Hop" not in seen["headers"]  # named in Connection: hop-by-hop
    assert "Expect" not in seen["headers"]  # the router has the body: nothing to agree to
    assert seen["headers"]["Host"] == f"127.0.0.1:{pod.port}"


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        (400, b'{"error": "malformed JSON in request body"}', {}),
        (404, b'{"error": "unknown model: \'m\'"}', {}),
        (503, b'{"error": "queue full"}', {"Retry-After": "1"}),
        (500, b'{"error": "onnxruntime failed"}', {}),
    ],
)
async def test_a_pods_own_answer_reaches_the_client_unchanged(
    make_router: MakeRouter, app_server: StartApp, status: int, body: bytes, headers: dict[str, str]
) -> None:
    async def answer(request: web.Request, _: bytes) -> web.Response:
        return web.Response(
            status=status, body=body, content_type="application/json", headers=headers
        )

    pod = await app_server(answer)
    router = await make_router()
    router.set_endpoints("stable", (pod.port, False))
    got_status, got_body, got_headers = await post(router, b"{bad")
    assert (got_status, got_body) == (status, body)
    assert got_headers["Content-Type"] == "application/json"
    for name, value in headers.items():
        assert got_headers[name] == value


async def test_a_refused_connection_is_retried_on_another_pod(
    make_router: MakeRouter, app_server: StartApp
) -> None:
    pod = await app_server()
    router = await make_router()
    router.set_endpoints("stable", (closed_port(), False), (pod.port, False))
    results = [await post(router) for _ in range(20)]
    assert [status for status, _, _ in results] == [200] * 20
    assert len(pod.requests) == 20
    metrics = router.proxy.stats.render().decode()
    assert 'kubeinfer_router_decisions_total{reason="retry"}' in metrics


async def test_no_pod_accepting_is_a_502_of_the_routers_after_the_hold_budget(
    make_router: MakeRouter,
) -> None:
    router = await make_router(holdTimeoutSeconds=0.5)
    router.set_endpoints("stable", (closed_port(), False), (closed_port(), False))
    status, body, _ = await post(router)
    assert status == 502 and b"no endpoint accepted the connection" in body
    assert 'reason="connect_backoff"' in router.proxy.stats.render().decode()


async def test_a_ready_pod_that_does_not_listen_yet_is_waited_for(
    make_router: MakeRouter, app_server: StartApp
) -> None:
    router = await make_router(holdTimeoutSeconds=30)
    port = closed_port()
    router.set_endpoints("stable", (port, False))
    waiting = asyncio.create_task(post(router))
    metrics = router.proxy.stats.render
    await wait_until(lambda: 'reason="connect_backoff"' in metrics().decode(), what="backoff")

    # The server comes up on the very port the pod was announced with.
    async def late(request: web.Request) -> web.Response:
        return web.Response(text="late")

    app = web.Application()
    app.router.add_post(INFER, late)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        status, body, _ = await waiting
        assert (status, body) == (200, b"late")
    finally:
        await runner.cleanup()


async def test_never_retried_once_the_answer_began(
    make_router: MakeRouter, app_server: StartApp, raw_server: StartRaw
) -> None:
    seen_by_broken: list[bytes] = []

    async def breaks_mid_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen_by_broken.append(head)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()

    broken = await raw_server(breaks_mid_answer)
    healthy = await app_server()
    router = await make_router()
    router.set_endpoints("stable", (broken.port, False), (healthy.port, False))
    statuses = collections.Counter()
    for i in range(30):
        status, _, _ = await post(router, b"{}", **{"X-Id": str(i)})
        statuses[status] += 1
    assert statuses[502] == len(seen_by_broken) > 0
    assert statuses[200] == len(healthy.requests)
    # A request that reached the broken pod never reached the healthy one too.
    ids_broken = {h.split(b"X-Id: ")[1].split(b"\r\n")[0].decode() for h in seen_by_broken}
    assert ids_broken.isdisjoint({r["headers"]["X-Id"] for r in healthy.requests})


async def test_held_requests_wake_once_and_flush_when_a_pod_is_ready(
    make_router: MakeRouter, app_server: StartApp
) -> None:
    router = await make_router(maxQueued=10)
    loop = asyncio.get_running_loop()
    started = loop.time()
    held = [asyncio.create_task(post(router)) for _ in range(5)]
    await wait_until(lambda: router.proxy.holds.held == 5, what="5 held requests")
    assert len(router.wakes) == 1
    assert router.wakes[0] - started < 1.0  # the bench holds it to 100 ms
    assert not any(task.done() for task in held)
    pod = await app_server()
    router.set_endpoints("stable", (pod.port, False))
    results = await asyncio.gather(*held)
    assert [status for status, _, _ in results] == [200] * 5
    assert len(router.wakes) == 1 and router.proxy.holds.held == 0
    assert not router.proxy.holds.open


async def test_past_max_queued_the_answer_is_429_with_retry_after(make_router: MakeRouter) -> None:
    router = await make_router(maxQueued=2)
    held = [asyncio.create_task(post(router)) for _ in range(2)]
    await wait_until(lambda: router.proxy.holds.held == 2)
    status, body, headers = await post(router)
    assert status == 429 and headers["Retry-After"] == "1" and b"already held" in body
    await router.proxy.stop()
    assert [status for status, _, _ in await asyncio.gather(*held)] == [503, 503]


async def test_a_hold_that_times_out_is_a_503_and_the_next_arrival_wakes_again(
    make_router: MakeRouter,
) -> None:
    router = await make_router(holdTimeoutSeconds=0.2)
    status, body, headers = await post(router)
    assert status == 503 and headers["Retry-After"] == "1" and b"within 0.2s" in body
    assert len(router.wakes) == 1
    await post(router)
    assert len(router.wakes) == 2


async def test_stopping_answers_held_requests_503_at_once(make_router: MakeRouter) -> None:
    router = await make_router(holdTimeoutSeconds=60)
    held = [asyncio.create_task(post(router)) for _ in range(3)]
    await wait_until(lambda: router.proxy.holds.held == 3)
    await router.proxy.stop()
    async with asyncio.timeout(5):
        results = await asyncio.gather(*held)
    assert all(s == 503 and h["Retry-After"] == "1" for s, _, h in results)
    status, _, headers = await post(router)
    assert status == 503 and headers["Retry-After"] == "1"


async def test_a_draining_pod_finishes_its_requests_and_gets_no_new_ones(
    make_router: MakeRouter, app_server: StartApp
) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request, body: bytes) -> web.Response:
        await release.wait()
        return web.Response(body=b"slow")

    draining = await app_server(slow)
    other = await app_server()
    router = await make_router()
    router.set_endpoints("stable", (draining.port, False))
    in_flight = asyncio.create_task(post(router))
    await wait_until(lambda: len(draining.requests) == 1)
    router.set_endpoints("stable", (draining.port, True), (other.port, False))
    for _ in range(10):
        assert (await post(router))[0] == 200
    assert len(draining.requests) == 1 and len(other.requests) == 10
    release.set()
    status, body, _ = await in_flight
    assert (status, body) == (200, b"slow")


async def test_the_routers_own_overload_is_503_with_retry_after(
    make_router: MakeRouter, app_server: StartApp
) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request, body: bytes) -> web.Response:
        await release.wait()
        return web.Response()

    pod = await app_server(slow)
    router = await make_router(maxInFlight=1)
    router.set_endpoints("stable", (pod.port, False))
    first = asyncio.create_task(post(router))
    await wait_until(lambda: router.proxy.active == 1)
    status, body, headers = await post(router)
    assert status == 503 and headers["Retry-After"] == "1" and b"in-flight limit" in body
    release.set()
    assert (await first)[0] == 200


async def test_canary_split_is_exact_and_skips_a_variant_without_ready_pods(
    make_router: MakeRouter, app_server: StartApp
) -> None:
    stable, canary = await app_server(), await app_server()
    router = await make_router({"stable": 90, "canary": 10})
    router.set_endpoints("stable", (stable.port, False))
    router.set_endpoints("canary", (canary.port, False))
    for _ in range(200):
        assert (await post(router))[0] == 200
    assert (len(stable.requests), len(canary.requests)) == (180, 20)
    router.set_endpoints("canary")
    for _ in range(20):
        assert (await post(router))[0] == 200
    assert (len(stable.requests), len(canary.requests)) == (200, 20)
    metrics = router.proxy.stats.render().decode()
    assert 'kubeinfer_router_requests_total{outcome="success",variant="canary"} 20.0' in metrics
    assert 'kubeinfer_router_requests_total{outcome="success",variant="stable"} 200.0' in metrics


async def test_own_endpoints(make_router: MakeRouter, app_server: StartApp) -> None:
    pod = await app_server()
    router = await make_router()
    router.set_endpoints("stable", (pod.port, False))
    await post(router)
    async with aiohttp.ClientSession() as session:
        for path, status in (("/healthz", 200), ("/readyz", 200), ("/nope", 404)):
            async with session.get(router.url + path) as response:
                assert response.status == status, path
        async with session.get(router.url + "/metrics") as response:
            text = await response.text()
        for name in (
            "kubeinfer_router_request_duration_seconds_bucket",
            "kubeinfer_router_upstream_duration_seconds_bucket",
            "kubeinfer_router_overhead_seconds_bucket",
            "kubeinfer_router_decisions_total",
            "kubeinfer_router_held_requests",
            "kubeinfer_router_endpoint_in_flight",
        ):
            assert name in text, name
        async with session.get(router.url + "/router/endpoints") as response:
            doc = await response.json()
        assert doc["available"] == ["stable"] and doc["endpoints"][0]["ready"] is True
        await router.proxy.stop()
        async with session.get(router.url + "/readyz") as response:
            assert response.status == 503
