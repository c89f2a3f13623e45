"""Held-request accounting while no endpoint is ready (scale from zero). Pure: no I/O.

Owns the numbers the proxy must agree on: how many requests are held (at most `max_queued`;
past it the answer is 429 with Retry-After), each one's deadline (then 503), and when to call
the wake hook: once per hold episode. An episode starts with the first request that finds no
ready endpoint and ends when endpoints appear (`flush`) or when its last held request has left
without one (timed out or answered at shutdown), so the next arrival wakes again. Retrying a
failed wake call is the caller's job while `open` stays true.

The waiting itself (an asyncio event) lives in the proxy; this module is only arithmetic.
"""

from __future__ import annotations

import dataclasses
import enum


class Outcome(enum.StrEnum):
    """How a held request left the queue (a label of the held-requests metric)."""

    FLUSHED = "flushed"  # an endpoint became ready
    REJECTED = "rejected"  # the queue was full: 429
    TIMEOUT = "timeout"  # no endpoint within the hold timeout: 503
    SHUTDOWN = "shutdown"  # the router is stopping: 503
    CANCELLED = "cancelled"  # the client went away


@dataclasses.dataclass(frozen=True, slots=True)
class Arrival:
    held: bool  # False: answer 429 now
    wake: bool  # call the wake hook now
    deadline: float  # when a held request gives up (503)


class HoldQueue:
    def __init__(self, *, max_queued: int, timeout_s: float) -> None:
        self.max_queued = max_queued
        self.timeout_s = timeout_s
        self.held = 0
        self.episode_started: float | None = None
        self._woken = False

    @property
    def open(self) -> bool:
        """An episode is under way: requests found no endpoint and none has appeared yet."""
        return self.episode_started is not None

    def arrive(self, now: float) -> Arrival:
        """A request found no ready endpoint."""
        if self.episode_started is None:
            self.episode_started = now
            self._woken = False
        wake = not self._woken
        self._woken = True
        held = self.held < self.max_queued
        if held:
            self.held += 1
        return Arrival(held=held, wake=wake, deadline=now + self.timeout_s)

    def leave(self, outcome: Outcome) -> None:
        """A held request left: flushed to an endpoint, timed out, cancelled, or shut down."""
        self.held -= 1
        if self.held == 0 and outcome is not Outcome.FLUSHED:
            self.episode_started = None

    def flush(self) -> float | None:
        """Endpoints are ready: the episode ends. Returns when it started (None: none open)."""
        started, self.episode_started = self.episode_started, None
        return started
