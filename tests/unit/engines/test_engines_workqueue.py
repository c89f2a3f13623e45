"""The work queue: one entry per key, one worker per key, the create lane first, retries.

Real threads, no sleeps: each test waits on an event or on the queue going idle."""

from __future__ import annotations

import threading
from collections.abc import Callable

from kubeinfer.core import api
from kubeinfer.engines.workqueue import Lane, WorkQueue
from tests.waiting import wait_for


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    wait_for(check, timeout, "the queue's condition", every=0.005)


def test_keys_added_while_waiting_merge_and_the_create_lane_runs_first() -> None:
    gate = threading.Event()
    done: list[tuple[api.ServiceKey, Lane]] = []

    def work(key: api.ServiceKey, lane: Lane) -> None:
        gate.wait(5)
        done.append((key, lane))

    queue = WorkQueue(work, workers=1)
    queue.add(("ns", "blocker"))
    queue.start()
    wait_until(lambda: queue.depth() == 0)  # the blocker is being worked on
    queue.add(("ns", "a"))
    queue.add(("ns", "b"))
    queue.add(("ns", "a"))  # merges with the waiting one
    queue.add(("ns", "c"), Lane.CREATE)
    queue.add(("ns", "b"), Lane.CREATE)  # moves up a lane
    assert queue.depth() == 3
    gate.set()
    wait_until(queue.idle)
    queue.stop()
    assert done == [
        (("ns", "blocker"), Lane.REFRESH),
        (("ns", "c"), Lane.CREATE),
        (("ns", "b"), Lane.CREATE),
        (("ns", "a"), Lane.REFRESH),
    ]


def test_a_key_never_runs_on_two_workers_and_runs_again_when_added_meanwhile() -> None:
    running: set[api.ServiceKey] = set()
    overlaps: list[api.ServiceKey] = []
    calls: list[api.ServiceKey] = []
    started, release = threading.Event(), threading.Event()

    def work(key: api.ServiceKey, lane: Lane) -> None:
        if key in running:
            overlaps.append(key)
        running.add(key)
        calls.append(key)
        if len(calls) == 1:
            started.set()
            release.wait(5)
        running.discard(key)

    queue = WorkQueue(work, workers=4)
    queue.start()
    queue.add(("ns", "a"))
    assert started.wait(5)
    queue.add(("ns", "a"))
    queue.add(("ns", "a"))
    release.set()
    wait_until(lambda: len(calls) == 2 and queue.idle())
    queue.stop()
    assert overlaps == []
    assert calls == [("ns", "a"), ("ns", "a")]


def test_a_failed_key_is_retried_after_its_backoff() -> None:
    calls: list[api.ServiceKey] = []

    def work(key: api.ServiceKey, lane: Lane) -> None:
        calls.append(key)
        if len(calls) == 1:
            raise RuntimeError("the API server blinked")

    queue = WorkQueue(work, workers=1, backoffs_s=[0.01])
    queue.start()
    queue.add(("ns", "a"))
    wait_until(lambda: len(calls) == 2)
    queue.stop()
