"""Watch InferenceServices, their children and the runtime catalogue; hand each event to the
reconciler.

Only event handlers and one startup task are used: no kopf change handlers, daemons or
finalizers, so kopf itself never writes annotations, status or finalizers to user objects and a
restarted operator makes no writes to objects that are already right. Handlers return None.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from kubeinfer import telemetry
from kubeinfer.core import api, builders
from kubeinfer.engines import autoscaler
from kubeinfer.reconcilers import inferenceservice

log = logging.getLogger("kubeinfer")
_runtimes: dict[str, api.InferenceRuntimeSpec] | None = None
_known: set[tuple[str, str]] = set()
_engine: autoscaler.Autoscaler | None = None
_tasks: list[asyncio.Task[None]] = []


def _catalogue() -> dict[str, api.InferenceRuntimeSpec]:
    global _runtimes
    if _runtimes is None:
        _runtimes = inferenceservice.load_runtimes()
    return _runtimes


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
def runtime_event(**_: Any) -> None:
    global _runtimes
    _runtimes = inferenceservice.load_runtimes()
    # A runtime that appears or changes may resolve services that were waiting for one.
    for namespace, name in sorted(_known):
        inferenceservice.reconcile_by_name(namespace, name, _catalogue())


@kopf.on.event(api.GROUP, api.VERSION, "inferenceservices")
def isvc_event(type: str, body: kopf.Body, **_: Any) -> None:
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    if type == "DELETED" or body["metadata"].get("deletionTimestamp"):
        # Children go with the owner through garbage collection.
        _known.discard(key)
        if _engine is not None:
            _engine.forget(key)
        telemetry.MANAGED.set(len(_known))
        return
    _known.add(key)
    telemetry.MANAGED.set(len(_known))
    isvc = dict(body)
    inferenceservice.reconcile(isvc, runtimes=_catalogue())
    if _engine is not None:
        _engine.track(isvc)


def _child_event(body: kopf.Body) -> None:
    owner = body["metadata"].get("labels", {}).get(builders.LABEL_ISVC)
    namespace = body["metadata"].get("namespace")
    if not owner or not namespace or (namespace, owner) not in _known:
        return
    inferenceservice.reconcile_by_name(namespace, owner, runtimes=_catalogue())


LABELS = {builders.LABEL_ISVC: kopf.PRESENT}


@kopf.on.event("apps", "v1", "deployments", labels=LABELS)
def deployment_event(type: str, body: kopf.Body, **_: Any) -> None:
    _child_event(body)


@kopf.on.event("", "v1", "services", labels=LABELS)
def service_event(type: str, body: kopf.Body, **_: Any) -> None:
    _child_event(body)


@kopf.on.event("", "v1", "configmaps", labels=LABELS)
def configmap_event(type: str, body: kopf.Body, **_: Any) -> None:
    _child_event(body)


@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=LABELS)
def pdb_event(type: str, body: kopf.Body, **_: Any) -> None:
    _child_event(body)


@kopf.on.event("", "v1", "pods", labels=LABELS)
def pod_event(type: str, body: kopf.Body, **_: Any) -> None:
    if _engine is not None:
        _engine.observe_pod(dict(body), deleted=type == "DELETED")
    _child_event(body)


async def _resync_forever(interval: float = 60) -> None:
    """A periodic safety net for anything a missed watch event would leave stale. Not a kopf
    timer: kopf would add a finalizer to every InferenceService to stop it."""
    while True:
        await asyncio.sleep(interval)
        for namespace, name in sorted(_known):
            try:
                await asyncio.to_thread(inferenceservice.reconcile_by_name, namespace, name)
            except Exception:  # one bad object must not stop the resync of the others
                log.exception("resync of %s/%s failed", namespace, name)
