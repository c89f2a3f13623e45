"""holding: bounded hold queue, one wake per episode, episodes end on flush or when emptied."""

from __future__ import annotations

from kubeinfer_router import holding

Outcome = holding.Outcome


def test_first_arrival_wakes_the_rest_wait() -> None:
    q = holding.HoldQueue(max_queued=3, timeout_s=10)
    first = q.arrive(0.0)
    assert first == holding.Arrival(held=True, wake=True, deadline=10.0)
    assert q.arrive(0.05) == holding.Arrival(held=True, wake=False, deadline=10.05)
    assert q.held == 2 and q.open and q.episode_started == 0.0


def test_past_max_queued_requests_are_refused_but_counted_in_the_episode() -> None:
    q = holding.HoldQueue(max_queued=2, timeout_s=10)
    assert [q.arrive(t).held for t in (0.0, 0.1, 0.2, 0.3)] == [True, True, False, False]
    assert q.held == 2
    q.leave(Outcome.FLUSHED)
    assert q.arrive(0.4).held  # room again


def test_flush_ends_the_episode_and_the_next_one_wakes_again() -> None:
    q = holding.HoldQueue(max_queued=5, timeout_s=10)
    q.arrive(0.0)
    q.arrive(1.0)
    assert q.flush() == 0.0
    assert not q.open
    q.leave(Outcome.FLUSHED)
    q.leave(Outcome.FLUSHED)
    assert q.held == 0
    again = q.arrive(50.0)
    assert again.wake and q.episode_started == 50.0


def test_an_episode_whose_requests_all_timed_out_is_over() -> None:
    q = holding.HoldQueue(max_queued=5, timeout_s=1)
    q.arrive(0.0)
    q.arrive(0.5)
    q.leave(Outcome.TIMEOUT)
    assert q.open  # one request still waits
    assert not q.arrive(0.7).wake  # same episode
    q.leave(Outcome.TIMEOUT)
    q.leave(Outcome.CANCELLED)
    assert not q.open
    assert q.arrive(2.0).wake  # the earlier wake did not bring a pod: ask again


def test_zero_max_queued_refuses_everything_but_still_wakes_once() -> None:
    q = holding.HoldQueue(max_queued=0, timeout_s=1)
    assert q.arrive(0.0) == holding.Arrival(held=False, wake=True, deadline=1.0)
    assert q.arrive(0.1) == holding.Arrival(held=False, wake=False, deadline=1.1)
    q.flush()
    assert q.arrive(5.0).wake
