"""Watch events: every one goes into the store first, then to the reconciler or the engine.

Owns the routing: an InferenceService's own events (creates, spec changes) reconcile at once
and feed the autoscaler; a runtime's events re-resolve every service; a child's events (a pod
turning Ready, a Deployment's status) only refresh their owner's status, so they wait
``CHILD_DEBOUNCE_S`` and merge with the others that arrive meanwhile (a pod start is 3-4
events but needs one status write). Handlers return None.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import kopf

from kubeinfer import telemetry
from kubeinfer.clients import cluster
from kubeinfer.clients.store import STORE
from kubeinfer.core import api, builders, inference_pool
from kubeinfer.handlers import state
from kubeinfer.reconcilers import inferenceservice

log = logging.getLogger("kubeinfer")
CHILD_DEBOUNCE_S = 0.5
LABELS = {builders.LABEL_ISVC: kopf.PRESENT}


@kopf.on.event(api.GROUP, api.VERSION, "inferenceruntimes")
def runtime_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    STORE.observe(dict(body), deleted=type == "DELETED")
    shared = state.of(memo)
    # A runtime that appears or changes may resolve services that were waiting for one.
    for namespace, name in sorted(shared.known):
        inferenceservice.reconcile_by_name(namespace, name, shared.config)


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
    shared = state.of(memo)
    for namespace, name in sorted(shared.known):
        try:
            inferenceservice.reconcile_by_name(namespace, name, shared.config)
        except Exception:  # one service that fails (its namespace terminating) must not stop
            log.exception("reconcile of %s/%s after the InferencePool CRD changed", namespace, name)


@kopf.on.event(api.GROUP, api.VERSION, "inferenceservices")
def isvc_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    shared = state.of(memo)
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    STORE.observe(dict(body), deleted=type == "DELETED")
    if type == "DELETED" or body["metadata"].get("deletionTimestamp"):
        # Children go with the owner through garbage collection.
        shared.known.discard(key)
        if type == "DELETED":
            STORE.forget_service(*key)
        if shared.engine is not None:
            shared.engine.forget(key)
        telemetry.MANAGED.set(len(shared.known))
        return
    shared.known.add(key)
    telemetry.MANAGED.set(len(shared.known))
    isvc = dict(body)
    inferenceservice.reconcile(isvc, shared.config)
    if shared.engine is not None:
        shared.engine.track(isvc)


async def _refresh(shared: state.OperatorState, key: state.Key) -> None:
    await asyncio.sleep(CHILD_DEBOUNCE_S)
    shared.pending.discard(key)
    if key not in shared.known:
        return
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(
            shared.refresh_pool,
            functools.partial(inferenceservice.reconcile_by_name, *key, shared.config),
        )
    except Exception:  # logged here: nothing awaits this task
        log.exception("reconcile of %s/%s after a child event failed", *key)


@kopf.on.event("apps", "v1", "deployments", labels=LABELS)
@kopf.on.event("", "v1", "services", labels=LABELS)
@kopf.on.event("", "v1", "configmaps", labels=LABELS)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=LABELS)
@kopf.on.event("", "v1", "pods", labels=LABELS)
async def child_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    shared = state.of(memo)
    obj = dict(body)
    deleted = type == "DELETED"
    STORE.observe(obj, deleted=deleted)
    if shared.engine is not None and obj.get("kind") == "Pod":
        shared.engine.observe_pod(obj, deleted=deleted)
    owner = body["metadata"].get("labels", {}).get(builders.LABEL_ISVC)
    key = (body["metadata"].get("namespace") or "", owner or "")
    if not owner or key not in shared.known or key in shared.pending:
        return
    shared.pending.add(key)
    shared.keep(asyncio.get_running_loop().create_task(_refresh(shared, key)))
