"""Facts about the cluster beyond kubeinfer's own objects: is the InferencePool CRD installed,
and how many GPUs are free where a service's pods could land.

Owns two reads and how often they happen:
- The InferencePool CRD: one GET per resync (``refresh_inference_pools``, from the resync's
  listing) and a CRD watch event (``observe_crd``), cached in between. Its absence is the normal
  case, so it is neither an error nor logged; only a failed read is, once until it recovers.
- The GPU census (``core.capacity``): the Nodes and the pods bound to them, listed only when a
  GPU service's pod template is about to change - a rare event, where a stale count could start
  a surge that deadlocks. Never in namespaced mode: the chart then grants
  no cluster-wide pod or node reads, and an unknown count means no surge (``core.rollout``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes.client.rest import ApiException

from kubeinfer.clients import kube
from kubeinfer.clients.store import STORE
from kubeinfer.core import builders, capacity, census, inference_pool
from kubeinfer.core.config import OperatorConfig

log = logging.getLogger("kubeinfer")
CRD_API = "apiextensions.k8s.io/v1"
# Pods that hold their node's resources: the scheduler counts every pod not yet finished.
_HOLDING = ",".join(f"status.phase!={phase}" for phase in sorted(census.FINISHED_PHASES))

_lock = threading.Lock()
_pools_installed: bool | None = None  # None: not read yet
_failing: set[str] = set()  # reads whose failure is already logged


def _failed(what: str, exc: Exception) -> None:
    with _lock:
        first = what not in _failing
        _failing.add(what)
    if first:
        log.warning("%s failed (%s); retried, logged again only after it recovers", what, exc)


def _recovered(what: str) -> None:
    with _lock:
        _failing.discard(what)


def established(crd: Mapping[str, Any] | None) -> bool:
    conditions = ((crd or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def observe_crd(crd: Mapping[str, Any], *, deleted: bool) -> bool:
    """A CRD watch event: returns True when InferencePool support changed."""
    global _pools_installed
    if (crd.get("metadata") or {}).get("name") != inference_pool.CRD_NAME:
        return False
    now = not deleted and established(crd)
    with _lock:
        changed, _pools_installed = _pools_installed != now, now
    return changed


def refresh_inference_pools(namespaces: tuple[str, ...]) -> bool:
    """Read the CRD once; when installed, list kubeinfer's pools into the store (so a pool
    deleted by hand is re-created by the next reconcile). Returns whether it is installed."""
    global _pools_installed
    try:
        crd = kube.get(CRD_API, "CustomResourceDefinition", None, inference_pool.CRD_NAME)
    except ApiException as exc:
        _failed("reading the InferencePool CRD", exc)
        return bool(_pools_installed)
    _recovered("reading the InferencePool CRD")
    installed = established(crd)
    with _lock:
        _pools_installed = installed
    if installed:
        items: list[dict[str, Any]] = []
        newest: int | None = None
        scopes: list[str | None] = list(namespaces) or [None]
        try:
            for ns in scopes:
                found, rv = kube.list_collection(
                    inference_pool.API_VERSION, inference_pool.KIND, ns, builders.LABEL_ISVC
                )
                items.extend(found)
                newest = rv if newest is None or rv is None else min(newest, rv)
        except ApiException as exc:
            _failed("listing InferencePools", exc)
            return installed
        _recovered("listing InferencePools")
        STORE.replace(inference_pool.API_VERSION, inference_pool.KIND, items, newest)
    return installed


def inference_pools_installed(namespaces: tuple[str, ...]) -> bool:
    """The cached answer; read once if nothing has been read yet."""
    with _lock:
        known = _pools_installed
    return refresh_inference_pools(namespaces) if known is None else known


def spare_gpus(
    config: OperatorConfig,
    *,
    resource: str,
    node_selector: Mapping[str, str],
    tolerations: Sequence[Mapping[str, Any]],
) -> int | None:
    """The most free ``resource`` on one node that fits; None when it cannot be known."""
    if config.namespaces:
        return None
    try:
        nodes, _ = kube.list_collection("v1", "Node", None, whole=True)
        pods, _ = kube.list_collection("v1", "Pod", None, field_selector=_HOLDING, whole=True)
    except ApiException as exc:
        _failed("counting free GPUs", exc)
        return None
    _recovered("counting free GPUs")
    census = capacity.build_census(nodes, pods)
    return capacity.most_free(
        census, resource=resource, node_selector=node_selector, tolerations=tolerations
    )
