"""season.SeasonalHistory: demand by time of period, and the forecast read from it."""

from __future__ import annotations

import json
import random

import pytest

from kubeinfer.core.scaling import season

PERIOD_S = 2880.0  # 10-second buckets
WIDTH_S = PERIOD_S / season.BUCKETS


def shape(t: float) -> float:
    """A day's demand: 100 req/s, 400 between 1000 s and 1300 s of each period."""
    return 400.0 if 1000.0 <= t % PERIOD_S < 1300.0 else 100.0


def fill(
    history: season.SeasonalHistory,
    start: float,
    end: float,
    load: object = shape,
    tick_s: float = 2.0,
) -> None:
    t = start
    while t < end:
        history.record(now=t, demand=load(t))  # type: ignore[operator]
        t += tick_s


def test_a_repeating_day_forecasts_the_rise_one_cold_start_ahead() -> None:
    history = season.SeasonalHistory(period_s=PERIOD_S)
    fill(history, 0.0, PERIOD_S + 960.0)
    # 40 s before today's rise, with a 60 s horizon: yesterday's rise is in it.
    ahead = history.forecast(now=PERIOD_S + 960.0, horizon_s=60.0)
    assert ahead is not None
    assert ahead.scale == pytest.approx(1.0)
    assert ahead.error == pytest.approx(0.0, abs=1e-9)
    assert ahead.demand == pytest.approx(400.0)
    # Earlier, with a 20 s horizon, the rise is more than SHIFT buckets past it: the forecast
    # is today's level.
    early = PERIOD_S + 1000.0 - WIDTH_S * (season.SHIFT + 4)
    sooner = season.SeasonalHistory(period_s=PERIOD_S)
    fill(sooner, 0.0, early)
    near = sooner.forecast(now=early, horizon_s=20.0)
    assert near is not None and near.demand == pytest.approx(100.0)
    further = sooner.forecast(now=early, horizon_s=60.0)
    assert further is not None and further.demand == pytest.approx(400.0)


def test_a_rise_a_few_minutes_off_yesterdays_still_tracks_and_is_provisioned_for() -> None:
    # Today's rise comes SHIFT buckets later than yesterday's (15-30 minutes of a day): the
    # comparison reads no error, and until today's rise comes the forecast keeps yesterday's
    # level (it provisions for the highest demand within SHIFT buckets of the horizon).
    late = season.SHIFT * WIDTH_S
    history = season.SeasonalHistory(period_s=PERIOD_S)
    fill(history, 0.0, PERIOD_S)
    fill(history, PERIOD_S, PERIOD_S + 1300.0, load=lambda t: shape(t - late))
    waiting = history.forecast(now=PERIOD_S + 1300.0, horizon_s=20.0)
    assert waiting is not None
    assert waiting.error == pytest.approx(0.0, abs=1e-9)
    assert waiting.demand == pytest.approx(400.0)
    # Once today's rise is over (SHIFT buckets after yesterday's), a rise later still than
    # SHIFT buckets is an error: two buckets at 400 where yesterday had only 100 near them.
    wild = season.SeasonalHistory(period_s=PERIOD_S)
    fill(wild, 0.0, PERIOD_S)
    off = (season.SHIFT + 2) * WIDTH_S
    fill(wild, PERIOD_S, PERIOD_S + 1300.0 + off, load=lambda t: shape(t - off))
    strayed = wild.forecast(now=PERIOD_S + 1300.0 + off, horizon_s=20.0)
    assert strayed is not None and strayed.error > 0.5


def test_today_at_twice_yesterday_scales_the_forecast() -> None:
    history = season.SeasonalHistory(period_s=PERIOD_S)
    fill(history, 0.0, PERIOD_S)
    fill(history, PERIOD_S, PERIOD_S + 960.0, load=lambda t: 2.0 * shape(t))
    ahead = history.forecast(now=PERIOD_S + 960.0, horizon_s=60.0)
    assert ahead is not None
    assert ahead.scale == pytest.approx(2.0)
    assert ahead.demand == pytest.approx(800.0)


def test_no_forecast_without_a_period_of_history_or_enough_comparisons() -> None:
    history = season.SeasonalHistory(period_s=PERIOD_S)
    fill(history, 0.0, 900.0)
    assert history.forecast(now=900.0, horizon_s=60.0) is None  # the first day
    # Into today's bucket FIT_MIN - 1: FIT_MIN - 1 of today's buckets have closed, one too
    # few to compare.
    fill(history, 900.0, PERIOD_S + WIDTH_S * (season.FIT_MIN - 1) + 1.0)
    assert len(history.pairs) == season.FIT_MIN - 1
    assert history.forecast(now=PERIOD_S + WIDTH_S * (season.FIT_MIN - 1), horizon_s=60.0) is None
    now = PERIOD_S + WIDTH_S * season.FIT_MIN + 0.5
    history.record(now=now, demand=100.0)
    assert len(history.pairs) == season.FIT_MIN
    assert history.forecast(now=now, horizon_s=60.0) is not None


def test_a_day_that_does_not_track_reads_a_large_error() -> None:
    # Today's buckets scattered +-50 % around yesterday's: the 90th-percentile error says so.
    rng = random.Random(7)
    history = season.SeasonalHistory(period_s=PERIOD_S)
    fill(history, 0.0, PERIOD_S)
    noisy: dict[int, float] = {}

    def load(t: float) -> float:
        k = history.bucket(t)
        noisy.setdefault(k, rng.uniform(0.5, 1.5))
        return shape(t) * noisy[k]

    fill(history, PERIOD_S, PERIOD_S + 600.0, load=load)
    ahead = history.forecast(now=PERIOD_S + 600.0, horizon_s=60.0)
    assert ahead is not None
    assert ahead.error > 0.3
    # The error margin is part of the demand to provision for.
    assert ahead.demand == pytest.approx(100.0 * ahead.scale * (1 + ahead.error))


def test_a_day_not_seen_is_no_forecast() -> None:
    # The operator was away for the hours the horizon covers a period ago: nothing to read,
    # and a history two periods old is never taken for yesterday's.
    history = season.SeasonalHistory(period_s=PERIOD_S)
    fill(history, 0.0, 900.0)
    fill(history, 1200.0, PERIOD_S + 700.0)
    assert history.forecast(now=PERIOD_S + 850.0, horizon_s=100.0) is None
    assert history.forecast(now=PERIOD_S + 700.0, horizon_s=100.0) is not None
    later = season.SeasonalHistory(period_s=PERIOD_S)
    fill(later, 0.0, PERIOD_S)
    fill(later, 2 * PERIOD_S, 2 * PERIOD_S + 700.0)
    assert later.forecast(now=2 * PERIOD_S + 700.0, horizon_s=60.0) is None


def test_a_lone_empty_bucket_reads_as_its_larger_neighbour() -> None:
    # At the shortest period a bucket is about one scrape wide: a late tick leaves one empty.
    history = season.SeasonalHistory(period_s=PERIOD_S)
    fill(history, 0.0, PERIOD_S + 960.0)
    rise = history.bucket(1000.0)  # yesterday's first bucket at 400
    del history.means[rise]
    ahead = history.forecast(now=PERIOD_S + 960.0, horizon_s=60.0)
    assert ahead is not None and ahead.demand == pytest.approx(400.0)
    # Two in a row are a stretch not seen: no forecast over them.
    del history.means[rise + 1]
    assert history.forecast(now=PERIOD_S + 960.0, horizon_s=60.0) is None


def test_off_records_nothing() -> None:
    history = season.SeasonalHistory()
    fill(history, 0.0, 3 * PERIOD_S)
    assert not history.means and history.forecast(now=3 * PERIOD_S, horizon_s=60.0) is None


def test_the_history_survives_a_restart_and_fits_in_status() -> None:
    history = season.SeasonalHistory(period_s=86400.0)
    rng = random.Random(3)
    fill(history, 0.0, 86400.0 + 4 * 3600.0, load=lambda t: 1234.5678 * rng.uniform(0.9, 1.1))
    doc = history.to_dict()
    assert len(json.dumps(doc, separators=(",", ":"))) < 3500
    back = season.SeasonalHistory.from_dict(json.loads(json.dumps(doc)))
    now = 86400.0 + 4 * 3600.0
    before, after = (
        history.forecast(now=now, horizon_s=600.0),
        back.forecast(now=now, horizon_s=600.0),
    )
    assert before is not None and after is not None
    assert after.demand == pytest.approx(before.demand, rel=1e-3)
    assert after.error == pytest.approx(before.error, abs=1e-3)
    # A restored history goes on recording and comparing.
    fill(back, now, now + 7200.0, load=lambda t: 1234.5678)
    assert back.forecast(now=now + 7200.0, horizon_s=600.0) is not None
    assert season.SeasonalHistory.from_dict({}).forecast(now=0.0, horizon_s=1.0) is None


def test_a_history_saved_before_the_shift_tolerance_loads() -> None:
    # Comparisons saved as [age, today, then] read the range near "then" as "then" alone.
    history = season.SeasonalHistory(period_s=PERIOD_S)
    fill(history, 0.0, PERIOD_S + 600.0)
    doc = history.to_dict()
    doc["pairs"] = [pair[:3] for pair in doc["pairs"]]
    back = season.SeasonalHistory.from_dict(doc)
    assert all(low == then == high for _, _, then, low, high in back.pairs)
    ahead = back.forecast(now=PERIOD_S + 600.0, horizon_s=60.0)
    assert ahead is not None and ahead.error == pytest.approx(0.0, abs=1e-9)


def test_copy_is_independent() -> None:
    history = season.SeasonalHistory(period_s=PERIOD_S)
    fill(history, 0.0, PERIOD_S + 400.0)
    copy = history.copy()
    fill(copy, PERIOD_S + 400.0, PERIOD_S + 800.0)
    assert max(history.means) < max(copy.means)
    assert history.pairs[-1][0] < copy.pairs[-1][0]
    assert len(copy.pairs) == season.FIT_BUCKETS  # the comparisons kept are the latest only
