"""The runtime catalogue: every InferenceRuntime as a parsed spec, read from the watch-fed store.

Owns: turning the store's InferenceRuntime objects into ``api.InferenceRuntimeSpec`` (parsed once
per resourceVersion), and the one listing that fills the store when the start-up listing did
not. The reconciler and the autoscaler both read the catalogue here, so a runtime that changes
is seen by both at once, with no listing of its own. An invalid entry is skipped (the CRD's
schema makes that rare), never fatal for the services that use other runtimes.
"""

from __future__ import annotations

import threading
from typing import Any

import pydantic

from kubeinfer.clients import kube
from kubeinfer.clients.store import STORE, resource_version
from kubeinfer.core import api

KIND = "InferenceRuntime"
_parsed: dict[tuple[str, int | None], api.InferenceRuntimeSpec | None] = {}
_lock = threading.Lock()


def runtimes() -> dict[str, api.InferenceRuntimeSpec]:
    """Name -> spec of every valid InferenceRuntime the store holds."""
    held = STORE.objects(KIND)
    if held is None:
        items, rv = kube.list_collection(api.API_VERSION, KIND, None)
        STORE.replace(api.API_VERSION, KIND, items, rv)
        held = STORE.objects(KIND) or []
    out: dict[str, api.InferenceRuntimeSpec] = {}
    for obj in held:
        spec = _parse(obj)
        if spec is not None:
            out[obj["metadata"]["name"]] = spec
    return out


def _parse(obj: dict[str, Any]) -> api.InferenceRuntimeSpec | None:
    key = (obj["metadata"]["name"], resource_version(obj))
    with _lock:
        if key in _parsed:
            return _parsed[key]
    try:
        spec: api.InferenceRuntimeSpec | None = api.parse_runtime(obj.get("spec") or {})
    except pydantic.ValidationError:
        spec = None
    with _lock:
        _parsed[key] = spec
    return spec
