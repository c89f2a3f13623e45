"""A bounded work queue: keys in, a fixed number of worker threads out (client-go's workqueue,
small).

Owns: which key is worked on next, and on how many threads. A key waits in the queue at most
once (adding it again while it waits merges the two, keeping the more urgent lane), and no key
is worked on by two threads at once (one added while it is being worked on runs again after;
the reconcilers rely on this and keep no lock of their own).
Three lanes, each served before the next: ``CREATE``, ``FINISH``, ``REFRESH``, so a burst of
creates (a GitOps sync of 500 services) is not queued behind the status refreshes of the
services created a moment earlier. A failed item is retried after a backoff.

Why not kopf's own concurrency: kopf runs one worker per object, all at once, each holding the
full body of every event it has not handled yet. At N=500 that was 500 reconciles contending
for 2 cores and most of the operator's memory. Here the queue holds keys only; the workers read
the newest object from the watch-fed store when they get to it.

What it must not do: know what the work is. The handlers hand it a function; it never imports
a reconciler.
"""

from __future__ import annotations

import collections
import enum
import heapq
import logging
import threading
import time
from collections.abc import Callable, Sequence

from kubeinfer.core import api

log = logging.getLogger("kubeinfer")


class Lane(enum.IntEnum):
    """Lower runs first."""

    CREATE = 0  # a new service's first step (its Deployment)
    FINISH = 1  # the rest of a create (what its pods wait on before they can start)
    REFRESH = 2  # everything else: spec changes, status refreshes, resyncs


class WorkQueue:
    def __init__(
        self,
        work: Callable[[api.ServiceKey, Lane], None],
        *,
        workers: int,
        name: str = "reconcile",
        backoffs_s: Sequence[float] = (1.0, 2.0, 5.0, 10.0),
    ) -> None:
        self._work = work
        self._workers = workers
        self._name = name
        self._backoffs_s = tuple(backoffs_s)
        self._cond = threading.Condition()
        self._lanes: dict[Lane, collections.deque[api.ServiceKey]] = {
            lane: collections.deque() for lane in Lane
        }
        self._waiting: dict[api.ServiceKey, Lane] = {}  # key -> the lane it waits in
        self._active: set[api.ServiceKey] = set()
        self._again: dict[api.ServiceKey, Lane] = {}  # added while active: runs again after
        self._failures: dict[api.ServiceKey, int] = {}
        # (due, tie-break, key, lane)
        self._later: list[tuple[float, int, api.ServiceKey, Lane]] = []
        self._seq = 0
        self._threads: list[threading.Thread] = []
        self._stopped = False

    # ---- producers (any thread, including the event loop: never blocks for long) ----------
    def add(self, key: api.ServiceKey, lane: Lane = Lane.REFRESH) -> None:
        with self._cond:
            if self._stopped:
                return
            if key in self._active:
                self._again[key] = min(lane, self._again.get(key, lane))
                return
            self._enqueue(key, lane)

    def add_after(self, key: api.ServiceKey, delay_s: float, lane: Lane = Lane.REFRESH) -> None:
        """``add`` in ``delay_s`` seconds (held in one heap: no thread per delayed key)."""
        with self._cond:
            self._seq += 1
            heapq.heappush(self._later, (time.monotonic() + delay_s, self._seq, key, lane))
            self._cond.notify()

    def depth(self) -> int:
        """Keys waiting (not counting those being worked on)."""
        with self._cond:
            return len(self._waiting)

    def idle(self) -> bool:
        with self._cond:
            return not self._waiting and not self._active and not self._again

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        for i in range(self._workers):
            thread = threading.Thread(target=self._run, name=f"{self._name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout_s)

    # ---- internals ------------------------------------------------------------------------
    def _enqueue(self, key: api.ServiceKey, lane: Lane) -> None:
        """(lock held) Put ``key`` in ``lane`` unless it already waits in an earlier one."""
        before = self._waiting.get(key)
        if before is not None and before <= lane:
            return
        # Moving to a more urgent lane leaves a stale entry behind; _take skips it.
        self._waiting[key] = lane
        self._lanes[lane].append(key)
        self._cond.notify()

    def _take(self) -> tuple[api.ServiceKey, Lane] | None:
        """(lock held) The next key to work on, most urgent lane first; None when stopped."""
        while not self._stopped:
            now = time.monotonic()
            while self._later and self._later[0][0] <= now:
                _, _, key, lane = heapq.heappop(self._later)
                if key in self._active:
                    self._again[key] = min(lane, self._again.get(key, lane))
                else:
                    self._enqueue(key, lane)
            for lane in Lane:
                queue = self._lanes[lane]
                while queue:
                    key = queue.popleft()
                    if self._waiting.get(key) is lane:
                        del self._waiting[key]
                        self._active.add(key)
                        return key, lane
            self._cond.wait(self._later[0][0] - now if self._later else None)
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                taken = self._take()
            if taken is None:
                return
            key, lane = taken
            retry_in: float | None = None
            try:
                self._work(key, lane)
                self._failures.pop(key, None)
            except Exception:  # logged here: nothing else sees a worker's errors
                count = self._failures.get(key, 0)
                self._failures[key] = count + 1
                retry_in = self._backoffs_s[min(count, len(self._backoffs_s) - 1)]
                log.exception("%s of %s/%s failed; retrying in %.0f s", self._name, *key, retry_in)
            with self._cond:
                self._active.discard(key)
                again = self._again.pop(key, None)
                if again is not None:
                    self._enqueue(key, again)
            if retry_in is not None and again is None:
                self.add_after(key, retry_in, lane)
