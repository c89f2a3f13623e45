"""The only module that talks to the Kubernetes API (the official ``kubernetes`` client).

Owns: server-side apply with a named field manager, reads as plain dicts, status and scale
writes, Events, keeping the watch-fed store (``clients.store``) current with what every write
returns, cached reads that fall back to a GET on a miss, and a count of every write (metric
kubeinfer_api_writes_total, so tests and benchmarks can prove that an operator restart writes
nothing). Synchronous by design: kopf runs sync handlers in its thread pool, and async code
calls in through ``asyncio.to_thread``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from kubeinfer import telemetry
from kubeinfer.clients.store import STORE, resource_version, slim
from kubeinfer.core import api, builders, inference_pool

RECONCILER_MANAGER = "kubeinfer-reconciler"
SCALER_MANAGER = "kubeinfer-autoscaler"

# Plural resource paths of the kinds kubeinfer reads and writes.
_PATHS = {
    ("apps/v1", "Deployment"): "/apis/apps/v1/namespaces/{ns}/deployments",
    ("v1", "Service"): "/api/v1/namespaces/{ns}/services",
    ("v1", "ConfigMap"): "/api/v1/namespaces/{ns}/configmaps",
    ("v1", "Pod"): "/api/v1/namespaces/{ns}/pods",
    ("v1", "Secret"): "/api/v1/namespaces/{ns}/secrets",
    # kubeinfer-router's identity and permissions (core/router.py).
    ("v1", "ServiceAccount"): "/api/v1/namespaces/{ns}/serviceaccounts",
    (
        "rbac.authorization.k8s.io/v1",
        "Role",
    ): "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
    ): "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    ("policy/v1", "PodDisruptionBudget"): "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
    (
        api.API_VERSION,
        "InferenceService",
    ): f"/apis/{api.API_VERSION}/namespaces/{{ns}}/inferenceservices",
    (api.API_VERSION, "InferenceRuntime"): f"/apis/{api.API_VERSION}/inferenceruntimes",
    (
        inference_pool.API_VERSION,
        inference_pool.KIND,
    ): f"/apis/{inference_pool.API_VERSION}/namespaces/{{ns}}/inferencepools",
    ("v1", "Node"): "/api/v1/nodes",
    (
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
    ): "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
}


class Refused(Exception):
    """The API server refused a write on its merits (a field another manager owns, an invalid
    value, an admission webhook's no): sending the same write again would be refused again."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(f"{status} {why}")
        self.status = status
        self.why = why


class Conflict(Refused):
    """Another field manager owns a field we tried to apply."""


# What a write refused on its merits answers. Not 404 (gone), 429 or 5xx (try again later).
_REFUSALS = frozenset({400, 403, 409, 422})


def _refused(exc: ApiException) -> Refused:
    """The API server's own reason and message (its Status body), shortened for a sentence."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    reason = str(body.get("reason") or exc.reason or "")
    message = str(body.get("message") or "")
    why = f"{reason}: {message}" if message else reason
    cls = Conflict if exc.status == 409 else Refused
    return cls(int(exc.status or 0), why[:300])


def _count(verb: str, kind: str, namespace: str | None = None) -> None:
    telemetry.API_WRITES.labels(verb=verb, kind=kind, namespace=namespace or "").inc()


_client: client.ApiClient | None = None
_client_lock = threading.Lock()


def api_client() -> client.ApiClient:
    """One shared client: in-cluster when a service account is mounted, else $KUBECONFIG."""
    global _client
    with _client_lock:
        if _client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            _client = client.ApiClient()
            # The default pool of 4 throttles a busy operator on many objects.
            _client.rest_client.pool_manager.connection_pool_kw["maxsize"] = 32
        return _client


def _request(
    method: str,
    path: str,
    *,
    query: list[tuple[str, str]] | None = None,
    body: Any = None,
    content_type: str | None = None,
    timeout: float = 30,
) -> Any:
    c = api_client()
    headers = {"Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    m, url, hdrs, ser_body, post = c.param_serialize(
        method=method,
        resource_path=path,
        query_params=query or [],
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    resp = c.call_api(
        m, url, header_params=hdrs, body=ser_body, post_params=post, _request_timeout=timeout
    )
    resp.read()
    if not 200 <= resp.status <= 299:
        raise ApiException(http_resp=resp)
    return json.loads(resp.data) if resp.data else None


def _path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    base = _PATHS[(api_version, kind)].format(ns=namespace)
    return f"{base}/{name}" if name else base


def get(api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = _request("GET", _path(api_version, kind, namespace, name))
        return obj
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def list_objects(
    api_version: str, kind: str, namespace: str | None, label_selector: str | None = None
) -> list[dict[str, Any]]:
    return list_collection(api_version, kind, namespace, label_selector)[0]


# Items per page of a listing: a full listing of every pod at N=500 decoded in one piece was
# tens of MB held at once (the operator's peak memory); pages are slimmed as they arrive.
# A page of 250 whole pods (managedFields and spec included) still decoded to ~11 MB at once;
# 100 keep that under 5 MB for a few more requests a minute.
LIST_PAGE = 100


def list_collection(
    api_version: str,
    kind: str,
    namespace: str | None,
    label_selector: str | None = None,
    field_selector: str | None = None,
    *,
    whole: bool = False,
) -> tuple[list[dict[str, Any]], int | None]:
    """(items, the listing's resourceVersion); namespace None lists across the cluster.

    Read in pages (one consistent snapshot: the API serves every page at the first one's
    resourceVersion); each item is slimmed to what the store holds as its page arrives,
    unless ``whole`` (the GPU census reads pods' resource requests, which the store drops)."""
    items: list[dict[str, Any]] = []
    listing_rv: int | None = None
    for page, rv in list_pages(
        api_version, kind, namespace, label_selector, field_selector, whole=whole
    ):
        items.extend(page)
        listing_rv = rv
    return items, listing_rv


def list_pages(
    api_version: str,
    kind: str,
    namespace: str | None,
    label_selector: str | None = None,
    field_selector: str | None = None,
    *,
    whole: bool = False,
) -> Iterator[tuple[list[dict[str, Any]], int | None]]:
    """A listing page by page, as ``list_collection`` reads it: (items, the listing's
    resourceVersion) per page, so a caller can take each page in before the next is read."""
    base = _PATHS[(api_version, kind)]
    path = base.format(ns=namespace) if namespace else base.replace("/namespaces/{ns}", "")
    query = [("labelSelector", label_selector)] if label_selector else []
    if field_selector:
        query.append(("fieldSelector", field_selector))
    query.append(("limit", str(LIST_PAGE)))
    listing_rv: int | None = None
    token = ""
    while True:
        page: dict[str, Any] = _request(
            "GET", path, query=query + ([("continue", token)] if token else [])
        )
        if listing_rv is None:
            listing_rv = resource_version(page)
        items: list[dict[str, Any]] = []
        for item in page.pop("items", None) or []:
            # List items come without their type.
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
            items.append(item if whole else slim(item))
        token = (page.get("metadata") or {}).get("continue") or ""
        del page  # the decoded page goes before the caller takes its items in
        yield items, listing_rv
        if not token:
            return


def cached_get(api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """From the store; a miss is read from the API once and remembered (absent included)."""
    known, obj = STORE.lookup(kind, namespace, name)
    if known:
        return obj
    obj = get(api_version, kind, namespace, name)
    STORE.remember(kind, namespace, name, obj)
    return obj


def cached_pods(namespace: str, isvc: str) -> list[dict[str, Any]]:
    """The service's pods from the store, or from the API until the store has been primed."""
    if STORE.pods_primed:
        return STORE.pods(namespace, isvc)
    owner = builders.Owner(name=isvc, namespace=namespace, uid="")
    return list_objects("v1", "Pod", namespace, builders.selector_string(owner))


def apply(obj: dict[str, Any], *, field_manager: str = RECONCILER_MANAGER) -> dict[str, Any]:
    """Server-side apply; ``force`` takes back fields a human changed by hand (drift repair)."""
    meta = obj["metadata"]
    path = _path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
    _count("apply", obj["kind"], meta.get("namespace"))
    try:
        result: dict[str, Any] = _request(
            "PATCH",
            path,
            query=[("fieldManager", field_manager), ("force", "true")],
            body=obj,
            content_type="application/apply-patch+yaml",
        )
    except ApiException as exc:
        if exc.status == 409:
            raise _refused(exc) from exc
        raise
    STORE.observe_written(result)
    return result


def apply_marks(
    namespace: str,
    pod: str,
    annotations: dict[str, str],
    *,
    uid: str,
    field_manager: str = SCALER_MANAGER,
) -> bool:
    """Server-side apply of the annotations ``field_manager`` owns on a pod (an empty mapping
    removes the ones it owned). Never forced: a field another manager owns raises Conflict,
    the same ownership rule ``core.scale_in`` reads from managedFields; any other refusal
    (422 invalid, 403 from an admission webhook) raises Refused. The uid is a precondition,
    so a pod replaced under the same name is not marked. False when the pod is gone."""
    _count("apply", "Pod", namespace)
    meta: dict[str, Any] = {"name": pod, "namespace": namespace}
    if uid:
        meta["uid"] = uid
    if annotations:
        # Left out when empty: the apply then owns no annotation, so those it owned go.
        meta["annotations"] = annotations
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": meta}
    try:
        result: dict[str, Any] = _request(
            "PATCH",
            _path("v1", "Pod", namespace, pod),
            query=[("fieldManager", field_manager)],
            body=body,
            content_type="application/apply-patch+yaml",
        )
    except ApiException as exc:
        if exc.status in _REFUSALS:
            raise _refused(exc) from exc
        if exc.status == 404:
            return False
        raise
    STORE.observe(result)
    return True


def delete(api_version: str, kind: str, namespace: str | None, name: str) -> bool:
    _count("delete", kind, namespace)
    try:
        _request(
            "DELETE",
            _path(api_version, kind, namespace, name),
            body={"propagationPolicy": "Background"},
        )
    except ApiException as exc:
        if exc.status == 404:
            STORE.remember_absent(kind, namespace or "", name)
            return False
        raise
    STORE.observe(
        {"kind": kind, "metadata": {"namespace": namespace or "", "name": name}}, deleted=True
    )
    return True


def patch_status(
    api_version: str,
    kind: str,
    namespace: str,
    name: str,
    status: dict[str, Any],
    *,
    news: bool = False,
) -> dict[str, Any]:
    """Merge-patch the status subresource. Keys we do not send are left to their writer.

    ``news``: its watch event must reach the reconciler (the autoscaler writing a fact the
    reconciler turns into a condition); otherwise the echo of our own write queues nothing."""
    # The autoscaler writes status.autoscaler alone; counted apart, so a benchmark can tell
    # the reconciler's status writes from the autoscaler's.
    _count("status" if set(status) != {"autoscaler"} else "status.autoscaler", kind, namespace)
    result: dict[str, Any] = _request(
        "PATCH",
        _path(api_version, kind, namespace, name) + "/status",
        body={"status": status},
        content_type="application/merge-patch+json",
    )
    if news:
        STORE.observe(result)
    else:
        STORE.observe_written(result)
    return result


def set_scale(
    namespace: str, deployment: str, replicas: int, *, field_manager: str = SCALER_MANAGER
) -> None:
    """Write replicas through the scale subresource: the one path that owns spec.replicas."""
    _count("scale", "Deployment", namespace)
    scale = _request(
        "PATCH",
        _path("apps/v1", "Deployment", namespace, deployment) + "/scale",
        query=[("fieldManager", field_manager)],
        body={"spec": {"replicas": replicas}},
        content_type="application/merge-patch+json",
    )
    # The Scale carries the Deployment's new resourceVersion: keep the cached Deployment in
    # step so the next read (the autoscaler's next tick) does not see the old count.
    known, held = STORE.lookup("Deployment", namespace, deployment)
    if known and held is not None:
        updated = {
            **held,
            "metadata": {
                **held["metadata"],
                "resourceVersion": (scale.get("metadata") or {}).get("resourceVersion"),
            },
            "spec": {**(held.get("spec") or {}), "replicas": replicas},
        }
        STORE.observe_written(updated)


def emit_event(
    involved: dict[str, Any], *, type_: str, reason: str, message: str, component: str = "kubeinfer"
) -> None:
    """A core/v1 Event on ``involved``, posted in the background; failures to record an Event
    never fail the caller."""
    meta = involved["metadata"]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{uuid.uuid4().hex[:12]}",
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": involved["apiVersion"],
            "kind": involved["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
        "firstTimestamp": now[:19] + "Z",
        "lastTimestamp": now[:19] + "Z",
        "count": 1,
    }
    _count("event", "Event", meta["namespace"])
    global _events_pending
    with _events_lock:
        if _events_pending >= EVENTS_PENDING_MAX:
            return  # the API server is far behind; an Event is not worth holding a status
        _events_pending += 1
    _events_pool.submit(_post_event, meta["namespace"], event)


# Events are posted off the caller's thread, as client-go's EventRecorder does: a reconcile
# worker should not wait on a record of what it did (at N=500 that was a third of a create's
# time). Bounded: beyond EVENTS_PENDING_MAX waiting, new Events are dropped.
EVENTS_PENDING_MAX = 1000
_events_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="events")
_events_lock = threading.Lock()
_events_pending = 0


def _post_event(namespace: str, event: dict[str, Any]) -> None:
    global _events_pending
    try:
        with contextlib.suppress(ApiException):
            # A short timeout: at exit, the interpreter waits for the Event in flight.
            _request("POST", f"/api/v1/namespaces/{namespace}/events", body=event, timeout=10)
    finally:
        with _events_lock:
            _events_pending -= 1
