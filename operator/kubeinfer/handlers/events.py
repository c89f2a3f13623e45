"""Watch events: every one goes into the store first, then to the work queue or the engine.

Owns: the routing, and what each queued key runs (``work``). An InferenceService's own events
(creates, spec changes) queue a reconcile at once and feed the autoscaler; a new service
queues in the create lane, whose work is the Deployment alone (then a full reconcile in the
finish lane, ahead of every status refresh). A runtime's events re-queue every service. A
child's events (a pod turning Ready, a Deployment's status) only refresh their owner's
status, so they wait ``CHILD_DEBOUNCE_S`` and merge with the others that arrive meanwhile (a
pod start is 3-4 events but needs one status write). The echo of our own write (an event
carrying the resourceVersion a write of ours returned) queues nothing: the store already
holds it. No handler makes API calls itself: they run on kopf's event loop and return at
once, so kopf never holds a backlog of bodies. Handlers return None.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from kubeinfer import telemetry
from kubeinfer.clients import cluster
from kubeinfer.clients.store import STORE
from kubeinfer.core import api, builders, inference_pool
from kubeinfer.engines.workqueue import Lane
from kubeinfer.handlers import state
from kubeinfer.reconcilers import inferenceservice

log = logging.getLogger("kubeinfer")
CHILD_DEBOUNCE_S = 0.5
LABELS = {builders.LABEL_ISVC: kopf.PRESENT}


def work(shared: state.OperatorState, key: api.ServiceKey, lane: Lane) -> None:
    """What a worker does with a key (on a worker thread, never the event loop)."""
    if key not in shared.known:
        return
    if lane is Lane.CREATE:
        inferenceservice.reconcile_deployment(*key, shared.config)
        if shared.queue is not None:
            # Before any status refresh: the Service and the Created Event follow at once.
            shared.queue.add(key, Lane.FINISH)
        return
    outcome = inferenceservice.reconcile_by_name(*key, shared.config)
    if outcome.requeue_after_s is not None and shared.queue is not None:
        shared.queue.add_after(key, outcome.requeue_after_s)


def enqueue(shared: state.OperatorState, key: api.ServiceKey, lane: Lane = Lane.REFRESH) -> None:
    if shared.queue is not None:
        shared.queue.add(key, lane)


@kopf.on.event(api.GROUP, api.VERSION, "inferenceruntimes")
async def runtime_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    STORE.observe(dict(body), deleted=type == "DELETED")
    shared = state.of(memo)
    # A runtime that appears or changes may resolve services that were waiting for one.
    for key in sorted(shared.known):
        enqueue(shared, key)


def _is_inference_pool_crd(name: str, **_: Any) -> bool:
    return name == inference_pool.CRD_NAME


@kopf.on.event(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", when=_is_inference_pool_crd
)
def inference_pool_crd_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    # The InferencePool CRD installed (Established) or removed: every service gains or loses
    # its pool now, not at the next resync.
    if not cluster.observe_crd(dict(body), deleted=type == "DELETED"):
        return
    # Through the work queue, as every reconcile: never two workers on one service, and one
    # that fails (its namespace terminating) is retried alone without stopping the others.
    shared = state.of(memo)
    for key in sorted(shared.known):
        enqueue(shared, key)


@kopf.on.event(api.GROUP, api.VERSION, "inferenceservices")
async def isvc_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    shared = state.of(memo)
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    news = STORE.observe(dict(body), deleted=type == "DELETED")
    if type == "DELETED" or body["metadata"].get("deletionTimestamp"):
        # Children go with the owner through garbage collection.
        shared.known.discard(key)
        if type == "DELETED":
            STORE.forget_service(*key)
            inferenceservice.forget(*key)
        if shared.engine is not None:
            shared.engine.forget(key)
        if shared.canary_engine is not None:
            shared.canary_engine.forget(key)
        telemetry.MANAGED.set(len(shared.known))
        return
    shared.known.add(key)
    telemetry.MANAGED.set(len(shared.known))
    owner = builders.Owner(name=key[1], namespace=key[0], uid="")
    known, deployment = STORE.lookup("Deployment", key[0], builders.child_name(owner))
    if news:
        # Not the echo of our own status write (the store holds what it wrote already).
        enqueue(shared, key, Lane.CREATE if known and deployment is None else Lane.REFRESH)
    if shared.engine is not None:
        # The store's copy: the same object without managedFields, shared, not one more body.
        held = STORE.lookup("InferenceService", *key)[1]
        shared.engine.track(held if held is not None else dict(body))
    if shared.canary_engine is not None:
        held = STORE.lookup("InferenceService", *key)[1]
        shared.canary_engine.track(held if held is not None else dict(body))


async def _refresh(shared: state.OperatorState, key: api.ServiceKey) -> None:
    await asyncio.sleep(CHILD_DEBOUNCE_S)
    shared.pending.discard(key)
    if key in shared.known:
        enqueue(shared, key)


@kopf.on.event("apps", "v1", "deployments", labels=LABELS)
@kopf.on.event("", "v1", "services", labels=LABELS)
@kopf.on.event("", "v1", "configmaps", labels=LABELS)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=LABELS)
@kopf.on.event("", "v1", "pods", labels=LABELS)
async def child_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    shared = state.of(memo)
    obj = dict(body)
    deleted = type == "DELETED"
    news = STORE.observe(obj, deleted=deleted)
    if shared.engine is not None and obj.get("kind") == "Pod":
        shared.engine.observe_pod(obj, deleted=deleted)
    owner = body["metadata"].get("labels", {}).get(builders.LABEL_ISVC)
    key = (body["metadata"].get("namespace") or "", owner or "")
    # The echo of our own apply changes nothing the last reconcile did not already see.
    if not news or not owner or key not in shared.known or key in shared.pending:
        return
    shared.pending.add(key)
    shared.keep(asyncio.get_running_loop().create_task(_refresh(shared, key)))
