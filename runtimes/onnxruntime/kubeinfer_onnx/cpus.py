"""The CPUs this server has, and the two onnxruntime settings sized from them.

Owns: reading the container's CPU limit (the cgroup's quota, else the limit the operator
passes through the downward API), the cores the process may run on (its affinity) and the
host's; the intra-op thread default (those cores shared among the workers, never the host's
raw core count); and `--allow-spinning auto`, the rule for when onnxruntime's threads may
busy-wait (Spinning).

Why spinning needs a rule (bench/runtime/PROFILE.md, 2026-12-05): a compute-bound model served
1.02-1.21x Triton's throughput at one call and 0.91-0.97x at eight with spinning on, 0.72-0.87x
with it off, on a quiet host; yet with one core busy the order reversed (spinning off served
1.1-1.6x what spinning did): a spinning thread burns the core its neighbours need, and in a pod
it burns the CPU quota. So it pays only where no neighbour shares the cores: a process pinned
to cores it owns. In Kubernetes that is a Guaranteed pod asking whole CPUs on a node whose
kubelet runs the static CPU manager policy: the container's cpuset is then exactly its CPU
limit, a strict subset of the node's cores, and no other container is scheduled there. And
only for models big enough that compute is the bound: for small ones the event loop is, and
spinning threads take its CPU (the 5 MB mlp: 1.3-1.7x Triton at one call but 0.58-0.86x at
eight with spinning, against 0.86-0.97x and 0.95-1.06x without).

Spinning within runs only (onnxruntime's `session.force_spinning_stop`: the threads spin between
a run's parallel sections and sleep once the last run returns) is the middle way for those
models on shared cores: on the quiet host the heavy model served 0.83-1.04x Triton with it
against 0.72-1.01x with spinning off, and with one core busy about as much as with it off
relative to Triton (1.28-1.54x against 1.23-1.67x) where full spinning lost 11-37 %
(bench/runtime/spin-ab/).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import pathlib
from collections.abc import Mapping

from kubeinfer_onnx.workers import SMALL_MODELS_BYTES

CGROUP_ROOT = pathlib.Path("/sys/fs/cgroup")
# The container's CPU limit in millicores, as the operator passes it (the downward API's
# `limits.cpu` with divisor 1m): the cgroup has no quota when the kubelet pins a container to
# whole cores with the CFS quota off (cpuCFSQuota: false, or the DisableCPUQuotaWithExclusiveCPUs
# feature), and the limit still says how many cores are the pod's.
LIMIT_ENV = "KUBEINFER_CPU_LIMIT_MILLICORES"

SPIN_RULE = (
    "off for models small enough for the event loop to be the bound (up to "
    f"{SMALL_MODELS_BYTES >> 20} MiB on disk); for bigger ones on when the process is pinned "
    "to cores it owns (its CPU affinity is a strict subset of the host's cores and exactly its "
    "whole-core CPU limit: a Guaranteed pod on a node with the static CPU manager policy) and "
    "every worker's intra-op threads fit on them, else in-runs"
)


class Spinning(enum.Enum):
    """How onnxruntime's pool threads wait for work."""

    OFF = "off"  # they sleep as soon as they have none
    IN_RUNS = "in-runs"  # they spin between a run's parallel sections, sleep once it returns
    ON = "on"  # onnxruntime's default: they also spin a while after each run


@dataclasses.dataclass(frozen=True)
class Cpus:
    """What the kernel (and the pod spec) say about this process's CPUs."""

    limit: float | None  # cores, exactly (1.5 for 1500m); None when unlimited or unknown
    allowed: int  # cores this process may run on (its affinity)
    online: int  # the host's cores

    @classmethod
    def read(
        cls, root: pathlib.Path = CGROUP_ROOT, environ: Mapping[str, str] = os.environ
    ) -> Cpus:
        online = os.cpu_count() or 1
        allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else online
        limit = cgroup_cpu_limit(root)
        if limit is None:
            limit = _env_limit(environ)
        return cls(limit=limit, allowed=allowed, online=online)

    @property
    def usable(self) -> int:
        """The CPU limit rounded up, else the cores this process may run on."""
        if self.limit is None:
            return max(1, self.allowed)
        return max(1, min(math.ceil(self.limit), self.allowed))

    def threads_per_worker(self, workers: int) -> int:
        """The intra-op default: the usable cores shared among the workers. Each worker
        running `usable` threads of its own oversubscribed the cores (four threads on two for
        the default two workers) and paid a pool thread's wake-up on every run: with one
        thread each, the small model served 1-11 % more at every point, c = 1 to 64, both
        protocols (bench/runtime/threads-ab/)."""
        return max(1, self.usable // max(1, workers))

    @property
    def owned(self) -> bool:
        """Pinned to exactly its whole-core limit, on fewer cores than the host has. A shared
        pool can be a subset too (the static policy's, once other pods own cores), but a
        container there is not limited to exactly that many whole cores, bar a coincidence;
        a fractional limit is never pinned."""
        return (
            self.limit is not None
            and self.limit == int(self.limit)
            and int(self.limit) == self.allowed
            and self.allowed < self.online
        )


def spin_by_default(
    cpus: Cpus, *, workers: int, intra_op_threads: int, model_bytes: int
) -> tuple[Spinning, str]:
    """`--allow-spinning auto` (SPIN_RULE): the choice and the reason, for the log."""
    if model_bytes <= SMALL_MODELS_BYTES:
        return Spinning.OFF, (
            f"models of {model_bytes / (1 << 20):.1f} MiB: the event loop is the bound, and "
            "spinning threads would take its CPU"
        )
    if not cpus.owned:
        where = (
            f"{cpus.allowed} of {cpus.online} cores"
            if cpus.allowed < cpus.online
            else f"all {cpus.online} of the host's cores"
        )
        limit = "no CPU limit" if cpus.limit is None else f"a CPU limit of {cpus.limit:g}"
        return Spinning.IN_RUNS, f"this process may run on {where} with {limit}: cores it may share"
    threads = workers * intra_op_threads
    if threads > cpus.allowed:
        return Spinning.IN_RUNS, (
            f"{workers} worker(s) x {intra_op_threads} intra-op threads would spin on "
            f"{cpus.allowed} owned cores"
        )
    return Spinning.ON, f"pinned to {cpus.allowed} of the host's {cpus.online} cores, its CPU limit"


def cgroup_cpu_limit(root: pathlib.Path = CGROUP_ROOT) -> float | None:
    """The container's CPU limit in cores, from cgroup v2 `cpu.max` or v1 quota/period."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 else None


def _env_limit(environ: Mapping[str, str]) -> float | None:
    text = environ.get(LIMIT_ENV, "").strip()
    try:
        millicores = int(text)
    except ValueError:
        return None
    return millicores / 1000 if millicores > 0 else None
