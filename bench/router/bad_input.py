"""Part f of bench/router: bad input and a router restart, side by side with the pod itself.

1. Malformed requests (broken JSON, wrong datatype, shape or length, nulls, an unknown model
   or input, a binary header longer than the body) sent straight to a real `mlp` server and
   through the router: the router must pass the server's own KServe v2 error through (same
   status, same body), never answer with a 5xx of its own.
2. A router restart while it holds requests (no Ready endpoint yet, as at zero replicas):
   every held client gets a clear 503 with Retry-After when the router stops, none hangs;
   the same requests retried on the restarted router, once a server is Ready, get 200.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

import aiohttp
import router_processes as rp

INFER = "/v2/models/mlp/infer"
JSON = {"Content-Type": "application/json"}
HELD = 20


def _tensor(**over: Any) -> bytes:
    tensor: dict[str, Any] = {"name": "INPUT0", "shape": [1, 64], "datatype": "FP32"}
    tensor["data"] = [0.5] * 64
    tensor.update(over)
    return json.dumps({"inputs": [tensor]}).encode()


def _binary_header_too_long() -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "shape": [1, 64],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 256},
                }
            ]
        }
    ).encode()
    body = header + struct.pack("<64f", *([0.5] * 64))
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(body) + 100),
    }
    return body, headers


def cases() -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(what, path, body, headers) per malformed request."""
    binary_body, binary_headers = _binary_header_too_long()
    return [
        ("not JSON", INFER, b"{not json", JSON),
        ("wrong datatype (INT64 for FP32)", INFER, _tensor(datatype="INT64"), JSON),
        ("wrong shape ([1, 63])", INFER, _tensor(shape=[1, 63], data=[0.5] * 63), JSON),
        ("data shorter than the shape", INFER, _tensor(data=[0.5] * 10), JSON),
        ("nulls in data", INFER, _tensor(data=[None] * 64), JSON),
        ("unknown input name", INFER, _tensor(name="NOPE"), JSON),
        ("unknown model", "/v2/models/nope/infer", _tensor(), JSON),
        ("binary header past the body", INFER, binary_body, binary_headers),
        ("empty body", INFER, b"", JSON),
    ]


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, Any]:
    async with session.post(url, data=body, headers=headers) as response:
        raw = await response.read()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw.decode(errors="replace")


async def malformed(server: rp.OnnxServer, router: rp.Router) -> list[dict[str, Any]]:
    rows = []
    async with aiohttp.ClientSession() as session:
        for what, path, body, headers in cases():
            direct = await _post(session, server.url + path, body, headers)
            routed = await _post(session, router.url + path, body, headers)
            rows.append(
                {
                    "request": what,
                    "direct_status": direct[0],
                    "router_status": routed[0],
                    "same_answer": direct == routed,
                    "error": direct[1].get("error") if isinstance(direct[1], dict) else direct[1],
                }
            )
    return rows


async def restart(stack: Any) -> dict[str, Any]:
    address = "127.0.0.50"
    http_port, metrics_port = rp.free_port(address), rp.free_port(address)
    endpoint = f"{address}:{http_port}:{metrics_port}"  # nothing listens there yet
    router = await asyncio.to_thread(
        stack.router, "restart-1", "--endpoint", endpoint, "--hold-timeout", "120"
    )
    router_port = router.port
    body = rp.mlp_request(1)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one() -> tuple[int, str | None, float]:
            try:
                async with session.post(router.url + INFER, data=body, headers=JSON) as r:
                    await r.read()
                    return r.status, r.headers.get("Retry-After"), loop.time()
            except (aiohttp.ClientError, TimeoutError):
                return 0, None, loop.time()

        clients = [asyncio.create_task(one()) for _ in range(HELD)]
        await asyncio.to_thread(
            rp.wait_for,
            lambda: router.metric("kubeinfer_router_held_requests") >= HELD,
            30,
            f"{HELD} requests held",
        )
        stopped = loop.time()
        await asyncio.to_thread(stack.stop, router)
        answers = await asyncio.gather(*clients)
        # Restart on the same port; a replica comes up; the clients retry what they were told.
        router = await asyncio.to_thread(
            rp.start_router,
            stack.work / "router-restart-2.log",
            "--endpoint",
            endpoint,
            "--hold-timeout",
            "120",
            port=router_port,
        )
        stack.processes.append(router)
        server = await asyncio.to_thread(
            stack.server, "mlp", address, http_port=http_port, metrics_port=metrics_port
        )
        retried = await asyncio.gather(
            *(_post(session, router.url + INFER, body, JSON) for _ in range(HELD))
        )
    stack.stop(server)
    stack.stop(router)
    waits = [(done - stopped) * 1000 for _, _, done in answers]
    return {
        "held": HELD,
        "answered_503_with_retry_after": sum(
            1 for status, retry_after, _ in answers if status == 503 and retry_after
        ),
        "other_answers": sorted({status for status, _, _ in answers if status != 503}),
        "transport_errors": sum(1 for status, _, _ in answers if status == 0),
        "answer_after_sigterm_ms_max": max(waits),
        "retried_ok": sum(1 for status, _ in retried if status == 200),
    }


async def part_bad_input(stack: Any) -> dict[str, Any]:
    server = await asyncio.to_thread(stack.server, "mlp", "127.0.0.51")
    router = await asyncio.to_thread(stack.router, "bad-input", "--endpoint", server.endpoint_flag)
    rows = await malformed(server, router)
    stack.stop(router)
    stack.stop(server)
    return {"malformed": rows, "restart": await restart(stack)}


def markdown(f: dict[str, Any], ran: str) -> list[str]:
    r = f["restart"]
    lines = [
        "## f. Bad input, and a router restart with held requests",
        "",
        ran,
        "",
        "Each malformed request sent straight to a real `mlp` server and through the router "
        "(the router must pass the server's v2 error through untouched):",
        "",
        "| request | direct | through the router | same answer | the server's error |",
        "|---|---:|---:|---|---|",
    ]
    for row in f["malformed"]:
        error = str(row["error"]).replace("|", "\\|")
        if len(error) > 90:
            error = error[:87] + "..."
        lines.append(
            f"| {row['request']} | {row['direct_status']} | {row['router_status']} | "
            f"{'yes' if row['same_answer'] else 'no'} | {error} |"
        )
    lines += [
        "",
        f"Router restart: {r['held']} requests held (no Ready endpoint), then SIGTERM: "
        f"{r['answered_503_with_retry_after']} of {r['held']} answered 503 with Retry-After "
        f"(other answers: {r['other_answers'] or 'none'}; transport errors "
        f"{r['transport_errors']}), the last {r['answer_after_sigterm_ms_max']:.0f} ms after "
        f"the signal (a client would give up after 60 s). Retried on the restarted router "
        "once a server was Ready: "
        f"{r['retried_ok']} of {r['held']} answered 200.",
        "",
    ]
    return lines
