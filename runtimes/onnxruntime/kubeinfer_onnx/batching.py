"""The dynamic batcher: merges queued requests from any connection into one model run.

Owns the bounded per-model queue, the choice of which queued requests form the next batch
(`plan_batch`, pure), concatenating their inputs, running the model in a worker thread and
splitting the outputs back. It knows nothing of protocols or metrics: each request gets its
outputs plus a `Timings` record, and the caller books them.

Like Triton's default, a batch starts as soon as a worker is free (no added delay when the
queue is idle); requests that arrive while a batch runs wait and form the next, larger one.
An optional max queue delay holds the first request back to let a batch fill. A tiny model
on an idle queue runs inline instead (see INLINE_MAX_US), and so does any model up to
INLINE_SOLO_MAX_US while its requests come one at a time (see SOLO_AFTER); a model of unknown
cost never runs on the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from kubeinfer_onnx import errors

Tensors = dict[str, npt.NDArray[Any]]
Execute = Callable[[Mapping[str, npt.NDArray[Any]]], Tensors]

# A request runs inline, on the event loop, when the batcher is idle and recent batches took
# less than this: for tiny models that saves the hop to the worker thread and back (two
# wake-ups), and the loop is held up no longer than decoding a request or two takes anyway.
INLINE_MAX_US = 200
# A request also runs inline, for a model whose runs take up to INLINE_SOLO_MAX_US, while the
# requests come one at a time: the last SOLO_AFTER batches on the worker thread each held one
# request and nothing had queued behind it by the time it finished. One request at a time
# cannot batch, and the hand-over to the worker and back is two thread wake-ups on a request
# path that is otherwise waiting (the heavy bench model at concurrency 1: about 0.2 ms of a
# 1.25-1.32 ms request; bench/runtime/PROFILE.md). While a request runs inline the loop reads
# nothing, so it cannot see other requests arriving; every PROBE_EVERY-th request that would
# run inline goes to the worker instead, and if others queue behind it the batcher is back to
# batching. Longer runs stay on the worker: the loop must not stall for long (other models'
# requests, metrics, probes), and the hand-over is a small share of them.
INLINE_SOLO_MAX_US = 5000
SOLO_AFTER = 4
PROBE_EVERY = 16


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Timings:
    """Where one request's time went; the compute parts are its batch's, as Triton books them."""

    queue_ns: int
    input_ns: int
    infer_ns: int
    output_ns: int
    batch_rows: int
    batch_requests: int


@dataclasses.dataclass(slots=True)
class _Item:
    inputs: Mapping[str, npt.NDArray[Any]]
    rows: int
    signature: Hashable
    future: asyncio.Future[tuple[Tensors, Timings]]
    enqueued_ns: int


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
    """One model's queue and the workers (one per instance) that drain it."""

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
        inline_solo_max_us: int = INLINE_SOLO_MAX_US,
    ) -> None:
        self._execute = execute
        self._on_batch = on_batch
        self._max_batch_size = max_batch_size
        self._max_queue_size = max_queue_size
        self._delay_ns = max_queue_delay_us * 1000
        self._preferred = tuple(preferred_batch_sizes)
        self._instances = instances
        self._inline_max_ns = inline_max_us * 1000
        self._inline_solo_max_ns = inline_solo_max_us * 1000
        # Recent batch execution time (EWMA), None until a batch has run in a worker.
        self._recent_ns: float | None = None
        # Worker batches in a row that held one request with nothing queued behind it, and
        # requests run inline since the last probe (SOLO_AFTER, PROBE_EVERY).
        self._solo = 0
        self._inline_runs = 0
        self._queue: collections.deque[_Item] = collections.deque()
        self._queued_rows = 0
        self._executing = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        # One thread per instance: onnxruntime releases the GIL in run(), so instances overlap.
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=instances, thread_name_prefix="kubeinfer-batch"
        )
        self._workers: list[asyncio.Task[None]] = []

    @property
    def pending(self) -> int:
        """Requests queued and not yet executing (nv_inference_pending_request_count)."""
        return len(self._queue)

    @property
    def running(self) -> int:
        """Requests in a batch being executed now (the model server protocol's running gauge)."""
        return self._executing

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"batcher-{i}") for i in range(self._instances)
        ]

    async def submit(
        self, inputs: Mapping[str, npt.NDArray[Any]], rows: int
    ) -> tuple[Tensors, Timings]:
        """Queue one validated request; raises ServerBusyError at once when the queue is full.

        Failing fast instead of waiting is what keeps memory bounded under a flood: at most
        max_queue_size requests per model are ever held.
        """
        if len(self._queue) >= self._max_queue_size:
            raise errors.ServerBusyError(
                f"the model's queue is full ({self._max_queue_size} requests); retry later"
            )
        future: asyncio.Future[tuple[Tensors, Timings]] = asyncio.get_running_loop().create_future()
        item = _Item(inputs, rows, signature_of(inputs), future, time.monotonic_ns())
        if self._inline_now():
            return self._run_inline(item)
        self._queue.append(item)
        self._queued_rows += rows
        self._idle.clear()
        self._wakeup.set()
        return await future

    def _inline_now(self) -> bool:
        """Whether the request being submitted runs on the loop (INLINE_MAX_US, SOLO_AFTER)."""
        recent = self._recent_ns
        if recent is None or self._queue or self._executing or self._delay_ns:
            return False
        if recent <= self._inline_max_ns:
            return True
        if recent > self._inline_solo_max_ns or self._solo < SOLO_AFTER:
            return False
        self._inline_runs += 1
        return self._inline_runs % PROBE_EVERY != 0  # else a probe: to the worker

    def _run_inline(self, item: _Item) -> tuple[Tensors, Timings]:
        """Run one request on the event loop (idle batcher; a tiny model, or requests one at a
        time): no thread hops."""
        self._executing += 1
        self._idle.clear()
        try:
            result = self._run([item])[0]
        except Exception as exc:
            raise errors.ExecutionError(f"model execution failed: {exc}") from exc
        finally:
            self._executing -= 1
            if not self._queue and not self._executing:
                self._idle.set()
        self._note(result[1])
        self._on_batch(result[1])
        return result

    def _note(self, timings: Timings) -> None:
        elapsed = timings.input_ns + timings.infer_ns + timings.output_ns
        recent = self._recent_ns
        self._recent_ns = elapsed if recent is None else 0.8 * recent + 0.2 * elapsed

    async def drain(self) -> None:
        """Wait until every accepted request has been answered."""
        while self._queue or self._executing:
            self._idle.clear()
            await self._idle.wait()

    async def close(self) -> None:
        await self.drain()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._pool.shutdown(wait=True)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._delay_ns and self._queued_rows < self._max_batch_size:
                await self._wait_for_fill()
                if not self._queue:  # Another instance took them meanwhile.
                    continue
            items = self._take()
            self._executing += len(items)
            try:
                results = await loop.run_in_executor(self._pool, self._run, items)
            except Exception as exc:  # Fail this batch's requests, keep the worker alive.
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(
                            errors.ExecutionError(f"model execution failed: {exc}")
                        )
            else:
                self._note(results[0][1])
                self._on_batch(results[0][1])  # Once per execution, for the batch stats.
                for item, result in zip(items, results, strict=True):
                    # done() when the client went away and its handler was cancelled.
                    if not item.future.done():
                        item.future.set_result(result)
            finally:
                self._executing -= len(items)
                # The loop was free while this batch ran: a request queued now arrived then.
                # With several instances, another batch still running is company too.
                alone = len(items) == 1 and not self._queue and not self._executing
                self._solo = self._solo + 1 if alone else 0
                if not self._queue and not self._executing:
                    self._idle.set()

    async def _wait_for_fill(self) -> None:
        deadline = self._queue[0].enqueued_ns + self._delay_ns
        while self._queue and self._queued_rows < self._max_batch_size:
            remaining = deadline - time.monotonic_ns()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining / 1e9)
            except TimeoutError:
                return

    def _take(self) -> list[_Item]:
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
        return items

    def _run(self, items: list[_Item]) -> list[tuple[Tensors, Timings]]:
        """Worker thread: concatenate, run, split. Returns one (outputs, timings) per item."""
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
