"""Discovery: keeps the table's endpoint list current, from one of three sources.

Owns the I/O that finds endpoints; what counts as routable is `inventory`'s (pure) job.
- static: the configured addresses, each probed at GET /v2/health/ready every scrape interval
  (every 50 ms while requests are held, so a pod that comes up is used at once), or taken as
  ready without a probe. A refusal or a non-200 answer takes a pod out at once; timeouts
  only after three in a row, as Kubernetes' probes count them.
- pods: a list + watch of Pods by label selector, per variant (a variant added by a reloaded
  config, a canary on a running service, gets its watch then). The local cluster needs this:
  EndpointSlices cannot hold its loopback pod IPs.
- endpointslices: a list + watch of a Service's EndpointSlices, per variant (real clusters).
A watch runs in a thread (the official client is synchronous) and hands each full listing to
the event loop with call_soon_threadsafe; it re-lists after an error or an expired
resourceVersion. Each source sets `synced` after its first complete listing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from kubeinfer_router import config, inventory, table

log = logging.getLogger("kubeinfer_router.discovery")

HELD_PROBE_S = 0.05
PROBE_TIMEOUT_S = 1.0  # Kubernetes' default timeoutSeconds
PROBE_FAILURES = 3  # Kubernetes' default failureThreshold, for timeouts only
WATCH_TIMEOUT_S = 240
RELIST_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)


class StaticDiscovery:
    def __init__(
        self,
        *,
        cfg: config.RouterConfig,
        endpoints: table.Table,
        synced: asyncio.Event,
        holding: Callable[[], bool],
    ) -> None:
        self.cfg = cfg
        self.table = endpoints
        self.synced = synced
        self.holding = holding  # true while requests are held: probe faster
        self.ready: dict[str, bool] = {}
        self.timeouts: dict[str, int] = {}

    def update(self, cfg: config.RouterConfig) -> None:
        """A reloaded config: new addresses or draining flags apply at once."""
        self.cfg = cfg
        self._publish()

    def _publish(self) -> None:
        for variant in self.cfg.variants:
            self.table.reconcile(
                variant.name, inventory.from_static(variant.endpoints, ready=self.ready)
            )

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                everything = [e for v in self.cfg.variants for e in v.endpoints]
                if self.cfg.discovery.probe:
                    answers = await asyncio.gather(*(self._probe(session, e) for e in everything))
                    for e, answer in zip(everything, answers, strict=True):
                        self._judge(inventory.static_key(e), answer)
                else:
                    self.ready = {inventory.static_key(e): True for e in everything}
                self._publish()
                self.synced.set()
                fast = self.holding() and not self.table.available
                await asyncio.sleep(HELD_PROBE_S if fast else self.cfg.scrape_interval_s)

    def _judge(self, key: str, answer: bool | None) -> None:
        # An answer (200 or not) or a refused connection is definite; a timeout only says the
        # pod is busy, so it takes PROBE_FAILURES in a row (Kubernetes' failureThreshold) to
        # mark a pod unready that way. Otherwise a loaded pod flaps and its requests get held.
        if answer is None:
            self.timeouts[key] = self.timeouts.get(key, 0) + 1
            if self.timeouts[key] >= PROBE_FAILURES:
                self.ready[key] = False
            return
        self.timeouts[key] = 0
        self.ready[key] = answer

    async def _probe(self, session: aiohttp.ClientSession, e: config.StaticEndpoint) -> bool | None:
        """True: ready; False: refused or answered not ready; None: no answer in time."""
        host = f"[{e.host}]" if ":" in e.host else e.host
        try:
            async with session.get(f"http://{host}:{e.port}/v2/health/ready") as response:
                return response.status == 200
        except TimeoutError:
            return None
        except (aiohttp.ClientError, OSError):
            return False


class KubeWatch:
    """List + watch one collection in a thread; every change posts the full listing."""

    def __init__(
        self,
        *,
        name: str,
        list_call: Callable[..., Any],
        kwargs: Mapping[str, Any],
        on_listing: Callable[[list[dict[str, Any]]], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.name = name
        self.list_call = list_call
        self.kwargs = dict(kwargs)
        self.on_listing = on_listing
        self.loop = loop
        self.stopped = threading.Event()
        # True from a complete listing until the next failure: the watch is delivering.
        # Written by the watch's thread, read on the event loop (a plain bool is atomic).
        self.live = False
        self.thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def _post(self, objects: dict[str, dict[str, Any]]) -> None:
        listing = list(objects.values())
        self.loop.call_soon_threadsafe(self.on_listing, listing)

    def _run(self) -> None:
        from kubernetes import watch

        failures = 0
        while not self.stopped.is_set():
            try:
                response = self.list_call(**self.kwargs, _preload_content=False)
                document = json.loads(response.data)
                objects = {_key(o): o for o in document.get("items") or []}
                version = (document.get("metadata") or {}).get("resourceVersion")
                self._post(objects)
                self.live = True
                failures = 0
                stream = watch.Watch().stream(
                    self.list_call,
                    resource_version=version,
                    timeout_seconds=WATCH_TIMEOUT_S,
                    allow_watch_bookmarks=True,
                    **self.kwargs,
                )
                for event in stream:
                    if self.stopped.is_set():
                        return
                    kind, obj = event["type"], event["raw_object"]
                    if kind == "ERROR":
                        break  # 410 Gone and friends: list again
                    if kind == "BOOKMARK":
                        continue
                    if kind == "DELETED":
                        objects.pop(_key(obj), None)
                    else:
                        objects[_key(obj)] = obj
                    self._post(objects)
            except Exception as exc:
                self.live = False
                delay = RELIST_BACKOFF_S[min(failures, len(RELIST_BACKOFF_S) - 1)]
                failures += 1
                log.warning("watch %s failed (%s); listing again in %.1fs", self.name, exc, delay)
                time.sleep(delay)


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("uid") or meta.get("name"))


class KubeDiscovery:
    """Pods (by selector) or EndpointSlices (by Service), one watch per variant."""

    def __init__(
        self,
        *,
        cfg: config.RouterConfig,
        endpoints: table.Table,
        synced: asyncio.Event,
        api: Any,
    ) -> None:
        self.cfg = cfg
        self.table = endpoints
        self.synced = synced
        self.api = api
        # Per variant: what its watch selects (a label selector) and the watch.
        self.watches: dict[str, tuple[str, KubeWatch]] = {}
        self._listed: set[str] = set()

    def start(self) -> None:
        for variant in self.cfg.variants:
            self._watch(variant)

    def update(self, cfg: config.RouterConfig) -> None:
        """A reloaded config: a variant added (a canary on a running service) gets a watch, a
        dropped one loses its own, one that selects other pods is watched afresh. The mode and
        namespace apply on restart."""
        self.cfg = dataclasses.replace(cfg, discovery=self.cfg.discovery)
        wanted = {v.name: v for v in cfg.variants}
        for name, (selector, watch) in list(self.watches.items()):
            if name not in wanted or self._selector(wanted[name]) != selector:
                watch.stop()
                del self.watches[name]
                self._listed.discard(name)
        for variant in cfg.variants:
            if variant.name not in self.watches:
                self._watch(variant)

    def _selector(self, variant: config.Variant) -> str:
        if self.cfg.discovery.mode is config.DiscoveryMode.PODS:
            return ",".join(f"{k}={v}" for k, v in sorted(variant.selector.items()))
        return f"kubernetes.io/service-name={variant.service}"

    def _watch(self, variant: config.Variant) -> None:
        from kubernetes import client

        d = self.cfg.discovery
        list_call: Callable[..., Any]
        if d.mode is config.DiscoveryMode.PODS:
            list_call = client.CoreV1Api(self.api).list_namespaced_pod
        else:
            list_call = client.DiscoveryV1Api(self.api).list_namespaced_endpoint_slice
        selector = self._selector(variant)
        watch = KubeWatch(
            name=f"{d.mode.value}/{variant.name}",
            list_call=list_call,
            kwargs={"namespace": d.namespace, "label_selector": selector},
            on_listing=lambda listing: self._listing(variant.name, watch, listing),
            loop=asyncio.get_running_loop(),
        )
        self.watches[variant.name] = (selector, watch)
        watch.start()

    def _listing(self, variant: str, watch: KubeWatch, listing: list[dict[str, Any]]) -> None:
        # A stopped watch's thread may still post one listing: only the variant's current
        # watch speaks for it.
        current = self.watches.get(variant)
        if current is None or current[1] is not watch:
            return
        d = self.cfg.discovery
        if d.mode is config.DiscoveryMode.PODS:
            specs = inventory.from_pods(listing, discovery=d)
        else:
            specs = inventory.from_slices(listing, discovery=d)
        self.table.reconcile(variant, specs)
        self._listed.add(variant)
        if len(self._listed) == len(self.cfg.variants):
            self.synced.set()

    def stop(self) -> None:
        for _, watch in self.watches.values():
            watch.stop()


def kube_api() -> Any:
    """An ApiClient: in-cluster when a service account is mounted, else $KUBECONFIG."""
    from kubernetes import client
    from kubernetes import config as kube_config

    try:
        kube_config.load_incluster_config()
        return client.ApiClient()
    except kube_config.ConfigException:
        return kube_config.new_client_from_config()
