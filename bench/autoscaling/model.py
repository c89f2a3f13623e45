"""The serving model every scaler is measured on: one replica's capacity and latency, the SLO.

Owns: turning bench/autoscaling/profile.json into a batch-aware service model (via the
product's own ``kubeinfer.core.planning``, as `kubeinfer plan` would), and the benchmark's
fixed parameters (latency SLO, per-replica queue bound, client deadline, cluster GPUs, replica
bounds). Pure; nothing here simulates time.

Batch-aware service model (Triton-style dynamic batching, max_queue_delay 0):
- a replica executes batches back to back; a batch of b requests takes s(b) = the profile's
  p50 at batch b (linear between profiled batch sizes), up to the planned max batch B;
- at a per-replica arrival rate lam below capacity the batch settles where lam = b / s(b)
  (the requests that arrived during the previous batch form the next one);
- a request waits on average half a batch for the one in flight, then runs in its own:
  latency = 1.5 * s(b) plus any backlog wait the fluid queue adds;
- capacity is B / s(B) requests per second per replica (the profile's throughput at B).
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import pathlib

from kubeinfer.core import planning

HERE = pathlib.Path(__file__).resolve().parent
PROFILE_PATH = HERE / "profile.json"

# The latency the plan is made for and the SLO a request is judged against: answered within
# 60 ms end to end (the p99 target `kubeinfer plan` sized the batch for).
SLO_MS = 60.0
# kubeinfer-onnx-server's --max-queue-size default: requests queued per replica before 503.
QUEUE_PER_REPLICA = 256
# A client gives up after this long; a request answered later counts as failed.
CLIENT_DEADLINE_S = 2.0
# GPUs the cluster can give this service; pods beyond stay Pending (unschedulable).
CLUSTER_GPUS = 24
# The InferenceService's (and every peer's) replica bounds: the same for everyone.
MIN_REPLICAS, MAX_REPLICAS = 1, 30
# The load the plan is made for (only the target per replica matters here).
PLAN_RPS = 8000.0


@dataclasses.dataclass(frozen=True)
class ServiceModel:
    """One replica: batch latency s(b) in seconds, the max batch, and the planned target."""

    batches: tuple[int, ...]
    latency_s: tuple[float, ...]
    max_batch: int
    capacity_rps: float  # requests per second one ready replica serves at most
    target: float  # `kubeinfer plan`'s QueueDepth target (in flight per replica)
    slo_s: float = SLO_MS / 1000.0
    queue_per_replica: int = QUEUE_PER_REPLICA
    deadline_s: float = CLIENT_DEADLINE_S
    # (per-replica rate, batch, batch latency) at 64 points up to capacity, for batch_at().
    _table: tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]] = ((), (), ())

    def batch_latency(self, b: float) -> float:
        """s(b): seconds to execute a batch of b (interpolated, b clamped to [1, max_batch])."""
        b = min(max(b, 1.0), float(self.max_batch))
        i = bisect.bisect_left(self.batches, b)
        if i <= 0:
            return self.latency_s[0]
        if i >= len(self.batches):
            return self.latency_s[-1]
        b0, b1 = self.batches[i - 1], self.batches[i]
        s0, s1 = self.latency_s[i - 1], self.latency_s[i]
        return s0 + (s1 - s0) * (b - b0) / (b1 - b0)

    def batch_at(self, lam: float) -> tuple[float, float]:
        """(batch, batch latency) a replica settles at under ``lam`` requests per second."""
        rates, bs, ss = self._table
        if lam >= rates[-1]:
            return bs[-1], ss[-1]
        i = bisect.bisect_left(rates, lam)
        if i == 0:
            return bs[0], ss[0]
        r0, r1 = rates[i - 1], rates[i]
        f = (lam - r0) / (r1 - r0)
        return bs[i - 1] + f * (bs[i] - bs[i - 1]), ss[i - 1] + f * (ss[i] - ss[i - 1])

    def in_flight(self, lam: float) -> float:
        """Requests in one replica (queued for the next batch or executing) at ``lam`` req/s."""
        _, s = self.batch_at(lam)
        return lam * 1.5 * s

    def rate_at_target(self) -> float:
        """Per-replica request rate at which the in-flight count equals the planned target."""
        lo, hi = 0.0, self.capacity_rps
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.in_flight(mid) < self.target else (lo, mid)
        return lo


def _steady_table(
    model: ServiceModel,
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    # Invert lam = b / s(b) on a grid of b; b / s(b) rises with b for any sane profile. Below
    # lam = 1 / s(1) the replica runs batches of one and is partly idle.
    bs = [1.0 + (model.max_batch - 1.0) * i / 63 for i in range(64)]
    ss = [model.batch_latency(b) for b in bs]
    rates = [b / s for b, s in zip(bs, ss, strict=True)]
    return tuple(rates), tuple(bs), tuple(ss)


def load(path: pathlib.Path = PROFILE_PATH) -> ServiceModel:
    """The service model from a profile, sized by the product's planner."""
    rows = planning.parse_profile(json.loads(path.read_text()))
    plan = planning.plan(profile=rows, target_rps=PLAN_RPS, p99_target_ms=SLO_MS)
    usable = [r for r in rows if r.batch <= plan.max_batch_size]
    model = ServiceModel(
        batches=tuple(r.batch for r in usable),
        latency_s=tuple(r.p50_ms / 1000.0 for r in usable),
        max_batch=plan.max_batch_size,
        capacity_rps=plan.capacity_rps,
        target=plan.target_queue_depth,
    )
    return dataclasses.replace(model, _table=_steady_table(model))
