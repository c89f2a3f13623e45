"""The proxy: the aiohttp server clients talk to and the aiohttp client that talks to pods.

Owns one request's path through the router: refuse when the router itself is overloaded or
stopping (503 + Retry-After), hold it while no endpoint is ready (`holding` decides, an
asyncio event waits), choose a variant (`splitting`) and an endpoint (`picking`), forward the
body untouched (JSON or binary tensors, `Inference-Header-Content-Length` and all), retry on
another pod only when the connection failed before any response began, and pass the pod's
answer back as it came: a pod's v2 error (400 for a malformed request, 404 for an unknown
model) reaches the client unchanged; the router answers 5xx of its own only for its own
conditions (no pod accepted the connection, the pod cut its answer short, a timeout).
Also the router's own endpoints: /healthz, /readyz, /metrics and /router/endpoints.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import typing
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from multidict import CIMultiDict

from kubeinfer_router import config, holding, picking, splitting, table, telemetry, upstream

log = logging.getLogger("kubeinfer_router.proxy")

# RFC 9110 7.6.1: connection-specific fields a proxy must not forward, plus the ones the
# client and server libraries compute themselves (Host, Content-Length), and Expect: the
# router has the whole body already, so the pod has nothing to agree to.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
        "Expect",
    )
)
# How long a pod that refused or reset a connection is skipped while others remain.
EJECT_S = 1.0
WAKE_RETRY_S = 1.0
CONNECT_BACKOFF_S = 0.05
CONNECT_BACKOFF_MAX_S = 1.0

Wake = Callable[[], Awaitable[None]]


def error_response(status: int, message: str, *, retry_after: int | None = None) -> web.Response:
    """The router's own answers use the v2 error body, like the servers behind it."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.Response(
        status=status,
        body=json.dumps({"error": message}).encode(),
        content_type="application/json",
        headers=headers,
    )


HOP_BY_HOP_BYTES = frozenset(h.encode() for h in HOP_BY_HOP)


def forwarded_head(raw_headers: Sequence[tuple[bytes, bytes]], body_length: int) -> bytes:
    """The client's headers for the pod, less hop-by-hop ones, plus our Content-Length.

    Ends with the blank line; the caller puts the request line and Host in front.
    """
    dropped = HOP_BY_HOP_BYTES
    for name, value in raw_headers:
        if name.lower() == b"connection":  # it may name more hop-by-hop fields (RFC 9110)
            dropped = dropped | {t.strip().lower() for t in value.split(b",")}
    parts = [
        name + b": " + value + b"\r\n" for name, value in raw_headers if name.lower() not in dropped
    ]
    parts.append(b"Content-Length: %d\r\n\r\n" % body_length)
    return b"".join(parts)


class Exchange(typing.NamedTuple):
    """One request as the pods will get it, built once for every attempt."""

    line: bytes  # the request line
    rest: bytes  # headers after Host, and the blank line
    body: bytes
    head: bool  # a HEAD request: the answer has no body
    arrived: float
    held_s: float


class Proxy:
    def __init__(
        self,
        *,
        cfg: config.RouterConfig,
        endpoints: table.Table,
        stats: telemetry.Telemetry,
        wake: Wake | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.table = endpoints
        self.stats = stats
        self.wake = wake
        self.rng = rng or random.Random()
        self.clock = clock
        self.splitter = splitting.Splitter({v.name: v.weight for v in cfg.variants})
        self.holds = holding.HoldQueue(max_queued=cfg.max_queued, timeout_s=cfg.hold_timeout_s)
        self.active = 0
        self.stopping = False
        self.synced = asyncio.Event()  # discovery has listed once: an empty table means zero
        self._routable = asyncio.Event()
        self._wake_task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.pool = upstream.Pool(
            connect_timeout_s=cfg.connect_timeout_s,
            request_timeout_s=cfg.request_timeout_s,
            max_per_endpoint=cfg.max_connections_per_endpoint,
        )
        endpoints.listeners.append(self._on_available)
        stats.in_flight.set_function(lambda: self.active)
        stats.held.set_function(lambda: self.holds.held)
        stats.watch_endpoints(endpoints.endpoints)
        self._on_available(endpoints.available)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(upstream.IDLE_TIMEOUT_S / 3)
            self.pool.sweep()

    async def stop(self) -> None:
        """Stop taking work: held requests are answered 503 now, new ones 503 from here on."""
        self.stopping = True
        self._routable.set()  # wake every held request so it sees `stopping`
        if self._wake_task is not None:
            self._wake_task.cancel()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.pool.close()

    def reconfigure(self, cfg: config.RouterConfig) -> None:
        """A reloaded config: weights, limits and timeouts apply to the next request."""
        self.cfg = cfg
        self.splitter.set_weights({v.name: v.weight for v in cfg.variants})
        self.holds.max_queued = cfg.max_queued
        self.holds.timeout_s = cfg.hold_timeout_s

    def _on_available(self, available: frozenset[str]) -> None:
        if available:
            started = self.holds.flush()
            if started is not None:
                log.info(
                    "endpoints ready after %.3fs: flushing held requests", self.clock() - started
                )
            self._routable.set()
        elif not self.stopping:
            self._routable.clear()

    # -- the app ---------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.max_request_bytes)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/router/endpoints", self._endpoints)
        app.router.add_route("*", "/v2", self.handle)
        app.router.add_route("*", "/v2/{tail:.*}", self.handle)
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, request: web.Request) -> web.Response:
        # Ready once discovery has listed (so "no endpoints" really means zero replicas) and
        # until shutdown begins. Zero endpoints is ready: holding is the router's job then.
        ok = self.synced.is_set() and not self.stopping
        return web.Response(status=200 if ok else 503, text="ok" if ok else "not ready")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.stats.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    async def _endpoints(self, request: web.Request) -> web.Response:
        doc = {
            "available": sorted(self.table.available),
            "held": self.holds.held,
            "in_flight": self.active,
            "weights": self.splitter.weights,
            "endpoints": [
                {
                    "key": e.key,
                    "variant": e.variant,
                    "url": e.url,
                    "ready": e.ready,
                    "draining": e.draining,
                    "in_flight": e.in_flight,
                    "queued": e.external_queued,
                    "service_s": e.service_s,
                    "weight": e.weight,
                }
                for e in self.table.endpoints()
            ],
        }
        return web.json_response(doc)

    # -- one request -----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        arrived = self.clock()
        if self.stopping:
            self.stats.decision("shutdown")
            return error_response(
                503, "the router is shutting down", retry_after=self.cfg.retry_after_s
            )
        if self.active >= self.cfg.max_in_flight:
            self.stats.decision("overload")
            return error_response(
                503, "the router is at its in-flight limit", retry_after=self.cfg.retry_after_s
            )
        held_s = 0.0
        if not self.table.available or not self.synced.is_set():
            # Held before its body is read: a held request costs a socket, not its payload,
            # and a refused one (429, 503) is never read at all.
            refused = await self._hold(arrived)
            if refused is not None:
                return refused
            held_s = self.clock() - arrived
        body = await request.read()
        self.active += 1
        try:
            return await self._forward(request, body, arrived, held_s)
        except Exception:
            # A bug of ours must still read as the router's, never as the model's answer.
            log.exception("proxying %s %s failed", request.method, request.raw_path)
            self.stats.decision("internal_error")
            return error_response(502, "the router failed to proxy this request")
        finally:
            self.active -= 1

    async def _hold(self, arrived: float) -> web.Response | None:
        """Wait for a ready endpoint; None when one is there, else the answer to send."""
        if not self.synced.is_set():
            # Before discovery's first listing an empty table says nothing: wait for it
            # rather than wake a service that may well be running.
            try:
                async with asyncio.timeout(self.cfg.hold_timeout_s):
                    await self.synced.wait()
            except TimeoutError:
                return error_response(
                    503, "no endpoint list yet", retry_after=self.cfg.retry_after_s
                )
            if self.table.available:
                return None
        arrival = self.holds.arrive(arrived)
        if arrival.wake:
            self._start_wake()
        if not arrival.held:
            self.stats.decision("queue_full")
            return error_response(
                429,
                f"no ready replica and {self.cfg.max_queued} requests already held",
                retry_after=self.cfg.retry_after_s,
            )
        self.stats.decision("held")
        outcome = holding.Outcome.TIMEOUT
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(loop.time() + (arrival.deadline - arrived)):
                while not self.table.available and not self.stopping:
                    await self._routable.wait()
            outcome = holding.Outcome.SHUTDOWN if self.stopping else holding.Outcome.FLUSHED
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            outcome = holding.Outcome.CANCELLED
            raise
        finally:
            self.holds.leave(outcome)
            self.stats.hold_duration.labels(outcome.value).observe(self.clock() - arrived)
        if outcome is holding.Outcome.FLUSHED:
            return None
        if outcome is holding.Outcome.SHUTDOWN:
            return error_response(
                503, "the router is shutting down", retry_after=self.cfg.retry_after_s
            )
        self.stats.decision("hold_timeout")
        return error_response(
            503,
            f"no ready replica within {self.cfg.hold_timeout_s:g}s",
            retry_after=self.cfg.retry_after_s,
        )

    def _start_wake(self) -> None:
        if self.wake is None or (self._wake_task is not None and not self._wake_task.done()):
            return
        self._wake_task = asyncio.create_task(self._wake_loop(self.wake))

    async def _wake_loop(self, wake: Wake) -> None:
        # Retried while the episode is open: a failed API call must not leave requests held
        # until their timeout when the next try would have worked.
        episode = self.holds.episode_started
        while True:
            try:
                await wake()
            except Exception:
                log.exception("wake hook failed; retrying in %.1fs", WAKE_RETRY_S)
                self.stats.wakes.labels("error").inc()
            else:
                self.stats.wakes.labels("ok").inc()
                if episode is not None:
                    self.stats.wake_latency.observe(self.clock() - episode)
                return
            await asyncio.sleep(WAKE_RETRY_S)
            if not self.holds.open or self.stopping:
                return

    def _candidates(self, variant: str | None, tried: list[str]) -> list[picking.Endpoint]:
        if variant is not None:
            pool = self.table.routable.get(variant, [])
            if not tried or any(e.key not in tried for e in pool):
                return pool
        # A retry that used up its variant may go to any other that can serve.
        return [e for eps in self.table.routable.values() for e in eps]

    async def _forward(
        self, request: web.Request, body: bytes, arrived: float, held_s: float
    ) -> web.StreamResponse:
        if len(self.cfg.variants) == 1:
            variant: str | None = self.cfg.variants[0].name
        else:
            variant = self.splitter.choose(self.table.available)
        # Everything but the Host line is the same for every attempt: build it once.
        line = f"{request.method} {request.raw_path} HTTP/1.1\r\n".encode("latin-1")
        rest = forwarded_head(request.raw_headers, len(body))
        exchange = Exchange(line, rest, body, request.method == "HEAD", arrived, held_s)
        # When no pod accepts the connection (a pod Ready before its server listens, every
        # replica restarting), the request waits and tries again, with backoff, for as long
        # as it could have been held: a client sees a late answer rather than a 502.
        deadline = arrived + self.cfg.hold_timeout_s
        backoff = CONNECT_BACKOFF_S
        while True:
            outcome = await self._attempts(variant, exchange)
            if isinstance(outcome, web.StreamResponse):
                return outcome
            if self.stopping:
                return error_response(
                    503, "the router is shutting down", retry_after=self.cfg.retry_after_s
                )
            if self.clock() + backoff > deadline:
                self.stats.decision("exhausted")
                return self._answer_error(
                    variant, arrived, 502, f"no endpoint accepted the connection ({outcome})"
                )
            self.stats.decision("connect_backoff")
            await asyncio.sleep(backoff)
            backoff = min(CONNECT_BACKOFF_MAX_S, backoff * 2)

    async def _attempts(self, variant: str | None, x: Exchange) -> web.StreamResponse | str:
        """Up to 1 + retries endpoints; the response, or why no endpoint took the request."""
        tried: list[str] = []
        last_error = "no ready endpoint"
        for attempt in range(self.cfg.retries + 1):
            now = self.clock()
            ep, reason = picking.pick(
                self._candidates(variant, tried),
                policy=self.cfg.policy,
                rng=self.rng,
                now=now,
                default_service_s=self.table.fleet_service.get(variant) if variant else None,
                exclude=tried,
            )
            if ep is None:
                break
            self.stats.decision("retry" if attempt else reason.value)
            ticket = picking.started(ep)
            try:
                answer = await self.pool.request(
                    ep.host, ep.port, x.line + ep.host_header + x.rest, x.body, head_only=x.head
                )
            except upstream.ConnectFailed as exc:
                # Refused, reset or closed before any answer byte: nothing was answered, so
                # another pod may take it.
                done = self.clock()
                picking.finished(ep, ticket=ticket, latency_s=done - now, now=done, completed=False)
                picking.eject(ep, done, for_s=EJECT_S)
                tried.append(ep.key)
                last_error = f"{ep.key}: {exc}"
                continue
            except upstream.UpstreamTimeout as exc:
                picking.finished(ep, ticket=ticket, latency_s=0.0, now=now, completed=False)
                return self._answer_error(ep.variant, x.arrived, 504, str(exc))
            except upstream.AnswerBroken as exc:
                # The answer had begun: never retried (the pod may have acted on it).
                picking.finished(ep, ticket=ticket, latency_s=0.0, now=now, completed=False)
                return self._answer_error(ep.variant, x.arrived, 502, f"{ep.key}: {exc}")
            except asyncio.CancelledError:
                picking.finished(ep, ticket=ticket, latency_s=0.0, now=now, completed=False)
                raise
            done = self.clock()
            # Only a success measures service: an error answer (queue full, bad input) is quick.
            served = 200 <= answer.status < 300
            picking.finished(ep, ticket=ticket, latency_s=done - now, now=done, completed=served)
            self.stats.upstream_for(ep).observe(done - now)
            vstats = self.stats.variant(ep.variant)
            (vstats.errors if answer.status >= 500 else vstats.successes).inc()
            response = web.Response(
                status=answer.status,
                reason=answer.reason,
                body=answer.body,
                headers=CIMultiDict(
                    (k, v) for k, v in answer.headers if k.lower() not in HOP_BY_HOP
                ),
            )
            end = self.clock()
            vstats.duration.observe(end - x.arrived)
            self.stats.overhead.observe(max(0.0, (end - x.arrived) - (done - now) - x.held_s))
            return response
        return last_error

    def _answer_error(
        self, variant: str | None, arrived: float, status: int, message: str
    ) -> web.Response:
        if variant is not None:
            vstats = self.stats.variant(variant)
            vstats.errors.inc()
            vstats.duration.observe(self.clock() - arrived)
        return error_response(status, message)
