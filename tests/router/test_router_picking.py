"""picking: the three policies, the load state they read, and the service-rate estimate."""

from __future__ import annotations

import collections
import random

import pytest

from kubeinfer_router import config, picking

Policy = config.Policy


def endpoint(key: str, **state: float) -> picking.Endpoint:
    ep = picking.Endpoint(key=key, host="127.0.0.1", port=8000, metrics_port=8002, variant="v")
    for name, value in state.items():
        setattr(ep, name, value)
    return ep


def pick(eps: list[picking.Endpoint], policy: Policy, seed: int = 0, **kw: object) -> str | None:
    ep, _ = picking.pick(eps, policy=policy, rng=random.Random(seed), now=100.0, **kw)  # type: ignore[arg-type]
    return None if ep is None else ep.key


def test_no_candidate_and_single_candidate() -> None:
    assert picking.pick([], policy=Policy.LEAST_WAIT, rng=random.Random(), now=0) == (
        None,
        picking.Reason.NONE,
    )
    only = endpoint("a")
    assert picking.pick([only], policy=Policy.LEAST_WAIT, rng=random.Random(), now=0) == (
        only,
        picking.Reason.SINGLE,
    )


@pytest.mark.parametrize("policy", list(Policy))
def test_draining_and_unready_endpoints_get_no_new_work(policy: Policy) -> None:
    eps = [endpoint("a", draining=True), endpoint("b", ready=False), endpoint("c", in_flight=50)]
    assert {pick(eps, policy, seed) for seed in range(50)} == {"c"}


def test_least_wait_prefers_the_shorter_queue_of_the_pair() -> None:
    idle, busy = endpoint("idle"), endpoint("busy", in_flight=3)
    assert {pick([idle, busy], Policy.LEAST_WAIT, seed) for seed in range(20)} == {"idle"}


def test_least_wait_counts_queued_requests_of_other_clients() -> None:
    mine = endpoint("mine", in_flight=2)
    theirs = endpoint("theirs", external_queued=5)
    assert pick([mine, theirs], Policy.LEAST_WAIT) == "mine"
    # In-flight-only P2C cannot see the other clients' queue.
    assert pick([mine, theirs], Policy.INFLIGHT_P2C) == "theirs"


def test_least_wait_divides_by_capacity() -> None:
    # A pod 3x slower is worth sending to only when the fast one has 3 or more waiting:
    # (0 + 1) / 1 = 1 against (n + 1) / 3.
    slow = endpoint("slow", rate=1.0)
    for queued, expected in ((0, "fast"), (1, "fast"), (3, "slow"), (5, "slow")):
        fast = endpoint("fast", rate=3.0, in_flight=queued)
        assert pick([slow, fast], Policy.LEAST_WAIT) == expected, queued
    heavy = endpoint("weighted", weight=2.0, in_flight=1)
    assert pick([heavy, endpoint("plain", in_flight=0)], Policy.LEAST_WAIT) == "plain"
    assert pick([endpoint("w4", weight=4.0, in_flight=2), endpoint("p", in_flight=0)],
                Policy.LEAST_WAIT) == "w4"  # fmt: skip


def test_near_equal_waits_are_a_tie_so_identical_pods_share_light_load() -> None:
    # Rate estimates of identical pods differ by noise: 10 % apart is a tie, not a winner.
    a, b = endpoint("a", rate=100.0), endpoint("b", rate=110.0)
    assert {pick([a, b], Policy.LEAST_WAIT, seed) for seed in range(40)} == {"a", "b"}
    c = endpoint("c", rate=200.0)
    assert {pick([a, c], Policy.LEAST_WAIT, seed) for seed in range(40)} == {"c"}


def test_unmeasured_pods_use_the_default_rate() -> None:
    new = endpoint("new")
    measured = endpoint("measured", rate=10.0, in_flight=1)
    # Without a default the new pod counts as rate 1: (0 + 1) / 1 > (1 + 1) / 10.
    assert pick([new, measured], Policy.LEAST_WAIT) == "measured"
    assert pick([new, measured], Policy.LEAST_WAIT, default_rate=10.0) == "new"


def test_power_of_two_spreads_equal_pods_evenly() -> None:
    eps = [endpoint(k) for k in "abcd"]
    rng = random.Random(7)
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(4000):
        ep, reason = picking.pick(eps, policy=Policy.LEAST_WAIT, rng=rng, now=0)
        assert ep is not None and reason is picking.Reason.LEAST_WAIT
        counts[ep.key] += 1
    assert all(800 < n < 1200 for n in counts.values()), counts


def test_random_ignores_load() -> None:
    eps = [endpoint("a", in_flight=100), endpoint("b")]
    assert {pick(eps, Policy.RANDOM, seed) for seed in range(50)} == {"a", "b"}


def test_ejected_endpoints_are_a_last_resort() -> None:
    bad, good = endpoint("bad"), endpoint("good", in_flight=20)
    picking.eject(bad, 99.0, for_s=5.0)
    assert {pick([bad, good], Policy.LEAST_WAIT, s) for s in range(20)} == {"good"}
    ep, reason = picking.pick([bad], policy=Policy.LEAST_WAIT, rng=random.Random(), now=100.0)
    assert (ep, reason) == (bad, picking.Reason.EJECTED)
    ep, _ = picking.pick([bad], policy=Policy.LEAST_WAIT, rng=random.Random(), now=105.0)
    assert ep is bad


def test_exclude_skips_endpoints_already_tried() -> None:
    eps = [endpoint("a"), endpoint("b", in_flight=9)]
    assert pick(eps, Policy.LEAST_WAIT, exclude={"a"}) == "b"
    assert pick(eps, Policy.LEAST_WAIT, exclude={"a", "b"}) is None


def test_observe_queue_subtracts_our_own_requests() -> None:
    ep = endpoint("a")
    picking.observe_queue(ep, pending=5, own_in_flight=3, now=1.0)
    assert ep.external_queued == 2
    picking.observe_queue(ep, pending=1, own_in_flight=3, now=1.25)
    assert ep.external_queued == 0
    picking.observe_queue(ep, pending=4, own_in_flight=0, now=1.5)
    picking.expire_queue(ep, 2.0, interval_s=0.25)
    assert ep.external_queued == 4  # 0.5 s old: still fresh
    picking.expire_queue(ep, 2.6, interval_s=0.25)
    assert ep.external_queued == 0  # older than 4 intervals: the pod stopped answering


def test_service_rate_is_completions_per_busy_second() -> None:
    ep = endpoint("a")
    now = 0.0
    # Ten requests one after another, each 20 ms, with idle gaps that must not count.
    for _ in range(10):
        picking.started(ep, now)
        now += 0.02
        picking.finished(ep, now)
        now += 0.5
    picking.roll_rate(ep, now, fleet_rate=None)
    assert ep.rate == pytest.approx(50.0)
    # Overlapping requests: 6 in flight together for 60 ms -> 100 per busy second.
    for _ in range(6):
        picking.started(ep, now)
    now += 0.06
    for _ in range(6):
        picking.finished(ep, now)
    picking.roll_rate(ep, now, fleet_rate=None)
    assert ep.rate == pytest.approx(50.0 + picking.RATE_ALPHA * (100.0 - 50.0))


def test_failed_connections_do_not_count_as_service() -> None:
    ep = endpoint("a")
    picking.started(ep, 0.0)
    picking.finished(ep, 0.001, completed=False)
    assert ep.in_flight == 0 and ep.completed == 0


def test_rate_waits_for_evidence_and_idle_pods_drift_to_the_fleet() -> None:
    ep = endpoint("a")
    picking.started(ep, 0.0)
    picking.finished(ep, 0.01)
    picking.roll_rate(ep, 0.25, fleet_rate=None)
    assert ep.rate is None  # one completion in 10 ms is not enough to judge
    ep.rate = 10.0
    ep.busy_s, ep.completed = 0.0, 0
    picking.roll_rate(ep, 0.5, fleet_rate=30.0)
    assert ep.rate == pytest.approx(10.0 + picking.RATE_DRIFT * 20.0)


def test_a_stuck_request_lowers_the_rate_after_the_max_window() -> None:
    ep = endpoint("a", rate=100.0)
    picking.started(ep, 0.0)
    picking.roll_rate(ep, picking.RATE_MAX_WINDOW_S + 1.0, fleet_rate=100.0)
    assert ep.rate is not None and ep.rate < 100.0 * (1 - picking.RATE_ALPHA) + 1.0
    assert ep.busy_since == picking.RATE_MAX_WINDOW_S + 1.0  # the window restarts


def test_fleet_rate_is_the_median_of_measured_pods() -> None:
    eps = [endpoint("a", rate=1.0), endpoint("b", rate=5.0), endpoint("c", rate=9.0), endpoint("d")]
    assert picking.fleet_rate(eps) == 5.0
    assert picking.fleet_rate([endpoint("x")]) is None
