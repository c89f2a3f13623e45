"""Autoscaler engine (work in progress: loop wiring lands with the scaling core)."""

from __future__ import annotations

import asyncio
from typing import Any


class Autoscaler:
    def __init__(self) -> None:
        self._stopped = asyncio.Event()

    def track(self, isvc: dict[str, Any]) -> None:
        pass

    def forget(self, key: tuple[str, str]) -> None:
        pass

    def observe_pod(self, pod: dict[str, Any], *, deleted: bool) -> None:
        pass

    def stop(self) -> None:
        self._stopped.set()

    async def run(self) -> None:
        await self._stopped.wait()
