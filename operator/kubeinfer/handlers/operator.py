"""Watch InferenceServices, their children and the runtime catalogue; hand each event to the
reconciler.

Every event is first taken into the watch-fed store (``clients.store``) that the reconciler
and the autoscaler read from; the store is primed from a full listing before the watches start
and re-listed by the periodic resync. Only event handlers and one startup task are used: no
kopf change handlers, daemons or finalizers, so kopf itself never writes annotations, status or
finalizers to user objects and a restarted operator makes no writes to objects that are already
right. Handlers return None.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from typing import Any

import kopf

from kubeinfer import telemetry
from kubeinfer.clients import kube
from kubeinfer.clients.store import STORE
from kubeinfer.core import api, builders
from kubeinfer.engines import autoscaler
from kubeinfer.reconcilers import inferenceservice

log = logging.getLogger("kubeinfer")
_known: set[tuple[str, str]] = set()
_engine: autoscaler.Autoscaler | None = None
_tasks: list[asyncio.Task[None]] = []
# The namespaces the operator watches; empty means the whole cluster (set by handlers.main).
namespaces: list[str] = []

# What the store holds, listed at start-up and on each resync. Children carry our label.
_CACHED_KINDS = [
    (api.API_VERSION, "InferenceService", None),
    (api.API_VERSION, "InferenceRuntime", None),
    ("apps/v1", "Deployment", builders.LABEL_ISVC),
    ("v1", "Service", builders.LABEL_ISVC),
    ("v1", "ConfigMap", builders.LABEL_ISVC),
    ("policy/v1", "PodDisruptionBudget", builders.LABEL_ISVC),
    ("v1", "Pod", builders.LABEL_ISVC),
]


class _NoDiffBase(kopf.DiffBaseStorage):
    """kopf builds a deep-copied "essence" of every body on every event to diff it for change
    handlers. kubeinfer has none (event handlers only), so the essence is never used, and at
    N=500 building it was a sixth of the operator's CPU, all on the event loop."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def relist() -> None:
    """Take a full listing of every cached kind into the store (informer-style replace)."""
    for api_version, kind, selector in _CACHED_KINDS:
        items: list[dict[str, Any]] = []
        newest: int | None = None
        scopes: list[str | None] = list(namespaces) or [None]
        for ns in scopes:
            found, rv = kube.list_collection(api_version, kind, ns, selector)
            items.extend(found)
            # Several namespaces: the oldest listing bounds what may be dropped.
            newest = rv if newest is None or rv is None else min(newest, rv)
        STORE.replace(api_version, kind, items, newest)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _engine
    # The API server may blink (tests restart it); reconnect quickly rather than back off long.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.error_backoffs = [1, 2, 5, 10]
    settings.execution.max_workers = 32
    # kopf would otherwise post its own Events for handler errors; ours carry the real reason.
    settings.posting.level = logging.WARNING
    settings.persistence.diffbase_storage = _NoDiffBase()
    try:
        await asyncio.to_thread(relist)
    except Exception:
        # Reads fall back to the API until the resync lists successfully.
        log.warning("could not prime the store; reading from the API until the next resync")
    _engine = autoscaler.Autoscaler()
    loop = asyncio.get_running_loop()
    _tasks.append(loop.create_task(_engine.run()))
    _tasks.append(loop.create_task(_resync_forever()))


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    if _engine is not None:
        _engine.stop()
    for task in _tasks:
        task.cancel()


@kopf.on.event(api.GROUP, api.VERSION, "inferenceruntimes")
def runtime_event(type: str, body: kopf.Body, **_: Any) -> None:
    STORE.observe(dict(body), deleted=type == "DELETED")
    # A runtime that appears or changes may resolve services that were waiting for one.
    for namespace, name in sorted(_known):
        inferenceservice.reconcile_by_name(namespace, name)


@kopf.on.event(api.GROUP, api.VERSION, "inferenceservices")
def isvc_event(type: str, body: kopf.Body, **_: Any) -> None:
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    STORE.observe(dict(body), deleted=type == "DELETED")
    if type == "DELETED" or body["metadata"].get("deletionTimestamp"):
        # Children go with the owner through garbage collection.
        _known.discard(key)
        if type == "DELETED":
            STORE.forget_service(*key)
        if _engine is not None:
            _engine.forget(key)
        telemetry.MANAGED.set(len(_known))
        return
    _known.add(key)
    telemetry.MANAGED.set(len(_known))
    isvc = dict(body)
    inferenceservice.reconcile(isvc)
    if _engine is not None:
        _engine.track(isvc)


LABELS = {builders.LABEL_ISVC: kopf.PRESENT}
# A child's event (a pod turning Ready, a Deployment's status) only refreshes its owner's
# status, so it waits this long and is merged with the others that arrive meanwhile: a pod
# start is 3-4 events but needs one status write. Creates and spec changes (the owner's own
# events, above) never wait, and the merged refreshes run on their own small pool so they
# cannot starve them.
CHILD_DEBOUNCE_S = 0.5
_pending: set[tuple[str, str]] = set()
_refresh_pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="refresh")


async def _refresh(key: tuple[str, str]) -> None:
    await asyncio.sleep(CHILD_DEBOUNCE_S)
    _pending.discard(key)
    if key not in _known:
        return
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(
            _refresh_pool,
            functools.partial(inferenceservice.reconcile_by_name, *key),
        )
    except Exception:  # logged here: nothing awaits this task
        log.exception("reconcile of %s/%s after a child event failed", *key)


@kopf.on.event("apps", "v1", "deployments", labels=LABELS)
@kopf.on.event("", "v1", "services", labels=LABELS)
@kopf.on.event("", "v1", "configmaps", labels=LABELS)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=LABELS)
@kopf.on.event("", "v1", "pods", labels=LABELS)
async def child_event(type: str, body: kopf.Body, **_: Any) -> None:
    obj = dict(body)
    deleted = type == "DELETED"
    STORE.observe(obj, deleted=deleted)
    if _engine is not None and obj.get("kind") == "Pod":
        _engine.observe_pod(obj, deleted=deleted)
    owner = body["metadata"].get("labels", {}).get(builders.LABEL_ISVC)
    key = (body["metadata"].get("namespace") or "", owner or "")
    if not owner or key not in _known or key in _pending:
        return
    _pending.add(key)
    _tasks.append(asyncio.get_running_loop().create_task(_refresh(key)))
    _tasks[:] = [t for t in _tasks if not t.done()]


async def _resync_forever(interval: float = 60) -> None:
    """A periodic safety net for anything a missed watch event would leave stale: re-list into
    the store (a watch broken by an API server restart never reports deletions it missed),
    then reconcile everything from memory. Not a kopf timer: kopf would add a finalizer to
    every InferenceService to stop it."""
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(relist)
        except Exception:
            log.warning("resync listing failed; the store keeps its last state", exc_info=True)
        for namespace, name in sorted(_known):
            try:
                await asyncio.to_thread(inferenceservice.reconcile_by_name, namespace, name)
            except Exception:  # one bad object must not stop the resync of the others
                log.exception("resync of %s/%s failed", namespace, name)
