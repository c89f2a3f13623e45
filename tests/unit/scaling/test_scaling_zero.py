"""Scale to zero through step() on virtual time: the idle period, holding at zero (the
router's write is 0 -> 1), the wake, and a whole idle period again after it."""

from __future__ import annotations

import pytest

from kubeinfer.core import api, metrics
from kubeinfer.core.scaling import decide, policy, signals, state, step, zero

IDLE_S = 30.0


def pol(**knobs: float) -> policy.ScalingPolicy:
    spec = api.ScalingSpec(minReplicas=0, scaleToZeroAfterSeconds=int(IDLE_S))
    return policy.from_spec(spec, **knobs)


class Tick:
    """A service with one serving pod (or none) and a router, scraped every 2 s."""

    def __init__(self) -> None:
        self.pol = pol(stable_window_s=12.0, scale_down_stabilization_s=10.0)
        self.memory = step.Memory.fresh(self.pol)
        self.baselines = metrics.Baselines()
        self.done = 0.0
        self.routed = 0.0
        self.now = 1000.0

    def run(
        self,
        current: int,
        *,
        rate: float = 0.0,
        held: float = 0.0,
        router_answers: bool = True,
        pod_ready: bool = True,
    ) -> decide.ScaleResult:
        self.now += 2.0
        self.done += rate * 2.0
        self.routed += rate * 2.0
        raw = {
            "p0": metrics.RawScrape(
                request_success=self.done, request_duration_us=self.done * 10_000
            )
        }
        ready = 1 if current and pod_ready else 0
        pods = self.baselines.signals(raw, self.now) if ready else []
        router = (
            signals.RouterSignals(requests_total=self.routed, held=held) if router_answers else None
        )
        obs = step.Observation(
            replicas=decide.Replicas(current=current, ready=ready, starting=current - ready),
            pods=pods,
            router=router,
        )
        out = step.step(self.pol, obs, self.memory, self.now)
        self.memory = out.memory
        return out.result


def ticks_until(t: Tick, reason: decide.Reason, current: int, limit: int = 100) -> float:
    start = t.now
    for _ in range(limit):
        if t.run(current).reason is reason:
            return t.now - start
    raise AssertionError(f"no {reason} within {limit} ticks")


def test_the_last_replica_goes_after_the_idle_period_and_not_before() -> None:
    t = Tick()
    for _ in range(5):
        assert t.run(1, rate=5.0).desired == 1
    waited = ticks_until(t, decide.Reason.SCALED_TO_ZERO, 1)
    assert IDLE_S <= waited <= IDLE_S + 4.0
    result = t.run(1)  # had the scale not been written yet, it is asked for again
    assert result.desired == 0


def test_at_zero_the_autoscaler_holds_and_never_writes_the_wake() -> None:
    t = Tick()
    ticks_until(t, decide.Reason.SCALED_TO_ZERO, 1)
    for held in (0.0, 3.0, 3.0):
        result = t.run(0, held=held)
        assert (result.desired, result.reason) == (0, decide.Reason.AT_ZERO)
        assert not result.changed
    # No pods to scrape at zero is no metrics failure (the fallback never fires on a wake).
    assert t.memory.state.consecutive_failures == 0


def test_a_woken_service_gets_a_whole_idle_period_again() -> None:
    t = Tick()
    ticks_until(t, decide.Reason.SCALED_TO_ZERO, 1)
    t.run(0)
    # The router wrote 0 -> 1; its held request was flushed between two scrapes, so neither
    # the held gauge nor the pod shows it: the wake itself is the demand.
    woke = t.run(1, pod_ready=False)
    assert (woke.desired, woke.reason) == (1, decide.Reason.WOKEN_BY_ROUTER)
    assert "kubeinfer-router" in woke.message
    waited = ticks_until(t, decide.Reason.SCALED_TO_ZERO, 1)
    assert IDLE_S - 2.0 <= waited <= IDLE_S + 4.0


def test_requests_through_the_router_keep_the_replica() -> None:
    t = Tick()
    for _ in range(40):
        # Few enough that the pod looks idle at every scrape; the router counted them.
        t.routed += 1.0
        assert t.run(1).desired == 1


def test_no_evidence_no_scale_to_zero() -> None:
    t = Tick()
    for _ in range(40):
        assert t.run(1, router_answers=False).desired == 1
    for _ in range(40):
        assert t.run(1, pod_ready=False).desired == 1


def test_load_alone_never_takes_a_service_to_zero() -> None:
    """decide sees a floor of one: an idle window recommends 0 replicas, the floor keeps 1
    until the idle rule says otherwise."""
    assert zero.floor(pol()).min_replicas == 1
    assert zero.floor(policy.from_spec()).min_replicas == 1
    t = Tick()
    t.run(1)
    t.run(1)
    assert t.run(1).desired == 1


@pytest.mark.parametrize(
    ("sample_busy", "router", "previous", "expected"),
    [
        (True, None, None, True),
        (False, None, 5.0, None),
        (False, signals.RouterSignals(requests_total=5.0, held=0.0), 5.0, False),
        (False, signals.RouterSignals(requests_total=6.0, held=0.0), 5.0, True),
        (False, signals.RouterSignals(requests_total=0.0, held=0.0), 5.0, True),  # restarted
        (False, signals.RouterSignals(requests_total=5.0, held=1.0), 5.0, True),
        (False, signals.RouterSignals(requests_total=5.0, held=0.0), None, False),
    ],
)
def test_demand(
    sample_busy: bool,
    router: signals.RouterSignals | None,
    previous: float | None,
    expected: bool | None,
) -> None:
    sample = signals.TickSample(
        time=0.0,
        ready_replicas=1,
        pods_scraped=1,
        queue_depth_total=1.0 if sample_busy else 0.0,
        request_rate_total=0.0,
        queue_time_ms=None,
        gpu_utilization=None,
    )
    assert zero.demand(sample=sample, router=router, previous_requests=previous) is expected


def test_the_hand_off_state_survives_a_restart() -> None:
    s = state.ScalerState(last_demand_time=12.0, router_requests=7.0, previous_replicas=0)
    assert state.ScalerState.from_dict(s.to_dict()) == s


def test_the_router_page_is_summed_over_its_pods() -> None:
    page = (
        "# TYPE kubeinfer_router_requests_total counter\n"
        'kubeinfer_router_requests_total{variant="stable",outcome="success"} 4.0\n'
        'kubeinfer_router_requests_total{variant="stable",outcome="error"} 1.0\n'
        "# TYPE kubeinfer_router_held_requests gauge\n"
        "kubeinfer_router_held_requests 2.0\n"
    )
    got = metrics.parse_router_metrics([page, page])
    assert got == signals.RouterSignals(requests_total=10.0, held=4.0)


def test_holding_the_last_replica_says_when_it_goes() -> None:
    t = Tick()
    t.run(1)
    result = t.run(1)
    assert result.reason is decide.Reason.AT_MIN
    assert f"scaling to zero after {IDLE_S:.0f} s without demand" in result.message
