"""The periodic safety net: re-list everything into the store, then reconcile from memory.

Owns: the full listing of every cached kind (informer-style replace; run at start-up and every
minute), and the loop that follows each listing with a reconcile of every known service (queued
in the refresh lane, so a resync never delays a create). A
watch broken by an API server restart never reports the deletions it missed; this catches
them. Not a kopf timer: kopf would add a finalizer to every InferenceService to stop it.
"""

from __future__ import annotations

import asyncio
import logging

from kubeinfer.clients import cluster, kube
from kubeinfer.clients.store import STORE
from kubeinfer.core import api, builders
from kubeinfer.engines.workqueue import Lane
from kubeinfer.handlers.state import OperatorState

log = logging.getLogger("kubeinfer")
INTERVAL_S = 60.0

# What the store holds. Children carry our label; runtimes are cluster-scoped.
CACHED_KINDS = [
    (api.API_VERSION, "InferenceService", None),
    (api.API_VERSION, "InferenceRuntime", None),
    ("apps/v1", "Deployment", builders.LABEL_ISVC),
    ("v1", "Service", builders.LABEL_ISVC),
    ("v1", "ConfigMap", builders.LABEL_ISVC),
    ("policy/v1", "PodDisruptionBudget", builders.LABEL_ISVC),
    ("v1", "Pod", builders.LABEL_ISVC),
    # kubeinfer-router's identity (spec.router): listed, not watched (they change only by
    # our own writes, which the store sees), so a deleted one is known gone, and put back,
    # within a resync, and a service without a router reads none of them from the API.
    ("v1", "ServiceAccount", builders.LABEL_ISVC),
    ("rbac.authorization.k8s.io/v1", "Role", builders.LABEL_ISVC),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", builders.LABEL_ISVC),
]


def relist(namespaces: tuple[str, ...]) -> None:
    """Take a full listing of every cached kind into the store."""
    for api_version, kind, selector in CACHED_KINDS:
        seen: set[tuple[str, str]] = set()
        newest: int | None = None
        cluster_scoped = kind == "InferenceRuntime"
        scopes: list[str | None] = [None] if cluster_scoped or not namespaces else list(namespaces)
        for ns in scopes:
            rv: int | None = None
            # Page by page into the store: the store keeps its copy of an unchanged object,
            # so a page's copies go with it and a resync never holds a kind twice.
            for page, page_rv in kube.list_pages(api_version, kind, ns, selector):
                seen |= STORE.take_in(api_version, kind, page)
                rv = page_rv
            # Several namespaces: the oldest listing bounds what may be dropped.
            newest = rv if newest is None or rv is None else min(newest, rv)
        STORE.prune(kind, seen, newest)
    # Optional kinds: the InferencePool CRD may come and go; read once per resync, cached.
    cluster.refresh_inference_pools(namespaces)


async def forever(state: OperatorState) -> None:
    while True:
        await asyncio.sleep(INTERVAL_S)
        try:
            await asyncio.to_thread(relist, state.config.namespaces)
        except Exception:
            log.warning("resync listing failed; the store keeps its last state", exc_info=True)
        if state.queue is not None:
            for key in sorted(state.known):
                state.queue.add(key, Lane.REFRESH)
