"""batching: the pure batch planner, and the batcher itself with a numpy "model"."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from kubeinfer_onnx import batching, errors


@pytest.mark.parametrize(
    ("rows", "signatures", "max_batch", "preferred", "taken"),
    [
        ([], [], 8, (), 0),
        ([1, 1, 1], ["a"] * 3, 8, (), 3),
        ([4, 4, 4], ["a"] * 3, 8, (), 2),  # Stops before going over max_batch_size.
        ([1, 1, 1], ["a", "b", "a"], 8, (), 1),  # Stops at a different signature: FIFO kept.
        ([1, 1, 1, 1, 1], ["a"] * 5, 8, (2, 4), 4),  # Cut at the largest preferred size reached.
        ([3, 3], ["a"] * 2, 8, (4,), 2),  # No preferred size reachable: take all that fit.
        ([1, 1], ["a"] * 2, 0, (), 1),  # Model cannot batch: one at a time.
        ([8], ["a"], 8, (), 1),
    ],
)
def test_plan_batch(
    rows: list[int], signatures: list[str], max_batch: int, preferred: tuple[int, ...], taken: int
) -> None:
    assert (
        batching.plan_batch(
            rows, signatures, max_batch_size=max_batch, preferred_batch_sizes=preferred
        )
        == taken
    )


def test_signature_separates_incompatible_requests() -> None:
    a = {"x": np.zeros((1, 4), np.float32)}
    assert batching.signature_of(a) == batching.signature_of({"x": np.ones((3, 4), np.float32)})
    assert batching.signature_of(a) != batching.signature_of({"x": np.zeros((1, 5), np.float32)})
    assert batching.signature_of(a) != batching.signature_of({"x": np.zeros((1, 4), np.float64)})


class SlowDouble:
    """A stand-in model: doubles its input, takes a few ms, records the batch sizes it ran."""

    def __init__(self, delay: float = 0.005) -> None:
        self.batches: list[int] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        time.sleep(self.delay)
        with self.lock:
            self.batches.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2}


async def test_concurrent_submits_merge_and_split_back() -> None:
    model = SlowDouble()
    batcher = batching.DynamicBatcher(execute=model, max_batch_size=16, max_queue_size=100)
    batcher.start()
    arrays = [np.full((1, 2), i, np.float32) for i in range(40)]
    results = await asyncio.gather(*(batcher.submit({"x": a}, 1) for a in arrays))
    await batcher.close()
    for array, (outputs, timings) in zip(arrays, results, strict=True):
        np.testing.assert_array_equal(outputs["y"], array * 2)
        assert timings.batch_rows >= 1 and timings.queue_ns >= 0
    assert sum(model.batches) == 40
    assert len(model.batches) < 40 and max(model.batches) <= 16


async def test_idle_queue_adds_no_delay() -> None:
    model = SlowDouble(delay=0)
    batcher = batching.DynamicBatcher(execute=model, max_batch_size=16, max_queue_size=10)
    batcher.start()
    started = time.monotonic()
    _, timings = await batcher.submit({"x": np.zeros((1, 2), np.float32)}, 1)
    await batcher.close()
    assert time.monotonic() - started < 0.05
    assert timings.batch_requests == 1


async def test_max_queue_delay_lets_a_batch_fill() -> None:
    model = SlowDouble(delay=0)
    batcher = batching.DynamicBatcher(
        execute=model, max_batch_size=8, max_queue_size=10, max_queue_delay_us=50_000
    )
    batcher.start()

    async def later(i: int) -> None:
        await asyncio.sleep(0.005 * i)
        await batcher.submit({"x": np.zeros((1, 2), np.float32)}, 1)

    await asyncio.gather(*(later(i) for i in range(4)))
    await batcher.close()
    assert model.batches == [4]  # Held for the delay, so the four arrivals ran together.


async def test_full_queue_rejects_at_once_and_failures_reach_callers() -> None:
    gate = threading.Event()

    def blocked(inputs: Mapping[str, Any]) -> dict[str, Any]:
        gate.wait(5)
        if inputs["x"].shape[0] > 1:
            raise RuntimeError("boom")
        return {"y": inputs["x"]}

    batcher = batching.DynamicBatcher(execute=blocked, max_batch_size=8, max_queue_size=2)
    batcher.start()
    first = asyncio.create_task(batcher.submit({"x": np.zeros((1, 1))}, 1))
    await asyncio.sleep(0.01)  # The first one is executing, so it no longer counts as queued.
    queued = [asyncio.create_task(batcher.submit({"x": np.zeros((1, 1))}, 1)) for _ in range(2)]
    await asyncio.sleep(0.01)
    assert batcher.pending == 2
    with pytest.raises(errors.ServerBusyError, match="queue is full"):
        await batcher.submit({"x": np.zeros((1, 1))}, 1)
    gate.set()
    await first
    for task in queued:  # The two queued ones ran as one batch of 2, which the model failed.
        with pytest.raises(errors.ExecutionError, match="boom"):
            await task
    await batcher.close()


class Recording:
    """An identity "model" that notes which thread ran each batch, and its size."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.threads: list[int] = []
        self.batches: list[int] = []

    def __call__(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if self.delay:
            time.sleep(self.delay)
        self.threads.append(threading.get_ident())
        self.batches.append(len(inputs["x"]))
        return {"y": inputs["x"]}


async def test_tiny_model_on_idle_queue_runs_inline_on_the_loop() -> None:
    model = Recording()
    # A generous threshold, so a loaded test machine cannot make the tiny model look slow.
    batcher = batching.DynamicBatcher(
        execute=model, max_batch_size=8, max_queue_size=10, inline_max_us=100_000
    )
    batcher.start()
    for _ in range(3):
        outputs, timings = await batcher.submit({"x": np.ones((1, 2), np.float32)}, 1)
        np.testing.assert_array_equal(outputs["y"], np.ones((1, 2), np.float32))
        assert timings.batch_requests == 1
    await batcher.close()
    loop_thread = threading.get_ident()
    # The first ran on a worker (the model's cost was unknown); once it is known to be tiny,
    # an idle queue runs the request on the event loop itself.
    assert model.threads[0] != loop_thread
    assert model.threads[1:] == [loop_thread, loop_thread]


async def test_slow_model_never_runs_on_the_loop() -> None:
    model = Recording(delay=0.002)  # 2 ms: over both inline thresholds given here.
    batcher = batching.DynamicBatcher(
        execute=model, max_batch_size=8, max_queue_size=10, inline_solo_max_us=1000
    )
    batcher.start()
    for _ in range(batching.SOLO_AFTER + 4):  # one at a time, yet too slow for the loop
        await batcher.submit({"x": np.ones((1, 2), np.float32)}, 1)
    await batcher.close()
    assert threading.get_ident() not in model.threads


def _solo_batcher(model: Recording) -> batching.DynamicBatcher:
    # Generous thresholds, so a loaded test machine cannot make the 2 ms model look slower
    # than the rule allows; no tiny-model inlining, so only the one-at-a-time rule acts.
    return batching.DynamicBatcher(
        execute=model,
        max_batch_size=64,
        max_queue_size=100,
        inline_max_us=0,
        inline_solo_max_us=10_000_000,
    )


async def test_one_request_at_a_time_runs_inline_with_a_probe_every_so_often() -> None:
    model = Recording(delay=0.002)
    batcher = _solo_batcher(model)
    batcher.start()
    after = 2 * batching.PROBE_EVERY
    for _ in range(batching.SOLO_AFTER + after):
        await batcher.submit({"x": np.ones((1, 2), np.float32)}, 1)
    await batcher.close()
    on_loop = [t == threading.get_ident() for t in model.threads]
    # The first SOLO_AFTER lone batches on the worker earn inline runs; then every
    # PROBE_EVERY-th request is a probe on the worker again.
    assert on_loop[: batching.SOLO_AFTER] == [False] * batching.SOLO_AFTER
    probes = [i for i, loop in enumerate(on_loop[batching.SOLO_AFTER :], 1) if not loop]
    assert probes == [batching.PROBE_EVERY, 2 * batching.PROBE_EVERY]


async def test_requests_that_queue_behind_a_probe_end_the_inline_runs() -> None:
    model = Recording(delay=0.002)
    batcher = _solo_batcher(model)
    batcher.start()
    for _ in range(batching.SOLO_AFTER):
        await batcher.submit({"x": np.ones((1, 2), np.float32)}, 1)
    # Now many at once: while one runs inline the loop cannot see the others, but the next
    # probe runs on the worker, the rest queue behind it, and they are batched again.
    count = 3 * batching.PROBE_EVERY
    await asyncio.gather(
        *(batcher.submit({"x": np.ones((1, 2), np.float32)}, 1) for _ in range(count))
    )
    await batcher.close()
    loop_thread = threading.get_ident()
    burst = list(zip(model.threads, model.batches, strict=True))[batching.SOLO_AFTER :]
    assert sum(size for _, size in burst) == count
    assert sum(1 for t, _ in burst if t == loop_thread) == batching.PROBE_EVERY - 1
    assert max(size for t, size in burst if t != loop_thread) > 1


async def test_two_at_a_time_on_two_instances_never_run_on_the_loop() -> None:
    # Each instance's batch holds one request and nothing queues, but the other instance is
    # running too: that is not one request at a time, and inline runs would serialise them.
    model = Recording(delay=0.002)
    batcher = batching.DynamicBatcher(
        execute=model,
        max_batch_size=64,
        max_queue_size=100,
        instances=2,
        inline_max_us=0,
        inline_solo_max_us=10_000_000,
    )
    batcher.start()
    x = np.ones((1, 2), np.float32)
    for _ in range(4 * batching.SOLO_AFTER):
        first = asyncio.create_task(batcher.submit({"x": x}, 1))
        # Once the first is on an instance, the second takes the other (unless the first ran
        # inline, on the loop: then it is done already, and the assertion below fails).
        while batcher.running == 0 and not first.done():
            await asyncio.sleep(0)
        await asyncio.gather(first, batcher.submit({"x": x}, 1))
    await batcher.close()
    assert threading.get_ident() not in model.threads
    assert max(model.batches) == 1  # each instance ran its own
