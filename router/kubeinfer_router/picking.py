"""Per-endpoint load state and the choice of the endpoint for one request. Pure: no I/O.

Owns what the router knows about each serving pod (its own in-flight count, the queue the pod
reported for other clients, an estimate of its service rate, draining and ejection) and the
three picking policies:

- least-wait (the default): power of two choices over the expected wait of one more request,
  (in_flight + external_queued + 1) / (weight * service_rate). The `+ 1` is the request being
  placed: it makes an idle slow pod cost more than an idle fast one.
- inflight-p2c: power of two choices over the router's own in-flight count (Knative's
  activator); a baseline.
- random: a uniform pick, what a Service does through kube-proxy; a baseline.

Time is passed in (`now`, seconds on any monotonic clock); randomness comes from the caller's
`random.Random`, so tests replay exactly.
"""

from __future__ import annotations

import enum
import math
import random
import statistics
from collections.abc import Collection, Sequence
from typing import Any

from kubeinfer_router import config

# The service-rate estimate: completions per second of busy time (time with at least one of
# our requests in flight), folded into an EWMA at each scrape tick once a window holds enough
# evidence. Busy-time throughput is the pod's rate at the concurrency we give it: for pods of
# one model it ranks them correctly, and it costs two clock reads per request.
RATE_MIN_COMPLETIONS = 5
RATE_MIN_BUSY_S = 0.002
RATE_MAX_WINDOW_S = 2.0  # a window this busy counts even with fewer completions
RATE_ALPHA = 0.3
# A pod that got no traffic in a tick drifts this fraction back towards the fleet's median:
# a pod once measured slow (a noisy neighbour, a cold cache) is tried again eventually.
RATE_DRIFT = 0.02
RATE_FLOOR = 1e-3
# Expected waits closer than this fraction are a tie, and the first of the random pair wins:
# rate estimates of identical pods differ by noise, and without a margin the router would
# pile all light load onto whichever one measured a little faster.
TIE_MARGIN = 0.2
# A scraped queue older than this many scrape intervals is ignored (the pod stopped answering).
QUEUE_STALE_INTERVALS = 4


class Reason(enum.StrEnum):
    """Why an endpoint was chosen (a label of the decisions metric)."""

    LEAST_WAIT = "least_wait"
    INFLIGHT = "inflight"
    RANDOM = "random"
    SINGLE = "single"  # one candidate: no choice to make
    EJECTED = "ejected"  # every candidate had failed a connection recently: tried anyway
    NONE = "none"


class Endpoint:
    """One serving pod as the router sees it. Mutated only on the event loop thread."""

    __slots__ = (
        "busy_s",
        "busy_since",
        "completed",
        "draining",
        "ejected_until",
        "external_queued",
        "host",
        "host_header",
        "in_flight",
        "key",
        "metrics_port",
        "port",
        "queue_seen_at",
        "rate",
        "ready",
        "stats",
        "url",
        "variant",
        "weight",
    )

    def __init__(
        self,
        *,
        key: str,
        host: str,
        port: int,
        metrics_port: int | None,
        variant: str,
        weight: float = 1.0,
    ) -> None:
        self.key = key
        self.host = host
        self.port = port
        self.metrics_port = metrics_port
        self.variant = variant
        self.weight = weight
        self.url = f"http://{_bracket(host)}:{port}"
        self.host_header = f"Host: {_bracket(host)}:{port}\r\n".encode("latin-1")
        self.ready = True
        self.draining = False
        self.in_flight = 0
        # Requests queued at the pod that are not ours (other router replicas, direct callers):
        # what the pod reported minus what we had in flight there. Ours are counted live.
        self.external_queued = 0.0
        self.queue_seen_at = -math.inf
        self.ejected_until = -math.inf
        self.busy_since: float | None = None
        self.busy_s = 0.0
        self.completed = 0
        self.rate: float | None = None
        self.stats: Any = None  # telemetry's per-endpoint metric children, opaque here

    def __repr__(self) -> str:
        return (
            f"Endpoint({self.key} {self.variant} in_flight={self.in_flight} "
            f"queued={self.external_queued:g} rate={self.rate} draining={self.draining})"
        )

    @property
    def routable(self) -> bool:
        return self.ready and not self.draining


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def started(ep: Endpoint, now: float) -> None:
    if ep.in_flight == 0:
        ep.busy_since = now
    ep.in_flight += 1


def finished(ep: Endpoint, now: float, *, completed: bool = True) -> None:
    """One request left the pod; `completed` False for a failed connection (no service)."""
    ep.in_flight -= 1
    if completed:
        ep.completed += 1
    if ep.in_flight == 0 and ep.busy_since is not None:
        ep.busy_s += now - ep.busy_since
        ep.busy_since = None


def eject(ep: Endpoint, now: float, *, for_s: float) -> None:
    """A connection to the pod failed: skip it for a while unless nothing else is left."""
    ep.ejected_until = now + for_s


def observe_queue(ep: Endpoint, *, pending: float, own_in_flight: int, now: float) -> None:
    """Record a scrape: the pod's queued requests, less the ones we had in flight there."""
    ep.external_queued = max(0.0, pending - own_in_flight)
    ep.queue_seen_at = now


def roll_rate(ep: Endpoint, now: float, *, fleet_rate: float | None) -> None:
    """Fold the busy time and completions since the last window into the rate estimate."""
    busy = ep.busy_s + (now - ep.busy_since if ep.busy_since is not None else 0.0)
    enough = ep.completed >= RATE_MIN_COMPLETIONS and busy >= RATE_MIN_BUSY_S
    if enough or busy >= RATE_MAX_WINDOW_S:
        sample = max(ep.completed, 1) / busy
        ep.rate = sample if ep.rate is None else ep.rate + RATE_ALPHA * (sample - ep.rate)
        ep.rate = max(ep.rate, RATE_FLOOR)
        ep.busy_s, ep.completed = 0.0, 0
        if ep.busy_since is not None:
            ep.busy_since = now
    elif busy == 0.0 and ep.rate is not None and fleet_rate is not None:
        ep.rate += RATE_DRIFT * (fleet_rate - ep.rate)


def expire_queue(ep: Endpoint, now: float, *, interval_s: float) -> None:
    if now - ep.queue_seen_at > QUEUE_STALE_INTERVALS * interval_s:
        ep.external_queued = 0.0


def fleet_rate(endpoints: Sequence[Endpoint]) -> float | None:
    """The median measured rate: the stand-in for pods not measured yet."""
    rates = [e.rate for e in endpoints if e.rate is not None]
    return statistics.median(rates) if rates else None


def expected_wait(ep: Endpoint, *, default_rate: float) -> float:
    rate = ep.rate if ep.rate is not None else default_rate
    return (ep.in_flight + ep.external_queued + 1.0) / (ep.weight * rate)


def pick(
    candidates: Sequence[Endpoint],
    *,
    policy: config.Policy,
    rng: random.Random,
    now: float,
    default_rate: float | None = None,
    exclude: Collection[str] = (),
) -> tuple[Endpoint | None, Reason]:
    """The endpoint for one request among routable candidates not in `exclude`.

    Ejected endpoints (a recent connection failure) are left out while any other remains.
    """
    pool = [
        e
        for e in candidates
        if e.ready and not e.draining and e.ejected_until <= now and e.key not in exclude
    ]
    reason: Reason | None = None
    if not pool:
        pool = [e for e in candidates if e.ready and not e.draining and e.key not in exclude]
        reason = Reason.EJECTED
    n = len(pool)
    if n == 0:
        return None, Reason.NONE
    if n == 1:
        return pool[0], reason or Reason.SINGLE
    if policy is config.Policy.RANDOM:
        return pool[rng.randrange(n)], reason or Reason.RANDOM
    i = rng.randrange(n)
    j = rng.randrange(n - 1)
    j += j >= i
    a, b = pool[i], pool[j]
    if policy is config.Policy.INFLIGHT_P2C:
        return (b if b.in_flight < a.in_flight else a), reason or Reason.INFLIGHT
    rate = default_rate or 1.0
    better = expected_wait(b, default_rate=rate) < expected_wait(a, default_rate=rate) * (
        1.0 - TIE_MARGIN
    )
    return (b if better else a), reason or Reason.LEAST_WAIT
