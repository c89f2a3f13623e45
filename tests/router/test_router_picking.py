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


def test_least_wait_multiplies_by_service_time() -> None:
    # A pod 3x slower is worth sending to only when the fast one has 3 or more waiting:
    # (0 + 1) * 3 against (n + 1) * 1, with a 20 % margin for a tie.
    slow = endpoint("slow", service_s=0.03)
    for queued, expected in ((0, "fast"), (1, "fast"), (3, "slow"), (5, "slow")):
        fast = endpoint("fast", service_s=0.01, in_flight=queued)
        assert pick([slow, fast], Policy.LEAST_WAIT) == expected, queued
    heavy = endpoint("weighted", weight=2.0, in_flight=1)
    assert pick([heavy, endpoint("plain", in_flight=0)], Policy.LEAST_WAIT) == "plain"
    assert pick([endpoint("w4", weight=4.0, in_flight=2), endpoint("p", in_flight=0)],
                Policy.LEAST_WAIT) == "w4"  # fmt: skip


def test_near_equal_waits_are_a_tie_so_identical_pods_share_light_load() -> None:
    # Estimates of identical pods differ by noise: 10 % apart is a tie, not a winner.
    a, b = endpoint("a", service_s=0.010), endpoint("b", service_s=0.011)
    assert {pick([a, b], Policy.LEAST_WAIT, seed) for seed in range(40)} == {"a", "b"}
    c = endpoint("c", service_s=0.005)
    assert {pick([a, c], Policy.LEAST_WAIT, seed) for seed in range(40)} == {"c"}


def test_unmeasured_pods_count_as_the_fleet_median_or_as_their_rival() -> None:
    new = endpoint("new")
    measured = endpoint("measured", service_s=0.1, in_flight=1)
    # As its rival: (0 + 1) * 0.1 against (1 + 1) * 0.1.
    assert pick([new, measured], Policy.LEAST_WAIT) == "new"
    # As the fleet's median: (0 + 1) * 0.5 against (1 + 1) * 0.1.
    assert pick([new, measured], Policy.LEAST_WAIT, default_service_s=0.5) == "measured"
    other = endpoint("other", in_flight=2)
    assert pick([new, other], Policy.LEAST_WAIT) == "new"  # neither measured: queues decide


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


def lone(ep: picking.Endpoint, latency_s: float, now: float = 0.0) -> None:
    picking.finished(ep, ticket=picking.started(ep), latency_s=latency_s, now=now)


def warmed(key: str) -> picking.Endpoint:
    ep = endpoint(key)
    for _ in range(picking.SERVICE_WARMUP):
        lone(ep, 9.9)  # connection setup and lazy start: not service time
    assert not ep.window
    return ep


def test_service_time_is_latency_per_place_in_the_queue() -> None:
    ep = warmed("a")
    for _ in range(picking.SERVICE_MIN_SAMPLES - 1):
        lone(ep, 0.020)
    assert ep.service_s is None  # too few samples to be a measurement yet
    lone(ep, 0.020)
    assert ep.service_s == pytest.approx(0.020) and ep.in_flight == 0
    # Three sent together: the second waited for about 1.5 services, the third for 2.5.
    tickets = [picking.started(ep) for _ in range(3)]
    assert tickets == [0, 1, 2]
    for ticket, latency in zip(tickets, (0.020, 0.030, 0.050), strict=True):
        picking.finished(ep, ticket=ticket, latency_s=latency, now=0.0)
    assert [x for _, x in ep.window][-3:] == pytest.approx([0.020, 0.020, 0.020])
    assert ep.service_s == pytest.approx(0.020) and ep.in_flight == 0


def test_service_time_is_the_median_of_recent_samples() -> None:
    ep = warmed("a")
    lone(ep, 0.200)  # a slow one
    for latency in (0.010, 0.012, 0.011, 0.050, 0.010, 0.013, 0.090):  # scheduling noise
        lone(ep, latency)
    assert ep.service_s == pytest.approx(0.013)  # the (upper) median of eight
    for _ in range(picking.SERVICE_WINDOW):
        lone(ep, 0.030)  # the pod got slower: the window forgets what it was
    assert ep.service_s == pytest.approx(0.030)


def test_failed_or_unserved_requests_do_not_count() -> None:
    ep = warmed("a")
    ticket = picking.started(ep)
    picking.finished(ep, ticket=ticket, latency_s=0.001, now=0.0, completed=False)
    assert ep.in_flight == 0 and not ep.window


def test_old_samples_are_forgotten_so_an_avoided_pod_is_measured_afresh() -> None:
    ep = warmed("a")
    for t in range(picking.SERVICE_MIN_SAMPLES):
        lone(ep, 0.300, now=float(t))
    assert ep.service_s == pytest.approx(0.300)
    picking.roll_service(ep, picking.SERVICE_MAX_AGE_S + 1.5)  # the first two are too old
    assert ep.service_s is None and len(ep.window) == 2  # unmeasured: counts as average
    lone(ep, 0.010, now=20.0)
    lone(ep, 0.010, now=20.0)
    assert ep.service_s == pytest.approx(0.300)  # the upper median of four
    picking.roll_service(ep, 20.0 + picking.SERVICE_MAX_AGE_S)
    assert ep.service_s is None  # two fresh samples left: not a measurement yet


def test_fleet_service_is_the_median_of_measured_pods() -> None:
    eps = [
        endpoint("a", service_s=0.001),
        endpoint("b", service_s=0.005),
        endpoint("c", service_s=0.009),
        endpoint("d"),
    ]
    assert picking.fleet_service(eps) == 0.005
    assert picking.fleet_service([endpoint("x")]) is None
