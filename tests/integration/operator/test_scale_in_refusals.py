"""Scale-in marks the real API server refuses: the autoscaler's write path backs off.

No operator process: the autoscaler's own mark writer (``Autoscaler._mark``, through
``clients.kube.apply_marks``) against the local API server, on bare pods. A 409 comes from
server-side apply's ownership check when another manager ("karpenter") owns the deletion cost
that the store has not seen yet; a 422 from the API server's validation of the cost (a 32-bit
integer). Either way the plan returned backs off, names the pod and the server's reason, and
the pod is remembered so it is not written again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from kubeinfer.clients import kube
from kubeinfer.core import scale_in
from kubeinfer.engines import autoscaler
from tests.conftest import ClusterHandle

COST, DRAIN = scale_in.DELETION_COST, scale_in.DRAINING


@pytest.fixture
def api(cluster: ClusterHandle) -> Iterator[None]:
    before = kube._client
    kube._client = cluster.api
    yield
    kube._client = before


def bare_pod(cluster: ClusterHandle, ns: str, name: str) -> client.V1Pod:
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="none")]),
    )
    created: client.V1Pod = cluster.core.create_namespaced_pod(ns, pod)
    return created


def view(pod: client.V1Pod, load: float = 0.0) -> scale_in.PodView:
    """The pod as a store that has not yet seen any other manager's write would show it."""
    return scale_in.PodView(
        name=pod.metadata.name, uid=pod.metadata.uid, ready=True, load=load, annotations={}
    )


def test_a_conflict_with_another_manager_backs_off_and_names_it(
    cluster: ClusterHandle, namespace: str, api: None
) -> None:
    idle, busy = bare_pod(cluster, namespace, "idle"), bare_pod(cluster, namespace, "busy")
    cluster.core.patch_namespaced_pod(
        "idle", namespace, {"metadata": {"annotations": {COST: "100"}}}, field_manager="karpenter"
    )
    plan = scale_in.plan(pods=[view(idle), view(busy, 3)], remove=1, manager=kube.SCALER_MANAGER)
    assert plan.outcome is scale_in.Outcome.MARKED and plan.chosen == ("idle",)
    refused: dict[str, str] = {}
    after = autoscaler.Autoscaler._mark(namespace, "svc", plan, refused)
    assert after.outcome is scale_in.Outcome.BACKED_OFF and after.chosen == ()
    assert set(refused) == {"idle"} and refused["idle"].startswith("409 Conflict"), refused
    assert "karpenter" in refused["idle"], refused
    assert "refused the scale-in marks on idle (409 Conflict" in after.summary, after.summary
    # Nothing of ours on the pod; karpenter's cost stands.
    pod = cluster.core.read_namespaced_pod("idle", namespace)
    assert pod.metadata.annotations == {COST: "100"}
    assert not any(e.manager == kube.SCALER_MANAGER for e in pod.metadata.managed_fields or [])
    # The next plan backs off without writing the refused pod again.
    again = scale_in.plan(
        pods=[view(idle), view(busy, 3)], remove=1, manager=kube.SCALER_MANAGER, refused=refused
    )
    assert again.outcome is scale_in.Outcome.BACKED_OFF and not again.writes


def test_an_invalid_value_is_refused_not_raised(
    cluster: ClusterHandle, namespace: str, api: None
) -> None:
    pod = bare_pod(cluster, namespace, "p")
    bad = scale_in.Plan(
        outcome=scale_in.Outcome.MARKED,
        chosen=("p",),
        writes={"p": {COST: "minus-one", DRAIN: "true"}},
        uids={"p": pod.metadata.uid},
    )
    refused: dict[str, str] = {}
    after = autoscaler.Autoscaler._mark(namespace, "svc", bad, refused)
    assert after.outcome is scale_in.Outcome.BACKED_OFF
    assert refused["p"].startswith("422 Invalid"), refused
    assert "must be a 32bit integer" in refused["p"], refused
    assert not (cluster.core.read_namespaced_pod("p", namespace).metadata.annotations or {})
