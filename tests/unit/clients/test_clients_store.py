"""The watch-fed store: newest copy wins, deletions stick, listings drop what is gone."""

from __future__ import annotations

from typing import Any

from kubeinfer.clients.store import Store
from kubeinfer.core import builders


def obj(kind: str, name: str, rv: int, *, isvc: str = "svc", **extra: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "ns",
            "resourceVersion": str(rv),
            "labels": {builders.LABEL_ISVC: isvc},
        },
        **extra,
    }


def test_a_miss_is_not_an_absence() -> None:
    store = Store()
    assert store.lookup("Deployment", "ns", "a") == (False, None)
    store.remember_absent("Deployment", "ns", "a")
    assert store.lookup("Deployment", "ns", "a") == (True, None)


def test_an_older_copy_never_replaces_a_newer_one() -> None:
    store = Store()
    store.observe(obj("Deployment", "a", 20, spec={"replicas": 3}))
    store.observe(obj("Deployment", "a", 12, spec={"replicas": 1}))  # a late event
    held = store.lookup("Deployment", "ns", "a")[1]
    assert held is not None and held["spec"]["replicas"] == 3
    store.observe(obj("Deployment", "a", 21, spec={"replicas": 5}))
    held = store.lookup("Deployment", "ns", "a")[1]
    assert held is not None and held["spec"]["replicas"] == 5


def test_a_fallback_get_does_not_undo_a_known_object() -> None:
    store = Store()
    store.observe(obj("Service", "a", 7))
    store.remember("Service", "ns", "a", None)  # a GET that raced a create
    assert store.lookup("Service", "ns", "a")[1] is not None


def test_deleted_objects_stay_deleted_against_late_copies() -> None:
    store = Store()
    store.observe(obj("ConfigMap", "a", 5))
    store.observe(obj("ConfigMap", "a", 9), deleted=True)
    store.observe(obj("ConfigMap", "a", 8))  # older than the deletion
    assert store.lookup("ConfigMap", "ns", "a") == (True, None)
    store.observe(obj("ConfigMap", "a", 10))  # re-created
    assert store.lookup("ConfigMap", "ns", "a")[1] is not None


def test_pods_are_grouped_by_their_service() -> None:
    store = Store()
    store.observe(obj("Pod", "p1", 1, isvc="one"))
    store.observe(obj("Pod", "p2", 2, isvc="one"))
    store.observe(obj("Pod", "q1", 3, isvc="two"))
    store.observe({"kind": "Pod", "metadata": {"name": "x", "namespace": "ns"}})  # not ours
    assert sorted(p["metadata"]["name"] for p in store.pods("ns", "one")) == ["p1", "p2"]
    store.observe(obj("Pod", "p1", 4, isvc="one"), deleted=True)
    assert [p["metadata"]["name"] for p in store.pods("ns", "one")] == ["p2"]
    store.forget_service("ns", "two")
    assert store.pods("ns", "two") == []


def test_a_listing_drops_what_a_broken_watch_never_reported() -> None:
    store = Store()
    store.observe(obj("Pod", "gone", 3))
    store.observe(obj("Pod", "kept", 4))
    store.observe(obj("Pod", "newer", 60))  # created after the listing was taken
    store.observe(obj("Deployment", "gone", 5))
    assert not store.pods_primed
    store.replace("v1", "Pod", [obj("Pod", "kept", 4)], list_rv=50)
    store.replace("apps/v1", "Deployment", [], list_rv=50)
    assert store.pods_primed
    assert sorted(p["metadata"]["name"] for p in store.pods("ns", "svc")) == ["kept", "newer"]
    # Listed in full: what the listing lacks is known to be absent.
    assert store.lookup("Deployment", "ns", "gone") == (True, None)
    assert store.lookup("Service", "ns", "never-listed") == (False, None)


def test_listed_items_get_their_type_back() -> None:
    store = Store()
    item = {"metadata": {"name": "a", "namespace": "ns", "resourceVersion": "3"}}
    store.replace("apps/v1", "Deployment", [item], list_rv=3)
    held = store.lookup("Deployment", "ns", "a")[1]
    assert held is not None and (held["apiVersion"], held["kind"]) == ("apps/v1", "Deployment")


def test_managed_fields_are_not_held() -> None:
    store = Store()
    big = obj("Deployment", "a", 3)
    big["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    store.observe(big)
    held = store.lookup("Deployment", "ns", "a")[1]
    assert held is not None and "managedFields" not in held["metadata"]
    assert "managedFields" in big["metadata"]  # the caller's copy is left alone


def test_a_pod_keeps_only_the_managed_fields_that_own_its_scale_in_marks() -> None:
    store = Store()
    cost = "f:controller.kubernetes.io/pod-deletion-cost"
    pod = obj("Pod", "p", 3)
    pod["metadata"]["managedFields"] = [
        {"manager": "kube-controller-manager", "fieldsV1": {"f:spec": {}}},
        {
            "manager": "karpenter",
            "operation": "Update",
            "fieldsV1": {"f:metadata": {"f:annotations": {cost: {}, "f:x": {}}}},
        },
    ]
    store.observe(pod)
    [held] = store.pods("ns", "svc")
    assert held["metadata"]["managedFields"] == [
        {
            "manager": "karpenter",
            "operation": "Update",
            "fieldsV1": {"f:metadata": {"f:annotations": {cost: {}}}},
        }
    ]
    # A pod without such entries holds no managedFields at all.
    pod = obj("Pod", "q", 4)
    pod["metadata"]["managedFields"] = [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}]
    store.observe(pod)
    held = next(p for p in store.pods("ns", "svc") if p["metadata"]["name"] == "q")
    assert "managedFields" not in held["metadata"]


def test_pods_are_held_without_their_spec() -> None:
    store = Store()
    pod = obj(
        "Pod",
        "p",
        3,
        spec={"nodeName": "n1", "containers": [{"name": "server", "image": "x"}]},
        status={"podIP": "127.1.0.5", "conditions": [{"type": "Ready", "status": "True"}]},
    )
    store.observe(pod)
    [held] = store.pods("ns", "svc")
    assert held["spec"] == {"nodeName": "n1"}
    assert held["status"] == pod["status"]
    assert held["metadata"] == pod["metadata"]


def test_the_echo_of_our_own_write_is_not_news() -> None:
    store = Store()
    assert store.observe(obj("Deployment", "a", 3))  # a watch event: news
    store.observe_written(obj("Deployment", "a", 5))  # what our apply returned
    assert not store.observe(obj("Deployment", "a", 5))  # its watch event: the echo
    assert store.observe(obj("Deployment", "a", 6))  # the controller's status update
    store.observe_written(obj("Deployment", "a", 8))
    assert store.observe(obj("Deployment", "a", 7))  # an older event: consumed, news
    assert store.observe(obj("Deployment", "a", 8), deleted=True)


def test_an_unchanged_copy_leaves_the_held_one_in_place() -> None:
    """A resync lists every object again: the copy already held (same resourceVersion) stays,
    so the listing's copies are freed with their page instead of replacing the store."""
    store = Store()
    store.observe(obj("Deployment", "a", 7, spec={"replicas": 3}))
    held = store.lookup("Deployment", "ns", "a")[1]
    store.observe(obj("Deployment", "a", 7, spec={"replicas": 3}))
    assert store.lookup("Deployment", "ns", "a")[1] is held
    store.observe(obj("Pod", "p", 7, isvc="svc", status={"phase": "Running"}))
    [pod] = store.pods("ns", "svc")
    store.observe(obj("Pod", "p", 7, isvc="svc", status={"phase": "Running"}))
    assert store.pods("ns", "svc")[0] is pod


def test_held_objects_share_their_keys_and_short_strings() -> None:
    """Each watch event is decoded on its own; held, objects of a kind share one copy of each
    key and of short values ("TCP"), about half the memory of a Deployment."""
    store = Store()
    ports = [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    for name, rv in (("a", 1), ("b", 2)):
        decoded = obj("Deployment", name, rv, spec={"ports": [dict(p) for p in ports]})
        # Distinct string objects, as two json.loads calls make them.
        decoded["spec"]["ports"][0]["protocol"] = "".join(["T", "CP"])
        store.observe(decoded)
    a, b = (store.lookup("Deployment", "ns", n)[1] for n in ("a", "b"))
    assert a is not None and b is not None
    (pa,), (pb,) = a["spec"]["ports"], b["spec"]["ports"]
    assert pa == pb and pa["protocol"] is pb["protocol"]
    assert next(k for k in pa if k == "containerPort") is next(
        k for k in pb if k == "containerPort"
    )
    # Long strings (messages, config files) are mostly unique: held as they came.
    long = "x" * 200
    store.observe(obj("Deployment", "c", 3, note="".join([long])))
    held = store.lookup("Deployment", "ns", "c")[1]
    assert held is not None and held["note"] == long


def test_a_listing_taken_in_page_by_page_drops_what_is_gone() -> None:
    store = Store()
    store.observe(obj("Service", "gone", 3))
    seen = store.take_in("v1", "Service", [obj("Service", "a", 5)])
    seen |= store.take_in("v1", "Service", [obj("Service", "b", 6)])
    store.prune("Service", seen, 10)
    assert store.lookup("Service", "ns", "gone") == (True, None)
    assert store.lookup("Service", "ns", "a")[1] is not None
    assert store.lookup("Service", "ns", "b")[1] is not None
