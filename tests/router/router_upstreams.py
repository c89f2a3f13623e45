"""Helpers for the router's tests: free ports, waiting on conditions, upstream handles."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from kubeinfer_router import inventory, proxy, table

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def closed_port(address: str = "127.0.0.1") -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


async def wait_until(
    check: Callable[[], Any], timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll `check` on the event loop until it is truthy; never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


class RawServer:
    def __init__(self, server: asyncio.Server) -> None:
        self.server = server
        self.port = int(server.sockets[0].getsockname()[1])
        self.connections = 0


class AppServer:
    def __init__(self, runner: web.AppRunner, port: int) -> None:
        self.runner = runner
        self.port = port
        self.requests: list[dict[str, Any]] = []


class RouterHandle:
    """A Proxy served in-process on 127.0.0.1, its table driven by the test, not discovery."""

    def __init__(
        self, router: proxy.Proxy, endpoints: table.Table, runner: web.AppRunner, port: int
    ) -> None:
        self.proxy = router
        self.table = endpoints
        self.runner = runner
        self.url = f"http://127.0.0.1:{port}"
        self.wakes: list[float] = []

    def set_endpoints(self, variant: str, *addresses: tuple[int, bool]) -> None:
        """(port, draining) pairs on 127.0.0.1, all ready."""
        self.table.reconcile(
            variant,
            [
                inventory.EndpointSpec(
                    key=f"127.0.0.1:{port}",
                    host="127.0.0.1",
                    port=port,
                    metrics_port=None,
                    draining=draining,
                )
                for port, draining in addresses
            ],
        )
