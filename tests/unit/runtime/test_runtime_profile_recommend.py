"""profile.recommend: the batch size and queue delay chosen for a p99 target."""

from __future__ import annotations

import pytest

from kubeinfer_onnx import profile


@pytest.mark.parametrize(
    ("target", "batch", "delay"),
    [
        (100.0, 32, 6000),  # 2 x 20 fits; batch 32 has the most throughput; delay p50 / 2.
        (30.0, 8, 2000),  # 2 x 20 is over 30: batch 8 (2 x 10 = 20 fits), delay min(10, 4 / 2).
        (5.0, 1, 0),  # Nothing fits: the smallest batch, with the reason saying so.
    ],
)
def test_recommend_table(target: float, batch: int, delay: int) -> None:
    points = [
        profile.Point(batch_size=1, p50_ms=1, p99_ms=3, throughput=400, iterations=9),
        profile.Point(batch_size=8, p50_ms=4, p99_ms=10, throughput=1800, iterations=9),
        profile.Point(batch_size=32, p50_ms=12, p99_ms=20, throughput=2500, iterations=9),
    ]
    rec = profile.recommend(points, p99_target_ms=target)
    assert (rec.max_batch_size, rec.max_queue_delay_microseconds) == (batch, delay)
