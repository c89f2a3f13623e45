"""The dynamic batcher: merges queued requests from any connection into one model run.

Owns the bounded per-model queue, the choice of which queued requests form the next batch
(`plan_batch`, pure), concatenating their inputs, running the model in a worker thread (or,
for a tiny model on an idle queue, inline) and splitting the outputs back. It knows nothing
of protocols or metrics: each request gets its outputs plus a `Timings` record, and the
caller books them.

Like Triton's default, a batch starts as soon as a worker is free (no added delay when the
queue is idle); requests that arrive while a batch runs wait and form the next, larger one.
An optional max queue delay holds the first request back to let a batch fill.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from kubeinfer_onnx import errors

Tensors = dict[str, npt.NDArray[Any]]
Execute = Callable[[Mapping[str, npt.NDArray[Any]]], Tensors]

# An asyncio submitter runs a batch itself, on its event loop, only when recent batches took
# less than this: for tiny models that saves two thread handoffs, and the loop is held up
# for no longer than a couple of small requests' decoding would take anyway.
INLINE_MAX_US = 200


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Timings:
    """Where one request's time went; the compute parts are its batch's, as Triton books them."""

    queue_ns: int
    input_ns: int
    infer_ns: int
    output_ns: int
    batch_rows: int
    batch_requests: int


class _Item:
    """One queued request, and the future (of its submitter's event loop) that it resolves."""

    __slots__ = ("enqueued_ns", "future", "inputs", "loop", "rows", "signature", "thread")

    def __init__(
        self,
        inputs: Mapping[str, npt.NDArray[Any]],
        rows: int,
        *,
        future: asyncio.Future[tuple[Tensors, Timings]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.inputs = inputs
        self.rows = rows
        self.signature = signature_of(inputs)
        self.enqueued_ns = time.monotonic_ns()
        self.future = future
        self.loop = loop
        self.thread = threading.get_ident()


def signature_of(inputs: Mapping[str, npt.NDArray[Any]]) -> Hashable:
    """Requests can share a batch only if every input agrees on dtype and non-batch dims."""
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(inputs.items()))


def plan_batch(
    rows: Sequence[int],
    signatures: Sequence[Hashable],
    *,
    max_batch_size: int,
    preferred_batch_sizes: Sequence[int] = (),
) -> int:
    """How many requests from the head of the queue go into the next batch.

    FIFO and never reordered, so no request starves: take the longest prefix that shares the
    head's signature and fits in max_batch_size; with preferred sizes, cut that prefix at the
    largest one it reaches exactly. The head always goes (validation already refused requests
    larger than max_batch_size). max_batch_size 0 means the model cannot batch: one at a time.
    """
    if not rows:
        return 0
    if max_batch_size == 0:
        return 1
    total = 0
    cumulative: list[int] = []
    for count, signature in zip(rows, signatures, strict=True):
        if signature != signatures[0] or (cumulative and total + count > max_batch_size):
            break
        total += count
        cumulative.append(total)
    preferred = set(preferred_batch_sizes)
    for taken in range(len(cumulative), 0, -1):
        if cumulative[taken - 1] in preferred:
            return taken
    return len(cumulative)


class DynamicBatcher:
    """One model's queue and the worker threads (one per instance) that drain it.

    Requests are submitted from coroutines, on any event loop; each worker thread runs
    batches (onnxruntime releases the GIL in run(), so instances overlap) and resolves each
    request's future on its submitter's loop. When the batcher is idle, there is no queue
    delay and recent batches took under `inline_max_us`, the submitter runs its request
    itself on its loop: for tiny models that saves a wake-up of the worker and one of the
    loop. A model of unknown or larger cost never runs on a loop, and under load the queue is
    never idle, so the workers batch as before.
    """

    def __init__(
        self,
        *,
        execute: Execute,
        max_batch_size: int,
        max_queue_size: int,
        max_queue_delay_us: int = 0,
        preferred_batch_sizes: Sequence[int] = (),
        instances: int = 1,
        on_batch: Callable[[Timings], None] = lambda timings: None,
        inline_max_us: int = INLINE_MAX_US,
    ) -> None:
        self._execute = execute
        self._on_batch = on_batch
        self._max_batch_size = max_batch_size
        self._max_queue_size = max_queue_size
        self._delay_ns = max_queue_delay_us * 1000
        self._preferred = tuple(preferred_batch_sizes)
        self._instances = instances
        self._inline_max_ns = inline_max_us * 1000
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)  # Workers: work queued, or stopping.
        self._queue: collections.deque[_Item] = collections.deque()
        self._queued_rows = 0
        self._executing = 0  # Requests in a running batch.
        self._busy = 0  # Instances running a batch.
        # Recent batch execution time (EWMA); None until one has run. Decides inline runs on
        # an event loop, so a model of unknown speed never runs there.
        self._recent_ns: float | None = None
        self._stopping = False
        self._threads: list[threading.Thread] = []

    @property
    def pending(self) -> int:
        """Requests queued and not yet executing (nv_inference_pending_request_count)."""
        return len(self._queue)

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._work, name=f"kubeinfer-batch-{i}", daemon=True)
            for i in range(self._instances)
        ]
        for thread in self._threads:
            thread.start()

    def _admit(self, item: _Item, *, inline: bool) -> list[_Item] | None:
        """Queue `item` (caller holds the lock); return a batch to run inline, or None.

        Raises ServerBusyError at once when the queue is full: failing fast instead of waiting
        is what keeps memory bounded under a flood (at most max_queue_size requests per model).
        """
        if len(self._queue) >= self._max_queue_size:
            raise errors.ServerBusyError(
                f"the model's queue is full ({self._max_queue_size} requests); retry later"
            )
        self._queue.append(item)
        self._queued_rows += item.rows
        if inline and not self._delay_ns and not self._busy and len(self._queue) == 1:
            self._busy += 1
            return self._take()
        self._wakeup.notify()
        return None

    async def submit(
        self, inputs: Mapping[str, npt.NDArray[Any]], rows: int
    ) -> tuple[Tensors, Timings]:
        """Queue one validated request from a coroutine; raises ServerBusyError when full."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Tensors, Timings]] = loop.create_future()
        item = _Item(inputs, rows, future=future, loop=loop)
        with self._lock:
            recent = self._recent_ns
            batch = self._admit(item, inline=recent is not None and recent <= self._inline_max_ns)
        if batch is not None:
            self._run_batch(batch)
        return await future

    async def drain(self) -> None:
        """Wait until every accepted request has been answered."""
        while self._queue or self._executing:
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        await self.drain()
        with self._lock:
            self._stopping = True
            self._wakeup.notify_all()
        threads, self._threads = self._threads, []
        for thread in threads:
            await asyncio.to_thread(thread.join)

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and (not self._queue or self._busy >= self._instances):
                    self._wakeup.wait()
                if self._stopping:
                    return
                if self._delay_ns and self._queued_rows < self._max_batch_size:
                    self._wait_for_fill()
                    if not self._queue:  # Another instance took them meanwhile.
                        continue
                self._busy += 1
                items = self._take()
            self._run_batch(items)

    def _wait_for_fill(self) -> None:
        """Hold the head request up to the max queue delay so a batch can fill (lock held)."""
        deadline = self._queue[0].enqueued_ns + self._delay_ns
        while self._queue and self._queued_rows < self._max_batch_size and not self._stopping:
            remaining = deadline - time.monotonic_ns()
            if remaining <= 0:
                return
            self._wakeup.wait(remaining / 1e9)

    def _take(self) -> list[_Item]:
        """The next batch from the head of the queue (lock held; counted as executing)."""
        count = (
            plan_batch(
                [item.rows for item in self._queue],
                [item.signature for item in self._queue],
                max_batch_size=self._max_batch_size,
                preferred_batch_sizes=self._preferred,
            )
            if len(self._queue) > 1
            else 1
        )
        items = [self._queue.popleft() for _ in range(count)]
        self._queued_rows -= sum(item.rows for item in items)
        self._executing += len(items)
        return items

    def _run_batch(self, items: list[_Item]) -> None:
        """Run one taken batch on this thread and hand each request its result."""
        started = time.monotonic_ns()
        try:
            results = self._run(items)
        except Exception as exc:  # Fail this batch's requests, keep the batcher alive.
            failure = errors.ExecutionError(f"model execution failed: {exc}")
            with self._lock:
                self._finish(items, time.monotonic_ns() - started)
            for item in items:
                _fail(item, failure)
            return
        with self._lock:
            self._on_batch(results[0][1])  # Once per execution, for the batch stats.
            self._finish(items, time.monotonic_ns() - started)
        for item, result in zip(items, results, strict=True):
            _resolve(item, result)

    def _finish(self, items: list[_Item], elapsed_ns: int) -> None:
        """Book a finished batch (lock held) and pass the turn on to a worker if work waits."""
        recent = self._recent_ns
        self._recent_ns = elapsed_ns if recent is None else 0.8 * recent + 0.2 * elapsed_ns
        self._busy -= 1
        self._executing -= len(items)
        if self._queue:
            self._wakeup.notify()

    def _run(self, items: list[_Item]) -> list[tuple[Tensors, Timings]]:
        """Concatenate, run, split. Returns one (outputs, timings) per item."""
        started = time.monotonic_ns()
        if len(items) == 1:
            inputs: Mapping[str, npt.NDArray[Any]] = items[0].inputs
        else:
            inputs = {
                name: np.concatenate([item.inputs[name] for item in items])
                for name in items[0].inputs
            }
        computed = time.monotonic_ns()
        outputs = self._execute(inputs)
        inferred = time.monotonic_ns()
        if len(items) == 1:
            parts = [outputs]
        else:
            parts = []
            offset = 0
            for item in items:
                parts.append(
                    {name: array[offset : offset + item.rows] for name, array in outputs.items()}
                )
                offset += item.rows
        finished = time.monotonic_ns()
        rows = sum(item.rows for item in items)
        return [
            (
                part,
                Timings(
                    queue_ns=started - item.enqueued_ns,
                    input_ns=computed - started,
                    infer_ns=inferred - computed,
                    output_ns=finished - inferred,
                    batch_rows=rows,
                    batch_requests=len(items),
                ),
            )
            for item, part in zip(items, parts, strict=True)
        ]


def _set_result(future: asyncio.Future[tuple[Tensors, Timings]], result: Any) -> None:
    if not future.done():  # done() when the client went away and its handler was cancelled.
        future.set_result(result)


def _set_exception(future: asyncio.Future[tuple[Tensors, Timings]], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _resolve(item: _Item, result: tuple[Tensors, Timings]) -> None:
    if item.thread == threading.get_ident():  # Ran inline, on the submitter's own loop.
        _set_result(item.future, result)
    else:
        item.loop.call_soon_threadsafe(_set_result, item.future, result)


def _fail(item: _Item, error: BaseException) -> None:
    if item.thread == threading.get_ident():
        _set_exception(item.future, error)
    else:
        item.loop.call_soon_threadsafe(_set_exception, item.future, error)
