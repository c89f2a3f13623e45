"""core.scale_in: which pods a scale-in removes, and when the autoscaler backs off."""

from __future__ import annotations

from typing import Any

import pytest

from kubeinfer.core import scale_in
from kubeinfer_router import inventory

ME = "kubeinfer-autoscaler"
COST, DRAIN = scale_in.DELETION_COST, scale_in.DRAINING
MARKS = {COST: scale_in.MARKED_COST, DRAIN: "true"}


def pod(
    name: str,
    load: float | None = 0.0,
    *,
    ready: bool = True,
    marks: dict[str, str] | None = None,
    owner: str | None = None,
) -> scale_in.PodView:
    """A pod; ``marks`` written by ``owner`` (ourselves unless said)."""
    owners: dict[str, frozenset[str]] = {}
    if marks:
        owners = {k: frozenset({owner or ME}) for k in marks}
    return scale_in.PodView(
        name=name,
        uid=f"uid-{name}",
        ready=ready,
        load=load,
        annotations=dict(marks or {}),
        owners=owners,
    )


def plan(pods: list[scale_in.PodView], remove: int) -> scale_in.Plan:
    return scale_in.plan(pods=pods, remove=remove, manager=ME)


def test_the_router_reads_the_mark_the_operator_writes() -> None:
    assert scale_in.DRAINING == inventory.DRAINING_ANNOTATION


@pytest.mark.parametrize(
    "pods,remove,chosen",
    [
        # The least loaded go; load is queued + executing from the scrape.
        ([pod("a", 3), pod("b", 0), pod("c", 1)], 1, ("b",)),
        ([pod("a", 3), pod("b", 0), pod("c", 1)], 2, ("b", "c")),
        # Ties by name, so a repeated tick chooses the same pod.
        ([pod("b", 0), pod("a", 0)], 1, ("a",)),
        # A pod whose scrape failed may be too busy to answer: it goes last.
        ([pod("a", None), pod("b", 5)], 1, ("b",)),
        # Not-Ready pods are the ReplicaSet controller's first choice whatever their cost:
        # they count towards the removal and are never marked.
        ([pod("a", 3), pod("b", 0), pod("s", None, ready=False)], 1, ()),
        ([pod("a", 3), pod("b", 0), pod("s", None, ready=False)], 2, ("b",)),
        # A pod already marked (the router has been draining it) stays chosen, even when
        # another is idler now.
        ([pod("a", 0), pod("b", 2, marks=MARKS)], 1, ("b",)),
        # Never more than there are Ready pods.
        ([pod("a", 1)], 3, ("a",)),
    ],
)
def test_the_least_loaded_ready_pods_are_chosen(
    pods: list[scale_in.PodView], remove: int, chosen: tuple[str, ...]
) -> None:
    out = plan(pods, remove)
    assert out.outcome is scale_in.Outcome.MARKED
    assert out.chosen == chosen


def test_chosen_pods_get_both_marks_and_stale_marks_go() -> None:
    out = plan([pod("a", 4), pod("b", 0), pod("c", 2, marks=MARKS)], 1)
    # c is sticky only while ours; here it is ours, so it stays chosen and nothing is written.
    assert out.chosen == ("c",) and dict(out.writes) == {}
    out = plan([pod("a", 4), pod("b", 0), pod("c", 2, marks=MARKS)], 2)
    assert out.chosen == ("c", "b")
    assert dict(out.writes) == {"b": MARKS}
    assert out.uids == {"b": "uid-b"}
    assert out.summary == "Removing the least loaded: c (2 in flight), b (0 in flight)."


def test_a_partly_marked_pod_is_written_again() -> None:
    half = pod("a", 0, marks={DRAIN: "true"})
    assert dict(plan([half, pod("b", 1)], 1).writes) == {"a": MARKS}


def test_no_scale_in_clears_what_we_marked_and_nothing_else() -> None:
    pods = [
        pod("a", marks=MARKS),  # marked, then the scale-in was cancelled: it survived
        pod("b"),
        # A user's own draining mark is theirs to remove.
        pod("c", marks={DRAIN: "true"}, owner="kubectl-annotate"),
    ]
    out = plan(pods, 0)
    assert out.outcome is scale_in.Outcome.CLEARED
    assert dict(out.writes) == {"a": {}}
    assert out.summary == "Cleared the scale-in marks of a."
    # Nothing to clear: nothing written, nothing said.
    assert plan([pod("b")], 0) == scale_in.Plan(outcome=scale_in.Outcome.CLEARED)


@pytest.mark.parametrize(
    "other",
    [
        pod("x", marks={COST: "10"}, owner="karpenter"),
        # Shared with us (the same value applied by both) is still not ours alone.
        scale_in.PodView(
            name="x",
            ready=True,
            load=0,
            annotations={COST: "-1"},
            owners={COST: frozenset({ME, "karpenter"})},
        ),
        # A cost with no owner on record: we cannot tell it is ours.
        scale_in.PodView(name="x", ready=True, load=0, annotations={COST: "3"}),
    ],
)
def test_backs_off_when_another_manager_owns_the_cost(other: scale_in.PodView) -> None:
    out = plan([pod("a", 5), pod("b", 0), other], 1)
    assert out.outcome is scale_in.Outcome.BACKED_OFF
    # No marks anywhere; at most our own share of a shared cost is given up.
    assert out.chosen == () and all(w == {} for w in out.writes.values())
    assert set(out.writes) <= {n for n in ("x",) if other.owned_by(ME)}
    assert "another field manager owns controller.kubernetes.io/pod-deletion-cost on x (" in (
        out.summary
    )


def test_backing_off_still_removes_our_own_earlier_marks() -> None:
    out = plan([pod("a", marks=MARKS), pod("x", marks={COST: "10"}, owner="karpenter")], 1)
    assert out.outcome is scale_in.Outcome.BACKED_OFF
    assert dict(out.writes) == {"a": {}}
    assert "x (karpenter)" in out.summary


def test_a_pod_whose_marks_the_api_server_refused_is_backed_off_and_left_alone() -> None:
    why = "422 Invalid: metadata.annotations: Invalid value"
    ours = pod("b", 0, marks=MARKS)
    refused = scale_in.plan(
        pods=[pod("a", 0), ours, pod("c", 5, marks=MARKS)],
        remove=1,
        manager=ME,
        refused={"b": why, "gone": "409 Conflict"},
    )
    assert refused.outcome is scale_in.Outcome.BACKED_OFF and refused.chosen == ()
    # Our marks elsewhere still go; the refused pod is not written again (it would be
    # refused again), and a refused pod no longer there is not named.
    assert refused.writes == {"c": {}}
    assert refused.summary == (
        f"Not choosing the pods to remove: the API server refused the scale-in marks on b ({why})."
    )


def test_a_refusal_while_marking_backs_the_plan_off() -> None:
    marked = plan([pod("a", 3), pod("b", 0)], 1)
    assert marked.outcome is scale_in.Outcome.MARKED
    after = scale_in.refusal(plan=marked, pod="b", why="409 Conflict: owned by karpenter")
    assert after.outcome is scale_in.Outcome.BACKED_OFF and after.chosen == ()
    assert after.summary.endswith(
        "refused the scale-in marks on b (409 Conflict: owned by karpenter)."
    )


def test_a_long_list_is_named_briefly() -> None:
    pods = [pod(f"p{i}", 0) for i in range(10)]
    out = plan(pods, 7)
    assert len(out.chosen) == 7
    assert out.summary.endswith("p3 (0 in flight) and 3 more.")


@pytest.mark.parametrize(
    "live,current,desired,remove",
    [
        (4, 4, 3, 1),  # a scale-in now
        (4, 4, 2, 2),
        (5, 4, 3, 2),  # an earlier scale-in not carried out yet: both together
        (3, 4, 3, 0),  # the pod the Deployment controller has not created is the one dropped
        (4, 4, 4, 0),  # settled: marks left on survivors go
        (3, 4, 5, 0),  # scaling up
        (5, 4, 4, None),  # the ReplicaSet controller has not removed the pod yet: keep marks
    ],
)
def test_removal(live: int, current: int, desired: int, remove: int | None) -> None:
    assert scale_in.removal(live=live, current=current, desired=desired) == remove


MANAGED: list[dict[str, Any]] = [
    {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:containers": {}}},
    },
    {
        "manager": ME,
        "operation": "Apply",
        "fieldsV1": {"f:metadata": {"f:annotations": {f"f:{COST}": {}, f"f:{DRAIN}": {}}}},
    },
    {
        "manager": "karpenter",
        "operation": "Update",
        "fieldsV1": {"f:metadata": {"f:annotations": {f"f:{COST}": {}, "f:other": {}}}},
    },
]


def test_ownership_is_read_from_managed_fields() -> None:
    raw = {"metadata": {"name": "a", "uid": "u", "annotations": MARKS, "managedFields": MANAGED}}
    seen = scale_in.view(raw, ready=True, load=1.5)
    assert seen.owners == {COST: frozenset({ME, "karpenter"}), DRAIN: frozenset({ME})}
    assert seen.owned_by(ME) and not seen.owned_by("kubectl")
    assert (seen.name, seen.uid, seen.load) == ("a", "u", 1.5)


def test_the_store_keeps_only_the_entries_that_own_a_mark() -> None:
    kept = scale_in.mark_fields(MANAGED)
    assert [e["manager"] for e in kept] == [ME, "karpenter"]
    # Cut down to the marks, and still read the same.
    assert kept[1]["fieldsV1"] == {"f:metadata": {"f:annotations": {f"f:{COST}": {}}}}
    assert scale_in.owners(kept) == scale_in.owners(MANAGED)
    assert scale_in.mark_fields(None) == []
