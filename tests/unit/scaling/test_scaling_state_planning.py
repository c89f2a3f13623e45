"""State persistence, decision history, cold-start learning, policy validation and planning."""

from __future__ import annotations

import json
import pathlib
import re

import pydantic
import pytest

from kubeinfer import planning_cli
from kubeinfer.core import api, planning
from kubeinfer.core.scaling import (
    burst,
    cold_start,
    decide,
    policy,
    season,
    signals,
    state,
    step,
    window,
)
from kubeinfer.engines import autoscaler


def _point(batch: int, p50: float, p99: float, rps: float) -> dict[str, float]:
    return {"batch_size": batch, "p50_ms": p50, "p99_ms": p99, "throughput": rps}


# The shape kubeinfer-onnx-profile writes (tests/integration/runtime checks the round trip).
PROFILE = {
    "model": "resnet50",
    "runs": [
        {
            "precision": "fp32",
            "points": [
                _point(1, 8.6, 12.9, 116.3),
                _point(8, 12.8, 19.2, 625.0),
                _point(16, 17.6, 26.4, 909.1),
                _point(32, 27.2, 40.8, 1176.5),
            ],
        }
    ],
}


def test_state_round_trips_through_json() -> None:
    s = state.ScalerState(
        last_scale_time=12.5,
        recommendations=((1.0, 3), (3.0, 4)),
        consecutive_failures=2,
        cold_start_s=47.0,
        panic_until=70.0,
    )
    assert state.ScalerState.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert state.ScalerState.from_dict({}) == state.ScalerState()


def test_restart_with_persisted_state_causes_no_scale_down() -> None:
    # Before the restart: 8 replicas were recommended 30 s ago; the load has since dropped.
    scaling = policy.from_spec(max_replicas=10)
    w = window.SignalWindow.for_policy(scaling)
    persisted = json.dumps(
        {"state": state.ScalerState(recommendations=((970.0, 8),)).to_dict(), "window": w.to_dict()}
    )
    data = json.loads(persisted)
    result = decide.decide(
        policy=scaling,
        window=window.SignalWindow.from_dict(data["window"]),
        state=state.ScalerState.from_dict(data["state"]),
        now=1000.0,
        replicas=decide.Replicas(current=8, ready=8),
        scraped=False,
    )
    assert (result.desired, result.reason) == (8, decide.Reason.NO_DATA)


def test_decision_record_and_bounded_history() -> None:
    result = decide.decide(
        policy=policy.from_spec(),
        window=window.SignalWindow(length_s=60, granularity_s=2),
        state=state.ScalerState(),
        now=5.0,
        replicas=decide.Replicas(current=3, ready=3),
    )
    record = result.record(now=5.0)
    assert record.reason == "NoData" and record.clamps == ["NoData"]
    # Status keeps numbers only (the CRD's schema): no data is an absent key, not a null.
    assert record.inputs["current"] == 3 and "stable" not in record.inputs
    assert record.time == "1970-01-01T00:00:05Z"
    assert api.DecisionRecord.model_validate(record.model_dump(by_alias=True)) == record
    history: tuple[api.DecisionRecord, ...] = ()
    for i in range(15):
        history = state.append_history(history, record.model_copy(update={"desired": i}))
    assert len(history) == api.DECISION_HISTORY
    assert [r.desired for r in history] == list(range(5, 15))
    assert not state.is_news((record,), record)
    assert state.is_news((), record)


def recommending(count: int) -> state.ScalerState:
    """A state whose stabilization history holds ``count`` recommendations."""
    return state.ScalerState(
        recommendations=tuple((1.7e9 + 1.37 * i, count - i) for i in range(count))
    )


def jumpy_bursts() -> burst.BurstHistory:
    """A full burst history of demand that jumps every second (the most to persist)."""
    bursts = burst.BurstHistory()
    for t in range(round(burst.HISTORY_S) + 60):
        bursts.record(now=1.7e9 + t, demand=100.0 + 37.0 * (t * 7919 % 11), horizon_s=30.0)
    return bursts


def a_full_day() -> season.SeasonalHistory:
    """A day of 5-minute buckets and the latest comparisons, every number at full digits."""
    history = season.SeasonalHistory(period_s=86400.0)
    for t in range(0, 86400 + 3 * 3600, 30):
        history.record(now=1.7e9 + t, demand=1000.0 + (t * 7919 % 1013) / 7.0)
    return history


@pytest.mark.parametrize(
    ("recommendations", "kept", "coarse"),
    [
        (100, {"state", "window", "burst", "season"}, 20),
        (200, {"state", "window", "season"}, 20),
        (400, {"state", "window", "season"}, 60),
        (800, {"state", "season"}, None),
        (1000, {"state"}, None),
    ],
)
def test_an_oversized_memory_drops_what_matters_least(
    recommendations: int, kept: set[str], coarse: int | None
) -> None:
    """A huge stabilization history (hundreds of replicas recommended within the window)
    must not make the status write fail: the burst history goes first, then the window's
    resolution, then the window, then the period's history; the scaler state stays whole."""
    w = window.SignalWindow(length_s=3600, granularity_s=2)
    for t in range(0, 3600, 2):
        w.record(
            sample=signals.TickSample(
                time=10_000.0 + t,
                ready_replicas=4,
                pods_scraped=4,
                queue_depth_total=10.0 + t / 1000.123,
                request_rate_total=100.0 + t / 7.77,
                queue_time_ms=5.0 + t / 33.3,
                gpu_utilization=0.5 + t / 99_999.0,
            )
        )
    st = recommending(recommendations)
    saved = autoscaler.persisted_state(
        step.Memory(state=st, window=w, burst=jumpy_bursts(), season=a_full_day())
    )
    assert len(saved) <= api.STATE_MAX_CHARS
    assert set(json.loads(saved)) == kept
    # 3600 s of 2 s buckets merged 20 at a time into 90; 60 at a time into 30 once squeezed.
    assert json.loads(saved).get("window", {}).get("coarse") == coarse
    assert state.ScalerState.from_dict(json.loads(saved)["state"]) == st


@pytest.mark.parametrize("length_s", [6, 60, 600, 3600])
def test_the_window_survives_a_restart_at_every_allowed_length(length_s: int) -> None:
    """Persisted in status (20 KiB), restored after a restart, for every stable window the API
    allows: averages over any span come back as they were."""
    w = window.SignalWindow(length_s=length_s, granularity_s=2)
    for t in range(0, length_s, 2):
        w.record(
            sample=signals.TickSample(
                time=10_000.0 + t,
                ready_replicas=4,
                pods_scraped=4,
                queue_depth_total=10.0 + (t % 7) + t / 1000.123,
                request_rate_total=100.0 + t / 7.77,
                queue_time_ms=5.0 + t / 33.3,
                gpu_utilization=0.5 + t / 99_999.0,
            )
        )
    now = 10_000.0 + length_s - 2
    # With a full burst history of jumpy demand beside it, ticking every second, and ten
    # stabilization recommendations: all of it fits, nothing is dropped.
    saved = autoscaler.persisted_state(
        step.Memory(state=recommending(10), window=w, burst=jumpy_bursts(), season=a_full_day())
    )
    assert len(saved) <= api.STATE_MAX_CHARS
    assert set(json.loads(saved)) == {"state", "window", "burst", "season"}
    back = window.SignalWindow.from_dict(json.loads(saved)["window"])
    depth = api.ScalingMetric.QUEUE_DEPTH.value
    for span in (6, length_s):
        before = w.average(series=depth, now=now, span_s=span)
        after = back.average(series=depth, now=now, span_s=span)
        assert before is not None and after is not None
        assert abs(after - before) <= 0.05 * before + (3.5 if span < 60 else 0.2), (span, before)


def test_stabilization_history_stays_short_and_exact() -> None:
    """Only recommendations that no later one outranks are kept: the maximum over any recent
    span is the same as over the full list, and the list cannot grow past the replica range."""
    p = policy.from_spec(max_replicas=100, scale_down_stabilization_s=3600)
    st = state.ScalerState()
    full: list[tuple[float, int]] = []
    w = window.SignalWindow.for_policy(p)
    for i in range(1800):
        now = 2.0 * i
        level = 50 + int(40 * ((i * 7919) % 97) / 97)  # jumpy, deterministic
        w.record(
            sample=signals.TickSample(
                time=now,
                ready_replicas=1,
                pods_scraped=1,
                queue_depth_total=level * 8.0,
                request_rate_total=1.0,
                queue_time_ms=None,
                gpu_utilization=None,
            )
        )
        result = decide.decide(
            policy=p, window=w, state=st, now=now, replicas=decide.Replicas(current=50, ready=50)
        )
        st = result.state
        full.append((now, result.inputs.recommended))
    assert len(st.recommendations) <= 100
    horizon = 2.0 * 1799 - 600
    assert max(r for t, r in st.recommendations if t > horizon) == max(
        r for t, r in full if t > horizon
    )


def test_cold_start_is_p90_of_recent_plausible_starts() -> None:
    pairs = [(0.0, 40.0 + i) for i in range(10)] + [(0.0, -5.0), (0.0, 5000.0)]
    assert cold_start.learn(pairs=pairs) == 48.0  # 40..49: nearest-rank p90 is the 9th of 10
    assert cold_start.learn(pairs=[], previous_s=33.0) == 33.0
    many = [(0.0, 100.0)] * 30 + [(0.0, 10.0)] * 20  # only the last 20 count
    assert cold_start.learn(pairs=many) == 10.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_replicas": 5, "max_replicas": 3},
        {"target": 0},
        {"panic_window_s": 90},
        {"panic_threshold": 1.0},
        {"gpu_veto_utilization": 1.5},
        {"scale_down_max_rate": 0.5},
        {"failures_before_fallback": 0},
        {"fallback_replicas": -1},
        {"scale_down_min_fraction": 1.0},
        {"trend_min_coverage": 1.5},
        {"calm_target_factor": 0.9},
        {"calm_headroom": 0.5},
        {"calm_span_s": 900.0},
        {"calm_span_s": -1.0},
        {"calm_full_cold_start_s": 90.0, "calm_max_cold_start_s": 60.0},
        {"calm_scale_down_s": -1.0},
        {"forecast_scale_down_s": -1.0},
        {"forecast_period_s": -1.0},
        {"forecast_max_error": -0.1},
        {"forecast_target_factor": 0.9},
        {"forecast_horizon_cold_starts": 0.5},
    ],
)
def test_policy_rejects_bad_knobs(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="invalid scaling policy"):
        policy.from_spec(**kwargs)  # type: ignore[arg-type]


def test_policy_defaults() -> None:
    p = policy.from_spec()
    assert (
        p.metric,
        p.stable_window_s,
        p.panic_window_s,
        p.panic_threshold,
        p.scrape_interval_s,
        p.gpu_veto_utilization,
    ) == (api.ScalingMetric.QUEUE_DEPTH, 60.0, 6.0, 2.0, 2.0, None)
    assert (p.scale_down_min_fraction, p.trend_min_coverage) == (0.2, 0.5)
    # The knobs an InferenceService sets come from the API's defaults, not a copy of them.
    spec = api.ScalingSpec()
    assert (p.min_replicas, p.max_replicas, p.target) == (
        spec.min_replicas,
        spec.max_replicas,
        spec.target,
    )
    assert p.scale_down_stabilization_s == spec.scale_down_delay_seconds
    assert p.forecast_period_s == spec.forecast_period_seconds == 86400


@pytest.mark.parametrize(("period", "ok"), [(0, True), (300, False), (600, True), (86400, True)])
def test_a_forecast_period_is_off_or_long_enough_for_its_buckets(period: int, ok: bool) -> None:
    if ok:
        assert api.ScalingSpec(forecast_period_seconds=period).forecast_period_seconds == period
    else:
        with pytest.raises(pydantic.ValidationError, match=re.escape(api.FORECAST_PERIOD_RULE)):
            api.ScalingSpec(forecast_period_seconds=period)


def test_plan_picks_batch_replicas_and_delay() -> None:
    rows = planning.parse_profile(PROFILE)
    result = planning.plan(profile=rows, target_rps=5000, p99_target_ms=60)
    # Batch 16 is the largest with 2 * p99 <= 60 ms; 5000 / (909.1 * 0.7) -> 8 replicas.
    assert (result.max_batch_size, result.replicas, result.meets_p99) == (16, 8, True)
    # Budget 60 - 2 * 26.4 = 7.2 ms; filling 15 more at 625 rps takes 24 ms -> 7.2 ms.
    assert result.max_queue_delay_us == 7200
    assert result.target_queue_depth == 11.2  # 909.1 * 0.7 * 17.6 ms


def test_plan_when_nothing_fits_uses_smallest_batch() -> None:
    rows = planning.parse_profile(PROFILE)
    result = planning.plan(profile=rows, target_rps=100, p99_target_ms=10)
    assert (result.max_batch_size, result.replicas, result.meets_p99) == (1, 2, False)
    assert result.max_queue_delay_us == 0


@pytest.mark.parametrize(
    ("report", "message"),
    [
        ({"results": []}, "no 'runs' list"),
        ({"runs": [{"precision": "int8", "points": []}]}, "no 'fp32' run"),
        ({"runs": [{"precision": "fp32", "points": [{"batch_size": 1}]}]}, "p50_ms"),
        ({"runs": [{"precision": "fp32", "points": []}]}, "has no points"),
    ],
)
def test_parse_profile_names_what_is_wrong(report: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        planning.parse_profile(report)


def test_plan_main_prints_a_table(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(PROFILE))
    assert planning_cli.plan_main([str(path), "--rps", "5000", "--p99-ms", "60"]) == 0
    out = capsys.readouterr().out
    assert "16     17.6     26.4      909.1  <- planned" in out
    assert "replicas            8" in out
    assert (
        planning_cli.plan_main([str(tmp_path / "missing.json"), "--rps", "1", "--p99-ms", "1"]) == 2
    )
