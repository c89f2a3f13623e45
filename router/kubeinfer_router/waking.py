"""Wake hooks: what the router calls once per hold episode to get a first replica started.

Owns the two real hooks:
- `ScaleWake` writes replicas 0 -> 1 through each Deployment's scale subresource, as field
  manager `kubeinfer-router`, and only from 0: it reads the scale first and sends a merge
  patch that carries the resourceVersion it read, so if the autoscaler (the other writer of
  that field) changed it in between, the API answers 409 and the router re-reads instead of
  overwriting. A Deployment already above zero is left alone.
- `WebhookWake` POSTs to a URL (a benchmark harness, or any other scaler).
The official client is synchronous: its calls run in a worker thread, never on the loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

import aiohttp

from kubeinfer_router import config

log = logging.getLogger("kubeinfer_router.waking")

FIELD_MANAGER = "kubeinfer-router"
CONFLICT_RETRIES = 3


class ScaleWake:
    def __init__(self, *, api: Any, namespace: str, deployments: Sequence[str]) -> None:
        self.api = api  # a kubernetes.client.ApiClient
        self.namespace = namespace
        self.deployments = list(deployments)

    async def __call__(self) -> None:
        await asyncio.to_thread(self.wake_sync)

    def wake_sync(self) -> list[str]:
        """Scale every listed Deployment at zero to one; returns the ones it scaled."""
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        apps = client.AppsV1Api(self.api)
        scaled = []
        for name in self.deployments:
            for _ in range(CONFLICT_RETRIES):
                response = apps.read_namespaced_deployment_scale(
                    name, self.namespace, _preload_content=False
                )
                scale = json.loads(response.data)
                if (scale.get("spec") or {}).get("replicas", 0) > 0:
                    break
                body = {
                    "metadata": {"resourceVersion": scale["metadata"]["resourceVersion"]},
                    "spec": {"replicas": 1},
                }
                try:
                    apps.patch_namespaced_deployment_scale(
                        name,
                        self.namespace,
                        body,
                        field_manager=FIELD_MANAGER,
                        _content_type="application/merge-patch+json",
                        _preload_content=False,
                    )
                except ApiException as exc:
                    if exc.status == 409:
                        continue  # someone else wrote replicas: look again
                    raise
                log.info("woke deployment %s/%s: replicas 0 -> 1", self.namespace, name)
                scaled.append(name)
                break
        return scaled


class WebhookWake:
    def __init__(self, *, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self) -> None:
        # One session for the router's life: the wake is on the critical path of a cold
        # start, and a fresh session (connector, resolver) costs milliseconds on a busy node.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        async with self._session.post(self.url, json={"reason": "held-requests"}) as response:
            response.raise_for_status()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def deployments_to_wake(variants: Sequence[config.Variant]) -> list[str]:
    """Every variant's Deployment that carries traffic (a weight > 0)."""
    return [v.deployment for v in variants if v.deployment and v.weight > 0]
