"""The canary (core/canary.py): progression on virtual time, weights, replicas, its Deployment
and router.yaml's two variants; the API rule that a canary needs the router; the router's
per-variant metrics read back (core/metrics.py)."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
import yaml

from kubeinfer.core import (
    analysis,
    api,
    builders,
    canary,
    children,
    config,
    crdgen,
    metrics,
    router,
)

OWNER = builders.Owner(name="m", namespace="ns", uid="u")
RUNTIME = api.InferenceRuntimeSpec(
    image="ghcr.io/kubeinfer/onnx-server:1",
    formats=[api.RuntimeFormat(name=api.ModelFormat.ONNX)],
    batching_config=api.BatchingConfigKind.KUBEINFER_JSON,
)
CONFIG = config.OperatorConfig(init_image="ghcr.io/kubeinfer/operator:9")
CANARY = {
    "model": {"storageUri": "https://h/m2.onnx", "version": 2},
    "steps": [10, 25, 50],
    "analysis": {"intervalSeconds": 10, "failureLimit": 2, "minRequests": 20},
}


def spec(**extra: Any) -> api.InferenceServiceSpec:
    return api.parse_spec(
        {
            "model": {"name": "m", "format": "onnx", "storageUri": "https://h/m.onnx"},
            "router": {"enabled": True},
            "canary": CANARY,
            **extra,
        }
    )


def window(requests: int, errors: int = 0, p99_ms: float = 10.0) -> analysis.Window:
    return analysis.Window(requests=requests, errors=errors, p99_s=p99_ms / 1000)


def test_a_canary_needs_the_router_naming_the_field() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"canary needs router\.enabled"):
        spec(router={"enabled": False})
    with pytest.raises(pydantic.ValidationError, match="must increase"):
        spec(canary={**CANARY, "steps": [50, 25]})
    defaults = api.CanarySpec.model_validate({"model": {"storageUri": "https://h/x.onnx"}})
    assert defaults.steps == [10, 25, 50]
    assert defaults.analysis.failure_limit == 3


def test_the_crd_carries_the_cel_rule() -> None:
    text = crdgen.render_all()
    assert "!has(self.canary) || self.router.enabled" in text


def run(
    cs: api.CanarySpec, windows: list[tuple[analysis.Window, analysis.Window]]
) -> list[canary.Decision]:
    """Drive decide() on virtual time: a check every interval, as the engine does."""
    state, out, last, now = canary.start(cs), [], 0.0, 0.0
    for stable, can in windows:
        now += cs.analysis.interval_seconds
        assert canary.due(state, cs, now, last)
        decision = canary.decide(state=state, spec=cs, stable=stable, canary=can, now=str(now))
        out.append(decision)
        state, last = decision.state, now
    assert not canary.due(state, cs, now + 1, last)  # not before the next interval
    return out


def test_a_healthy_canary_is_promoted_through_its_steps() -> None:
    cs = spec().canary
    assert cs is not None
    decisions = run(cs, [(window(200), window(30))] * 3)
    assert [d.state.weight for d in decisions] == [25, 50, 100]
    assert [e.reason for d in decisions for e in d.events] == [
        "CanaryStep",
        "CanaryStep",
        "CanaryPromoted",
    ]
    last = decisions[-1].state
    assert last.phase is api.CanaryPhase.PROMOTED
    assert canary.weights(last) == {"stable": 0, "canary": 100}
    assert "canary.model into spec.model" in last.message
    # Promoted is final: later windows change nothing.
    after = canary.decide(state=last, spec=cs, stable=window(1), canary=window(1), now="x")
    assert after.state == last and after.events == ()


def test_a_failing_canary_is_rolled_back_within_interval_times_failure_limit() -> None:
    cs = spec().canary
    assert cs is not None
    decisions = run(cs, [(window(200), window(40, errors=4))] * cs.analysis.failure_limit)
    first, last = decisions[0], decisions[-1]
    assert first.state.phase is api.CanaryPhase.PROGRESSING
    assert first.state.weight == 10 and first.state.failures == 1
    assert [e.reason for e in first.events] == ["CanaryCheckFailed"]
    assert last.state.phase is api.CanaryPhase.ROLLED_BACK
    assert last.state.weight == 0 and last.state.reason == "ErrorRate"
    assert last.state.error_rate == pytest.approx(0.1)
    assert "10.00%" in last.state.message
    assert [e.reason for e in last.events] == ["CanaryRolledBack"]
    assert canary.replicas(last.state, 4) == 0


def test_a_slow_canary_is_rolled_back_for_its_latency_ratio() -> None:
    cs = spec().canary
    assert cs is not None
    decisions = run(cs, [(window(200, p99_ms=10), window(40, p99_ms=50))] * 2)
    assert decisions[-1].state.reason == "LatencyRatio"
    assert decisions[-1].state.p99_seconds == pytest.approx(0.05)


def test_too_little_canary_traffic_holds_without_counting_a_failure() -> None:
    cs = spec().canary
    assert cs is not None
    decisions = run(cs, [(window(200), window(5, errors=5))] * 5)
    assert {d.state.phase for d in decisions} == {api.CanaryPhase.PROGRESSING}
    assert {d.state.failures for d in decisions} == {0}
    assert all(d.events == () for d in decisions)


def test_a_changed_canary_starts_over() -> None:
    cs = spec().canary
    assert cs is not None
    rolled = api.CanaryStatus(
        revision=canary.revision(cs), phase=api.CanaryPhase.ROLLED_BACK, step=0, weight=0
    )
    recorded = rolled.model_dump(by_alias=True, mode="json")
    assert canary.current(cs, recorded) == rolled
    other = spec(canary={**CANARY, "model": {"storageUri": "https://h/m3.onnx"}}).canary
    assert other is not None
    fresh = canary.current(other, recorded)
    assert fresh.phase is api.CanaryPhase.PROGRESSING and fresh.weight == 10


@pytest.mark.parametrize(
    ("weight", "stable", "expected"), [(10, 1, 1), (10, 4, 1), (25, 8, 2), (50, 3, 2), (100, 3, 3)]
)
def test_canary_replicas_follow_its_share(weight: int, stable: int, expected: int) -> None:
    state = api.CanaryStatus(revision="r", phase=api.CanaryPhase.PROGRESSING, step=0, weight=weight)
    assert canary.replicas(state, stable) == expected


def test_children_carry_the_canary_deployment_and_two_variants() -> None:
    s = spec()
    state = api.CanaryStatus(revision="r", phase=api.CanaryPhase.PROGRESSING, step=1, weight=25)
    wanted = children.build(
        OWNER,
        s,
        "onnx",
        RUNTIME,
        CONFIG,
        canary_state=state,
        canary_runtime=("onnx", RUNTIME),
        stable_replicas=4,
    )
    dep = next(m for m in wanted.apply if m["metadata"]["name"] == "m-canary")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    # Not a stable pod: the predictor's selector, status and the autoscaler never see it.
    assert builders.LABEL_ISVC not in pod_labels
    assert pod_labels[canary.CANARY_LABEL] == "m"
    assert dep["spec"]["selector"] == {"matchLabels": {canary.CANARY_LABEL: "m"}}
    assert dep["spec"]["replicas"] == 1
    assert "https://h/m2.onnx" in yaml.safe_dump(dep)
    cm = next(
        m
        for m in wanted.apply
        if m["kind"] == "ConfigMap" and m["metadata"]["name"] == router.name(OWNER)
    )
    variants = yaml.safe_load(cm["data"][router.CONFIG_FILE])["variants"]
    assert [(v["name"], v["weight"]) for v in variants] == [("stable", 75), ("canary", 25)]
    assert variants[1]["selector"] == {canary.CANARY_LABEL: "m"}
    assert "deployment" not in variants[1]  # the router never wakes the canary

    stopped = children.build(
        OWNER,
        spec(stopped=True),
        "onnx",
        RUNTIME,
        CONFIG,
        canary_state=state,
        canary_runtime=("onnx", RUNTIME),
    )
    assert (
        next(m for m in stopped.apply if m["metadata"]["name"] == "m-canary")["spec"]["replicas"]
        == 0
    )

    plain = spec(canary=None)
    without = children.build(OWNER, plain, "onnx", RUNTIME, CONFIG)
    assert ("apps/v1", "Deployment", "m-canary") in [c.key for c in without.absent]


ROUTER_PAGE = """\
# TYPE kubeinfer_router_requests_total counter
kubeinfer_router_requests_total{variant="stable",outcome="success"} 180.0
kubeinfer_router_requests_total{variant="canary",outcome="success"} 18.0
kubeinfer_router_requests_total{variant="canary",outcome="error"} 2.0
# TYPE kubeinfer_router_request_duration_seconds histogram
kubeinfer_router_request_duration_seconds_bucket{variant="stable",le="0.01"} 170.0
kubeinfer_router_request_duration_seconds_bucket{variant="stable",le="0.1"} 180.0
kubeinfer_router_request_duration_seconds_bucket{variant="stable",le="+Inf"} 180.0
kubeinfer_router_request_duration_seconds_count{variant="stable"} 180.0
kubeinfer_router_request_duration_seconds_sum{variant="stable"} 1.0
kubeinfer_router_request_duration_seconds_bucket{variant="canary",le="0.01"} 10.0
kubeinfer_router_request_duration_seconds_bucket{variant="canary",le="0.1"} 20.0
kubeinfer_router_request_duration_seconds_bucket{variant="canary",le="+Inf"} 20.0
kubeinfer_router_request_duration_seconds_count{variant="canary"} 20.0
kubeinfer_router_request_duration_seconds_sum{variant="canary"} 0.5
"""


def test_router_pages_read_per_variant() -> None:
    snaps = metrics.parse_router_variants([ROUTER_PAGE])
    assert snaps["canary"].successes == 18 and snaps["canary"].errors == 2
    assert snaps["stable"].bounds == (0.01, 0.1, float("inf"))
    empty = analysis.Snapshot(successes=0, errors=0, bounds=(), buckets=())
    w = analysis.window_between(empty, snaps["canary"])
    assert (w.requests, w.errors) == (20, 2)
    assert w.p99_s is not None and 0.01 < w.p99_s <= 0.1
