"""Per-endpoint load state and the choice of the endpoint for one request. Pure: no I/O.

Owns what the router knows about each serving pod (its own in-flight count, the queue the pod
reported for other clients, an estimate of its service time, draining and ejection) and the
three picking policies:

- least-wait (the default): power of two choices over the expected wait of one more request,
  (in_flight + external_queued + 1) * service_time / weight. The `+ 1` is the request being
  placed: it makes an idle slow pod cost more than an idle fast one.
- inflight-p2c: power of two choices over the router's own in-flight count (Knative's
  activator); a baseline.
- random: a uniform pick, what a Service does through kube-proxy; a baseline.

Time is passed in (`now`, seconds on any monotonic clock); randomness comes from the caller's
`random.Random`, so tests replay exactly.
"""

from __future__ import annotations

import collections
import enum
import math
import random
import statistics
from collections.abc import Collection, Sequence
from typing import Any

from kubeinfer_router import config

# The service-time estimate: the median, over the last 32 answers, of the latency divided by
# the place the request took in the pod's queue: a request that found k of ours in flight
# waited for about k + 1/2 services (the one being served is half done, on average), so
# latency / (k + 1/2) estimates one service, and latency itself when k is 0. Every answer is a
# sample, loaded or not, so the estimate follows a pod that slows down under load (a CPU
# limit that throttles it, a noisy neighbour) within a second, and it does not feed back the
# way throughput per busy second does (a batching pod under light load would look slow and
# draw less, then less still). A median: on a busy node scheduling delays only ever add.
SERVICE_WINDOW = 32
# Until it has this many samples a pod counts as unmeasured (the fleet's median, or its
# rival's estimate): one cold first answer must not keep it out of rotation.
SERVICE_MIN_SAMPLES = 4
# A new endpoint's first answers pay for connection setup and the server's lazy start: they
# are not its service time.
SERVICE_WARMUP = 2
# Samples older than this are forgotten, so a pod the router stopped sending to (measured
# slow, or slow for a while) becomes unmeasured again, counts as average, and is measured
# afresh from a few requests: a noisy minute or a cold start does not brand it for good, and
# a pod that really is slow costs a handful of requests every ten seconds.
SERVICE_MAX_AGE_S = 10.0
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
        "answers",
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
        "ready",
        "service_s",
        "starts",
        "stats",
        "url",
        "variant",
        "weight",
        "window",
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
        self.starts = 0  # requests ever sent here: tells a lone request from an overlapped one
        self.answers = 0  # served answers so far, for the warm-up
        self.service_s: float | None = None
        # (when, latency per place in the queue) of recent answers
        self.window: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=SERVICE_WINDOW
        )
        self.stats: Any = None  # telemetry's per-endpoint metric children, opaque here

    def __repr__(self) -> str:
        return (
            f"Endpoint({self.key} {self.variant} in_flight={self.in_flight} "
            f"queued={self.external_queued:g} service_s={self.service_s} draining={self.draining})"
        )

    @property
    def routable(self) -> bool:
        return self.ready and not self.draining


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def started(ep: Endpoint) -> int:
    """One request goes to the pod; the ticket (ours already there) goes back to `finished`."""
    ahead = ep.in_flight
    ep.in_flight += 1
    ep.starts += 1
    return ahead


def finished(
    ep: Endpoint, *, ticket: int, latency_s: float, now: float, completed: bool = True
) -> None:
    """The request left the pod after `latency_s`; `completed` False when nothing was served
    (a failed connection, a timeout, an error answer)."""
    ep.in_flight -= 1
    if not completed or ticket < 0:
        return
    ep.answers += 1
    if ep.answers <= SERVICE_WARMUP:
        return
    ep.window.append((now, latency_s / (ticket + 0.5) if ticket else latency_s))
    _estimate(ep)


def _estimate(ep: Endpoint) -> None:
    if len(ep.window) < SERVICE_MIN_SAMPLES:
        ep.service_s = None
        return
    ep.service_s = sorted(sample for _, sample in ep.window)[len(ep.window) // 2]


def eject(ep: Endpoint, now: float, *, for_s: float) -> None:
    """A connection to the pod failed: skip it for a while unless nothing else is left."""
    ep.ejected_until = now + for_s


def observe_queue(ep: Endpoint, *, pending: float, own_in_flight: int, now: float) -> None:
    """Record a scrape: the pod's queued requests, less the ones we had in flight there."""
    ep.external_queued = max(0.0, pending - own_in_flight)
    ep.queue_seen_at = now


def roll_service(ep: Endpoint, now: float) -> None:
    """Once per tick: forget samples older than SERVICE_MAX_AGE_S."""
    window = ep.window
    if window and window[0][0] < now - SERVICE_MAX_AGE_S:
        while window and window[0][0] < now - SERVICE_MAX_AGE_S:
            window.popleft()
        _estimate(ep)


def expire_queue(ep: Endpoint, now: float, *, interval_s: float) -> None:
    if now - ep.queue_seen_at > QUEUE_STALE_INTERVALS * interval_s:
        ep.external_queued = 0.0


def fleet_service(endpoints: Sequence[Endpoint]) -> float | None:
    """The median measured service time: the stand-in for pods not measured yet."""
    times = [e.service_s for e in endpoints if e.service_s is not None]
    return statistics.median(times) if times else None


def expected_wait(ep: Endpoint, *, service_s: float) -> float:
    """Seconds until one more request sent now would be answered, by this estimate."""
    return (ep.in_flight + ep.external_queued + 1.0) * service_s / ep.weight


def pick(
    candidates: Sequence[Endpoint],
    *,
    policy: config.Policy,
    rng: random.Random,
    now: float,
    default_service_s: float | None = None,
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
    # A pod not measured yet counts as the fleet's median, or else as its rival: new pods
    # are tried as if average, never shunned for lack of data.
    service_a = a.service_s or default_service_s or b.service_s or 1.0
    service_b = b.service_s or default_service_s or service_a
    wait_a = expected_wait(a, service_s=service_a)
    better = expected_wait(b, service_s=service_b) < wait_a * (1.0 - TIE_MARGIN)
    return (b if better else a), reason or Reason.LEAST_WAIT
