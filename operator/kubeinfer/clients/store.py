"""A watch-fed cache of the objects kubeinfer reads: its InferenceServices and their children
(Deployments, Services, ConfigMaps, PodDisruptionBudgets, pods), and the InferenceRuntimes.

Owns: keeping the newest copy of each object seen, from three sources - the watch events kopf
hands the handlers, the objects our own writes return (write-through, so a reconcile never
reads back something older than what it just wrote), and a full listing at start-up and on
each resync (which also drops objects whose deletion a broken watch never reported).

Why: at N=500 the reconciler's GETs (~8 per reconcile) and the autoscaler's pod list and
scale read (2 per service every 2 s) were most of the API traffic and most of the operator's
time. Reads now come from memory; the API server sees writes, watches and one listing a
minute. "Newest" is decided by resourceVersion, compared as integers: the API documents it
as opaque, but every kube-apiserver backed by etcd issues increasing integers, and when one
is not an integer the incoming copy simply wins.

A key the store has never seen is a miss (``lookup`` says so) and the caller falls back to a
GET; a GET that finds nothing is remembered as absent until a watch event says otherwise.
Once a kind has been listed in full, a key it does not hold is absent: the watch reports
everything created after the listing, and our own creates are written through.
Objects handed out are shared: callers must not mutate them.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from typing import Any

from kubeinfer.core import api, builders, scale_in

Key = tuple[str, str, str]  # (kind, namespace, name)

# What is read from a pod (``core.census``, ``core.status``, the autoscaler): who it is, where it
# runs, and its status. The spec (containers, volumes, probes) is most of a pod's size and is
# never read, so it is not held: at N=500 the pods were the store's largest kind.
_POD_METADATA = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "labels",
    "creationTimestamp",
    "deletionTimestamp",
    # The scale-in marks (pod-deletion-cost, draining) are read from here (core/scale_in.py).
    "annotations",
)


def slim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """The part of a pod kubeinfer reads (see ``_POD_METADATA``)."""
    meta = pod.get("metadata") or {}
    out: dict[str, Any] = {
        "apiVersion": pod.get("apiVersion", "v1"),
        "kind": "Pod",
        "metadata": {k: meta[k] for k in _POD_METADATA if k in meta},
        "status": pod.get("status") or {},
    }
    # Who owns each scale-in mark decides whether the autoscaler may write it: the entries
    # that own one are kept, cut down to the marks (usually none; the rest is never read).
    owners = scale_in.mark_fields(meta.get("managedFields"))
    if owners:
        out["metadata"]["managedFields"] = owners
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        out["spec"] = {"nodeName": node}
    return out


def _same_version(incoming: dict[str, Any], held: dict[str, Any] | None) -> bool:
    """The held copy is this very version: keep it, so a resync's listing (every object again,
    unchanged) replaces nothing and its copies go with the page."""
    rv = resource_version(incoming)
    return rv is not None and rv == resource_version(held)


def resource_version(obj: dict[str, Any] | None) -> int | None:
    """metadata.resourceVersion as an integer; None when absent or not an integer."""
    if obj is None:
        return None
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or "")
    except ValueError:
        return None


# Strings up to this length are interned when held: keys and enum-like values repeat in every
# object of a kind; longer ones (messages, config files) are mostly unique.
_SHARED_STR_LEN = 64


def compact(value: Any) -> Any:
    """``value`` rebuilt with its keys and short strings interned. Each watch event is decoded
    on its own, so every held Deployment had its own copy of "containerPort", "TCP", "True"...:
    shared, a Deployment or an InferenceService takes about half the memory (measured on the
    bench's objects: 28 -> 15 KB and 15 -> 8 KB)."""
    if isinstance(value, dict):
        return {sys.intern(k): compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compact(v) for v in value]
    if isinstance(value, str) and len(value) <= _SHARED_STR_LEN:
        return sys.intern(value)
    return value


def slim(obj: dict[str, Any]) -> dict[str, Any]:
    """What the store holds of ``obj``: a pod's read fields, anything else without
    managedFields (often half an object's size, never read here); compacted either way."""
    if obj.get("kind") == "Pod":
        return compact(slim_pod(obj))  # type: ignore[no-any-return]
    meta = obj.get("metadata") or {}
    if "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return compact(obj)  # type: ignore[no-any-return]


class Store:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # None = known absent (a GET found nothing, or we deleted it).
        self._objects: dict[Key, dict[str, Any] | None] = {}
        # The keys of each kind: ``objects`` (the runtime catalogue, read on every reconcile)
        # must not scan every pod-owner and child held (thousands at N=500) under the lock.
        self._keys_of: dict[str, set[Key]] = {}
        # Pods by (namespace, InferenceService name), then pod name.
        self._pods: dict[api.ServiceKey, dict[str, dict[str, Any]]] = {}
        # Whether a full pod listing has been taken in: until then an empty pod list could
        # just mean "not seen yet", and the callers list from the API instead.
        self.pods_primed = False
        # Kinds listed in full: for these a key not held is known to be absent.
        self._primed: set[str] = set()
        # The resourceVersion at which each deleted key went away: an older copy arriving late
        # (a slow GET, a delayed event) must not resurrect it.
        self._tombstones: dict[Key, int] = {}
        # The resourceVersion of our last write to each key, until its watch event arrives.
        self._written: dict[Key, int] = {}

    # ---- writes into the cache ------------------------------------------------------------
    def observe_written(self, obj: dict[str, Any]) -> None:
        """The result of our own write: held, and its watch event (same resourceVersion) will
        not count as news (``observe`` returns False for it)."""
        self.observe(obj)
        rv = resource_version(obj)
        meta = obj.get("metadata") or {}
        if rv is not None and obj.get("kind") and meta.get("name"):
            with self._lock:
                self._written[(obj["kind"], meta.get("namespace") or "", meta["name"])] = rv

    def observe(self, obj: dict[str, Any], *, deleted: bool = False) -> bool:
        """A watch event or the result of our own write. Returns whether it is news: False
        for the echo of our own last write (a reconcile would find nothing to do)."""
        obj = slim(obj)
        meta = obj.get("metadata") or {}
        kind, ns, name = obj.get("kind") or "", meta.get("namespace") or "", meta.get("name")
        if not kind or not name:
            return True
        with self._lock:
            # Consumed by the first event after the write, whatever it carries.
            echo = self._written.pop((kind, ns, name), None)
            if kind == "Pod":
                self._observe_pod(obj, ns, name, deleted=deleted)
            else:
                self._observe_object((kind, ns, name), obj, deleted=deleted)
            return deleted or echo is None or resource_version(obj) != echo

    def remember_absent(self, kind: str, namespace: str, name: str) -> None:
        """A GET found nothing (or we deleted it): absent until a watch event says otherwise."""
        with self._lock:
            key = (kind, namespace, name)
            if self._objects.get(key) is None:
                self._set(key, None)

    def remember(self, kind: str, namespace: str, name: str, obj: dict[str, Any] | None) -> None:
        """The result of a fallback GET, kept unless something newer arrived meanwhile."""
        if obj is None:
            self.remember_absent(kind, namespace, name)
        else:
            self.observe(obj)

    def replace(
        self, api_version: str, kind: str, items: Iterable[dict[str, Any]], list_rv: int | None
    ) -> None:
        """A full listing of ``kind``: objects not in it (and not newer than it) are gone."""
        self.prune(kind, self.take_in(api_version, kind, items), list_rv)

    def take_in(
        self, api_version: str, kind: str, items: Iterable[dict[str, Any]]
    ) -> set[tuple[str, str]]:
        """One page of a listing of ``kind``, observed; returns the (namespace, name) keys it
        held. A listing fed page by page, then ``prune``, never holds a second copy of the
        whole kind (at N=500 the Deployments alone were ~14 MB)."""
        seen: set[tuple[str, str]] = set()
        for obj in items:
            # List items come without their type; callers compare whole objects.
            obj.setdefault("apiVersion", api_version)
            obj.setdefault("kind", kind)
            self.observe(obj)
            seen.add(((obj.get("metadata") or {}).get("namespace") or "", obj["metadata"]["name"]))
        return seen

    def prune(self, kind: str, seen: set[tuple[str, str]], list_rv: int | None) -> None:
        """The end of a full listing of ``kind`` that held ``seen``: objects not in it (and
        not newer than it) are gone."""
        with self._lock:
            if list_rv is not None:
                # The listing is newer than these deletions: nothing older can arrive now.
                self._tombstones = {
                    k: rv for k, rv in self._tombstones.items() if k[0] != kind or rv > list_rv
                }
            if kind == "Pod":
                for pods in self._pods.values():
                    for name, pod in list(pods.items()):
                        ns = pod["metadata"].get("namespace") or ""
                        if (ns, name) not in seen and self._older_than(pod, list_rv):
                            del pods[name]
                self.pods_primed = True
                return
            self._primed.add(kind)
            for key, held in list(self._objects.items()):
                if key[0] != kind or held is None or (key[1], key[2]) in seen:
                    continue
                if self._older_than(held, list_rv):
                    del self._objects[key]
                    self._keys_of[kind].discard(key)

    def forget_service(self, namespace: str, name: str) -> None:
        """An InferenceService is gone: its pods' entries go too (their own events may lag)."""
        with self._lock:
            self._pods.pop((namespace, name), None)
            self._written.pop(("InferenceService", namespace, name), None)

    # ---- reads ----------------------------------------------------------------------------
    def lookup(self, kind: str, namespace: str, name: str) -> tuple[bool, dict[str, Any] | None]:
        """(known, object): known False is a miss; known True with None is a known absence."""
        with self._lock:
            key = (kind, namespace, name)
            if key in self._objects:
                return True, self._objects[key]
            return kind in self._primed, None

    def objects(self, kind: str) -> list[dict[str, Any]] | None:
        """Every object of ``kind`` held; None until the kind has been listed in full."""
        with self._lock:
            if kind not in self._primed:
                return None
            held = (self._objects[k] for k in self._keys_of.get(kind, ()))
            return [o for o in held if o is not None]

    def pods(self, namespace: str, isvc: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._pods.get((namespace, isvc), {}).values())

    # ---- internals (lock held) ------------------------------------------------------------
    @staticmethod
    def _older_than(obj: dict[str, Any], list_rv: int | None) -> bool:
        rv = resource_version(obj)
        return list_rv is None or rv is None or rv <= list_rv

    def _is_stale(self, key: Key, incoming: dict[str, Any], held: dict[str, Any] | None) -> bool:
        new = resource_version(incoming)
        if new is None:
            return False
        gone_at = self._tombstones.get(key)
        if gone_at is not None and new <= gone_at:
            return True
        old = resource_version(held)
        return old is not None and new < old

    def _observe_object(self, key: Key, obj: dict[str, Any], *, deleted: bool) -> None:
        held = self._objects.get(key)
        if deleted:
            rv = resource_version(obj)
            if rv is not None:
                self._tombstones[key] = rv
            self._set(key, None)
            return
        if self._is_stale(key, obj, held) or _same_version(obj, held):
            return
        self._tombstones.pop(key, None)
        self._set(key, obj)

    def _set(self, key: Key, obj: dict[str, Any] | None) -> None:
        self._objects[key] = obj
        self._keys_of.setdefault(key[0], set()).add(key)

    def _observe_pod(self, pod: dict[str, Any], ns: str, name: str, *, deleted: bool) -> None:
        owner = (pod["metadata"].get("labels") or {}).get(builders.LABEL_ISVC)
        if not owner:
            return
        pods = self._pods.setdefault((ns, owner), {})
        key = ("Pod", ns, name)
        if deleted:
            rv = resource_version(pod)
            if rv is not None:
                self._tombstones[key] = rv
            pods.pop(name, None)
            return
        if self._is_stale(key, pod, pods.get(name)) or _same_version(pod, pods.get(name)):
            return
        self._tombstones.pop(key, None)
        pods[name] = pod


# The operator's one store: the handlers feed it, the reconciler and the autoscaler read it.
STORE = Store()
