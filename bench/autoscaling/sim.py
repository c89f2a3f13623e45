"""The request-level cluster simulator every scaler runs in: pods, GPUs, a FIFO queue, metrics.

Owns: virtual time in steps of ``dt`` seconds; pods (created -> Pending while no GPU is free ->
starting for their cold start -> Ready) and the Deployment controller's choice of which pods a
scale-down removes; the service's FIFO queue and what each request experiences (latency,
rejection when the queue is full, failure past the client deadline); the counters and gauges a
scrape would read; and the per-run result (SLO attainment, p99, failures, replica-seconds).

Requests are cohorts, not objects: the arrivals of one step are one cohort, uniform over the
step, and the queue is a deque of cohorts served FIFO as a fluid at the ready replicas'
capacity (constant within a step). The wait of every request in a cohort is then a linear
function of its arrival time, so the share answered within the SLO, the timeouts and the
latency histogram are exact for the fluid model at any ``dt``. Replicas behind a round-robin
Service with equal queues are modelled as one pooled queue bounded by ready x per-replica
bound; a full queue rejects new arrivals (HTTP 503), and no ready replica at all fails every
arrival. Rejected and late requests count as SLO misses and as failures.

Cost is replica-seconds of pods that hold a GPU (scheduled: starting or ready), from the moment
they are scheduled; a Pending pod holds nothing. Every scaler sees the same arrivals and the
same sequence of cold starts (the k-th pod created gets the k-th cold start of the seed), so
runs of one seed are paired.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import math
from typing import Protocol

import numpy as np
from model import ServiceModel

# Latency histogram: 1 ms bins up to the deadline's worth of milliseconds (p99 of answered
# requests).
HIST_BIN_S = 0.001


class Scaler(Protocol):
    """A scaling policy under test: called once per simulated second."""

    name: str

    def tick(self, view: View) -> int | None:
        """The desired replica count (spec.replicas), or None to leave it as it is."""
        ...


@dataclasses.dataclass
class Pod:
    id: int
    created: float
    cold_s: float
    scheduled_at: float | None = None
    ready_at: float = math.inf
    # Per-pod cumulative counters when the pod became Ready (see Sim.pp).
    snapshot: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class SimConfig:
    dt: float = 0.25
    cold_start_s: float = 60.0
    # Each pod's cold start is cold_start_s times a seeded factor in this range.
    cold_start_jitter: tuple[float, float] = (0.9, 1.1)
    gpus: int = 24
    min_replicas: int = 1
    max_replicas: int = 30
    # GPU utilization the pods export: "busy" is NVML's (Triton's nv_gpu_utilization): the share
    # of time a kernel runs, which saturates long before capacity under dynamic batching;
    # "none" is kubeinfer-onnx-server, which exports no GPU metric.
    gpu_metric: str = "none"
    record_series: bool = False


@dataclasses.dataclass
class RunResult:
    scaler: str
    requests: float = 0.0
    within_slo: float = 0.0
    answered: float = 0.0  # answered before the client deadline
    rejected: float = 0.0  # queue full or no ready replica
    late: float = 0.0  # answered past the client deadline
    replica_seconds: float = 0.0
    peak_replicas: int = 0
    scale_events: int = 0
    p99_ms: float = 0.0
    series: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    notes: dict[str, object] = dataclasses.field(default_factory=dict)

    @property
    def misses(self) -> float:
        return self.requests - self.within_slo

    @property
    def failures(self) -> float:
        return self.rejected + self.late

    @property
    def attainment(self) -> float:
        return self.within_slo / self.requests if self.requests else 1.0

    def summary(self) -> dict[str, float]:
        return {
            "requests": round(self.requests),
            "sloMisses": round(self.misses),
            "attainment": round(self.attainment, 6),
            "p99Ms": round(self.p99_ms, 1),
            "failures": round(self.failures),
            "rejected": round(self.rejected),
            "late": round(self.late),
            "replicaSeconds": round(self.replica_seconds),
            "peakReplicas": self.peak_replicas,
            "scaleEvents": self.scale_events,
        }


# Indices of the per-pod cumulative counters (Sim.pp): what one Ready pod's /metrics would
# have counted since the start, assuming it had been Ready all along.
COMPLETED, FAILED, QUEUE_S, COMPUTE_S, BUSY_S = range(5)


class View:
    """What a scaler may read at a tick: pod states, and the history of what pods exported.

    Per-second history (index = second): ``pp_hist`` the per-pod cumulative counters,
    ``inflight_hist`` the cumulative integral of requests in the service (queued or
    executing, all pods), ``pending_hist`` and ``batch_hist`` the mean pending-queue gauge
    parts (backlog per pod, and requests per pod that gather during one batch).
    """

    def __init__(self, sim: Sim) -> None:
        self._sim = sim

    @property
    def now(self) -> float:
        return self._sim.t

    @property
    def second(self) -> int:
        return round(self._sim.t)

    @property
    def spec(self) -> int:
        return self._sim.spec

    @property
    def ready_pods(self) -> list[Pod]:
        return self._sim.ready

    @property
    def ready(self) -> int:
        return len(self._sim.ready)

    @property
    def starting(self) -> int:
        return len(self._sim.starting)

    @property
    def unschedulable(self) -> int:
        return len(self._sim.pending)

    @property
    def pp_hist(self) -> list[tuple[float, ...]]:
        return self._sim.pp_hist

    @property
    def inflight_hist(self) -> list[float]:
        return self._sim.inflight_hist

    @property
    def pending_hist(self) -> list[tuple[float, float]]:
        return self._sim.pending_hist

    @property
    def ready_hist(self) -> list[int]:
        return self._sim.ready_hist

    @property
    def model(self) -> ServiceModel:
        return self._sim.model

    @property
    def config(self) -> SimConfig:
        return self._sim.config

    def pp_now(self) -> tuple[float, ...]:
        return tuple(self._sim.pp)

    def gpu_utilization(self) -> float | None:
        """The GPU gauge a pod exports now (mean over the last second), None without one."""
        if self._sim.config.gpu_metric == "none":
            return None
        hist = self._sim.pp_hist
        if len(hist) < 2:
            return None
        return min(1.0, max(0.0, hist[-1][BUSY_S] - hist[-2][BUSY_S]))

    def cold_start_pairs(self) -> list[tuple[float, float]]:
        """(created, ready) of Ready pods, oldest Ready first, as the engine lists them."""
        return [(p.created, p.ready_at) for p in self._sim.ready]


Chunk = tuple[float, float, float]  # (requests, wait of the first, wait of the last), seconds


class FluidQueue:
    """A FIFO of cohorts [a0, a1, n] (n requests arriving uniformly over [a0, a1]), served as a
    fluid at a rate that is constant within a step.

    A request arriving at a in [a0, a1] departs at D(a) = max(a, st + (a - a0) * rho), where st
    is when the server can start on the cohort and rho = arrival rate / service rate, so its
    wait D(a) - a is linear in a (clipped at 0). ``step`` returns the served part of each
    cohort as a Chunk with the waits at its two ends.
    """

    def __init__(self) -> None:
        self.cohorts: collections.deque[list[float]] = collections.deque()

    def length(self) -> float:
        return sum(c[2] for c in self.cohorts) if self.cohorts else 0.0

    def step(
        self, *, t: float, dt: float, arriving: float, cap: float, bound: float
    ) -> tuple[list[Chunk], float, float]:
        """Serve [t, t + dt] at ``cap`` req/s; (served chunks, served, rejected)."""
        be = t + dt
        queue = self.cohorts
        if arriving > 0:
            queue.append([t, be, arriving])
        chunks: list[Chunk] = []
        served = 0.0
        s = t
        while queue:
            c = queue[0]
            a0, a1, n = c
            rho = n / (a1 - a0) / cap
            st = s if s > a0 else a0
            if st >= be:
                break
            end = st + n / cap
            if end < a1:
                end = a1
            l0 = st - a0
            if end <= be + 1e-12:
                chunks.append((n, l0, l0 + (a1 - a0) * (rho - 1.0)))
                served += n
                s = end
                queue.popleft()
                continue
            # Only the part departing by the step's end: D(a*) = be on the rising branch.
            a_star = a0 + (be - st) / rho
            m = n * (a_star - a0) / (a1 - a0)
            chunks.append((m, l0, l0 + (a_star - a0) * (rho - 1.0)))
            served += m
            c[0], c[2] = a_star, n - m
            break
        # A full queue rejects the newest arrivals (only this step's: the rest were admitted).
        rejected = 0.0
        q1 = self.length()
        if q1 > bound and queue and queue[-1][1] >= be - 1e-12:
            rejected = min(q1 - bound, queue[-1][2])
            queue[-1][2] -= rejected
            if queue[-1][2] <= 1e-9:
                queue.pop()
        return chunks, served, rejected


class Sim:
    """One run: a workload's arrivals, one scaler, one seed's cold starts."""

    def __init__(
        self,
        *,
        model: ServiceModel,
        config: SimConfig,
        arrivals: np.ndarray,
        cold_factors: np.ndarray,
        initial_replicas: int,
        warmup_steps: int = 0,
    ) -> None:
        self.model, self.config = model, config
        # Steps before the measurement starts: the load is the trace's initial rate, scalers
        # observe and build their windows but the replica count stays where it starts.
        self.warmup_steps = warmup_steps
        self.arrivals = arrivals
        self.cold_factors = cold_factors
        self.t = 0.0
        self.spec = initial_replicas
        self.pods_created = 0
        self.pending: list[Pod] = []  # no GPU: oldest first
        self.starting: list[Pod] = []  # scheduled, not Ready
        self.ready: list[Pod] = []  # oldest Ready first
        self.queue = FluidQueue()
        self.pp = [0.0] * 5
        self.pp_hist: list[tuple[float, ...]] = []
        self.inflight_cum = 0.0
        self.inflight_hist: list[float] = []
        self.pending_hist: list[tuple[float, float]] = []
        self.ready_hist: list[int] = []
        self.lam_r = 0.0  # per-replica served rate over the last step
        self.batch_s = model.batch_latency(1)
        self.hist = [0.0] * (int(config_deadline(model) / HIST_BIN_S) + 2)
        self.result = RunResult(scaler="")
        self.scheduled_count = 0
        self._starts = 0  # pod starts so far: indexes the seed's cold-start sequence
        self._rejected_before = 0.0
        for _ in range(initial_replicas):
            # Already Ready when the run starts (started long before, not counted as a start).
            # They took the nominal cold start, as the operator would read from their
            # timestamps: a pod created and Ready at once would teach a cold start of 0 s.
            cold = self.config.cold_start_s
            pod = Pod(id=self._next_id(), created=-3600.0 - cold, cold_s=cold)
            pod.scheduled_at, pod.ready_at, pod.snapshot = -3600.0 - cold, -3600.0, tuple(self.pp)
            self.ready.append(pod)
            self.scheduled_count += 1

    def _next_id(self) -> int:
        self.pods_created += 1
        return self.pods_created

    # ------------------------------------------------------------------ pods
    def _create(self, n: int) -> None:
        lo, hi = self.config.cold_start_jitter
        for _ in range(n):
            index = min(self._starts, len(self.cold_factors) - 1)
            self._starts += 1
            factor = lo + (hi - lo) * float(self.cold_factors[index])
            pod = Pod(id=self._next_id(), created=self.t, cold_s=self.config.cold_start_s * factor)
            self.pending.append(pod)
        self._schedule()

    def _schedule(self) -> None:
        while self.pending and self.scheduled_count < self.config.gpus:
            pod = self.pending.pop(0)
            pod.scheduled_at = self.t
            pod.ready_at = self.t + pod.cold_s
            self.scheduled_count += 1
            bisect.insort(self.starting, pod, key=lambda p: p.ready_at)

    def _delete(self, n: int) -> None:
        # The ReplicaSet controller's order: unscheduled first, then not Ready (newest first),
        # then Ready (most recently Ready first).
        while n and self.pending:
            self.pending.pop()
            n -= 1
        while n and self.starting:
            newest = max(range(len(self.starting)), key=lambda i: self.starting[i].created)
            self.starting.pop(newest)
            self.scheduled_count -= 1
            n -= 1
        while n and self.ready:
            self.ready.pop()
            self.scheduled_count -= 1
            n -= 1
        self._schedule()

    def _promote(self) -> None:
        while self.starting and self.starting[0].ready_at <= self.t + 1e-9:
            pod = self.starting.pop(0)
            pod.snapshot = tuple(self.pp)
            self.ready.append(pod)

    def apply(self, desired: int) -> None:
        desired = min(max(desired, self.config.min_replicas), self.config.max_replicas)
        if desired == self.spec:
            return
        self.result.scale_events += 1
        if desired > self.spec:
            self._create(desired - self.spec)
        else:
            self._delete(self.spec - desired)
        self.spec = desired
        self.result.peak_replicas = max(self.result.peak_replicas, desired)

    # ------------------------------------------------------------------ requests
    def _serve(self, arriving: float) -> None:
        model, dt, t = self.model, self.config.dt, self.t
        res = self.result
        res.requests += arriving
        r = len(self.ready)
        q0 = self.queue.length()
        if r == 0:
            # No endpoint: every arrival fails at once; the queue (if any) waits.
            res.rejected += arriving
            self.lam_r = 0.0
            self.inflight_cum += q0 * dt
            return
        cap = r * model.capacity_rps
        if q0 == 0.0 and arriving <= cap * dt:
            self._serve_idle(arriving, r)
            return
        bound = r * model.queue_per_replica if model.queue_per_replica > 0 else math.inf
        chunks, served, rejected = self.queue.step(
            t=t, dt=dt, arriving=arriving, cap=cap, bound=bound
        )
        res.rejected += rejected
        q1 = self.queue.length()
        lam_r = served / (r * dt)
        if q1 > 1e-9:
            b, bs = float(model.max_batch), model.batch_latency(model.max_batch)
        else:
            b, bs = model.batch_at(lam_r)
        self.lam_r, self.batch_s = lam_r, bs
        lat = 1.5 * bs
        slo_h = model.slo_s - lat
        dl_h = model.deadline_s - lat
        hist, nbins = self.hist, len(self.hist) - 1
        within = answered = qsum = 0.0
        for m, l0, l1 in chunks:
            f_slo = _share_at_most(l0, l1, slo_h)
            f_dl = _share_at_most(l0, l1, dl_h)
            within += m * f_slo
            ok = m * f_dl
            answered += ok
            w0 = l0 if l0 > 0 else 0.0
            w1 = l1 if l1 > 0 else 0.0
            qsum += m * (0.5 * (w0 + w1) + 0.5 * bs)
            if ok > 0:
                # Half the chunk at each end of its (linear) latency range, late ones excluded.
                w1c = w1 if w1 + lat <= model.deadline_s else model.deadline_s - lat
                w0c = w0 if w0 + lat <= model.deadline_s else model.deadline_s - lat
                i0 = min(int((w0c + lat) / HIST_BIN_S), nbins)
                i1 = min(int((w1c + lat) / HIST_BIN_S), nbins)
                hist[i0] += 0.5 * ok
                hist[i1] += 0.5 * ok
        res.within_slo += within
        res.answered += answered
        res.late += served - answered
        busy = 1.0 if q1 > 1e-9 else min(1.0, lam_r * bs / b)
        pp = self.pp
        pp[COMPLETED] += served / r
        pp[FAILED] += (res.rejected - self._rejected_before) / r
        pp[QUEUE_S] += qsum / r
        pp[COMPUTE_S] += served * bs / r
        pp[BUSY_S] += busy * dt
        self.inflight_cum += served * lat + 0.5 * (q0 + q1) * dt

    def _serve_idle(self, arriving: float, r: int) -> None:
        """The common case, no backlog and no more arrivals than capacity: nobody waits.

        Same numbers as the general path (whose single chunk would have zero waits), faster.
        """
        model, res = self.model, self.result
        lam_r = arriving / (r * self.config.dt)
        b, bs = model.batch_at(lam_r)
        self.lam_r, self.batch_s = lam_r, bs
        lat = 1.5 * bs
        if lat <= model.slo_s:
            res.within_slo += arriving
        res.answered += arriving
        self.hist[min(int(lat / HIST_BIN_S), len(self.hist) - 1)] += arriving
        pp = self.pp
        pp[COMPLETED] += arriving / r
        pp[QUEUE_S] += arriving * 0.5 * bs / r
        pp[COMPUTE_S] += arriving * bs / r
        pp[BUSY_S] += min(1.0, lam_r * bs / b) * self.config.dt
        self.inflight_cum += arriving * lat

    # ------------------------------------------------------------------ the run
    def run(self, scaler: Scaler) -> RunResult:
        cfg, res = self.config, self.result
        res.scaler = scaler.name
        res.peak_replicas = self.spec
        steps_per_s = round(1.0 / cfg.dt)
        view = View(self)
        series: dict[str, list[float]] = collections.defaultdict(list)
        last = (0.0, 0.0, 0.0, 0.0)
        arrivals = self.arrivals
        warm = self.warmup_steps
        for k in range(len(arrivals)):
            self.t = k * cfg.dt
            self._promote()
            if k == warm:
                self._start_measuring()
            if k % steps_per_s == 0:
                self._record_second()
                desired = scaler.tick(view)
                if desired is not None and k >= warm:
                    self.apply(int(desired))
                    self._promote()
                if cfg.record_series and k >= warm:
                    last = self._series_point(series, last)
            self._rejected_before = res.rejected
            self._serve(float(arrivals[k]))
            res.replica_seconds += self.scheduled_count * cfg.dt
        res.p99_ms = _percentile(self.hist, 0.99) * 1000.0
        if cfg.record_series:
            res.series = dict(series)
        return res

    def _start_measuring(self) -> None:
        # Everything counted so far was warm-up: start the result afresh (same object).
        fresh = RunResult(scaler=self.result.scaler, peak_replicas=self.spec)
        self.result.__dict__.update(fresh.__dict__)
        self._rejected_before = 0.0
        self.hist = [0.0] * len(self.hist)

    def _record_second(self) -> None:
        self.pp_hist.append(tuple(self.pp))
        self.inflight_hist.append(self.inflight_cum)
        r = len(self.ready)
        backlog = self.queue.length() / r if r else 0.0
        self.pending_hist.append((backlog, self.lam_r * self.batch_s))
        self.ready_hist.append(r)

    def _series_point(
        self, series: dict[str, list[float]], last: tuple[float, float, float, float]
    ) -> tuple[float, float, float, float]:
        res = self.result
        now = (res.requests, res.within_slo, res.rejected + res.late, res.answered)
        d_req = now[0] - last[0]
        series["t"].append(self.t - self.warmup_steps * self.config.dt)
        series["spec"].append(self.spec)
        series["scheduled"].append(self.scheduled_count)
        series["ready"].append(len(self.ready))
        series["offered"].append(d_req)
        series["missShare"].append(1.0 - (now[1] - last[1]) / d_req if d_req > 0 else 0.0)
        series["failShare"].append((now[2] - last[2]) / d_req if d_req > 0 else 0.0)
        return now


def config_deadline(model: ServiceModel) -> float:
    return model.deadline_s


def _share_at_most(l0: float, l1: float, h: float) -> float:
    """Share of a linear range l0 -> l1 (uniform) that is <= h."""
    if l1 == l0:
        return 1.0 if l0 <= h else 0.0
    u = (h - l0) / (l1 - l0)
    if l1 > l0:
        return 0.0 if u <= 0 else (1.0 if u >= 1 else u)
    return 1.0 if u <= 0 else (0.0 if u >= 1 else 1.0 - u)


def _percentile(hist: list[float], q: float) -> float:
    total = sum(hist)
    if total <= 0:
        return 0.0
    goal, acc = q * total, 0.0
    for i, v in enumerate(hist):
        acc += v
        if acc >= goal:
            return (i + 0.5) * HIST_BIN_S
    return len(hist) * HIST_BIN_S


def cold_factors(*, workload: str, seed: int, cold_start_s: float, n: int = 4096) -> np.ndarray:
    """Uniform [0, 1) draws, one per pod start in creation order (shared by all scalers)."""
    key = int.from_bytes(workload.encode()[:8].ljust(8, b"\0"), "little")
    return np.random.default_rng([key, seed, round(cold_start_s * 1000), 3]).random(n)


def initial_replicas(model: ServiceModel, rate: float) -> int:
    """Where every scaler starts: the count the planned target asks for at the initial load."""
    return max(1, math.ceil(rate / model.rate_at_target()))
