"""One run of one scaler on one case (workload, seed, cold start), and how scalers are named.

Owns: building a case's inputs (arrivals with a warm-up prefix, the seed's cold starts, the
starting replica count), the shipped policy for a case and the day it remembers
(``shipped_policy``, ``with_yesterday``), building a scaler from a picklable description
(``ScalerSpec``), and running it. Worker processes call ``run_case`` with many specs so a
case's arrivals are drawn once and shared by every scaler (paired comparison).
"""

from __future__ import annotations

import dataclasses
import functools

import engine
import model as model_
import numpy as np
import oracle
import peers
import prototypes
import sim
import workloads

from kubeinfer.core.scaling import policy as policy_
from kubeinfer.core.scaling import season

# Seconds of the trace's initial load before measuring: windows fill, replicas stay put.
WARMUP_S = 300
# "Yesterday" is the same family on this seed offset (never an evaluation or tuning seed).
YESTERDAY_SEED = 100_000


@dataclasses.dataclass(frozen=True)
class Case:
    workload: str
    seed: int
    cold_start_s: float


@dataclasses.dataclass(frozen=True)
class ScalerSpec:
    """A scaler to build: kind is kubeinfer, a prototype name, HPA, KEDA, KPA or oracle."""

    label: str  # the row name in results
    kind: str
    config: peers.HPAConfig | peers.KPAConfig | None = None
    gpu_metric: str = "none"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every run of an invocation shares (set once per worker)."""

    dt: float = 0.25
    gpus: int = model_.CLUSTER_GPUS
    min_replicas: int = model_.MIN_REPLICAS
    max_replicas: int = model_.MAX_REPLICAS
    trace_path: str | None = None


_SETTINGS = Settings()


def configure(settings: Settings) -> None:
    global _SETTINGS
    _SETTINGS = settings
    _inputs.cache_clear()


@functools.cache
def service_model() -> model_.ServiceModel:
    return model_.load()


def workload(name: str) -> workloads.Workload:
    if name in workloads.FAMILIES:
        return workloads.FAMILIES[name]
    if _SETTINGS.trace_path is not None:
        import pathlib

        return workloads.from_csv(pathlib.Path(_SETTINGS.trace_path))
    raise KeyError(name)


@functools.lru_cache(maxsize=8)
def _inputs(case: Case) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """(arrivals per step incl. warm-up, cold-start draws, initial replicas, per-second rates)."""
    w = workload(case.workload)
    rates = w.rates(case.seed)
    warm = np.full(WARMUP_S, rates[0])
    full = np.concatenate((warm, rates))
    arr = workloads.arrivals(full, dt=_SETTINGS.dt, seed=case.seed, name=case.workload)
    factors = sim.cold_factors(
        workload=case.workload, seed=case.seed, cold_start_s=case.cold_start_s
    )
    return arr, factors, sim.initial_replicas(service_model(), float(rates[0])), rates


def day_s(case: Case) -> int:
    """The workload's "day", the forecast period: its trace with the warm-up."""
    return len(_inputs(case)[3]) + WARMUP_S


def shipped_policy(case: Case) -> policy_.ScalingPolicy:
    m, s = service_model(), _SETTINGS
    return engine.shipped_policy(
        target=m.target,
        min_replicas=s.min_replicas,
        max_replicas=s.max_replicas,
        forecast_period_s=day_s(case),
    )


@functools.lru_cache(maxsize=4)
def _yesterday(case: Case) -> season.SeasonalHistory:
    """What the shipped step learned by time of day over the previous day: the same family
    on another seed, run through it, as seen a day later."""
    before = Case(case.workload, case.seed + YESTERDAY_SEED, case.cold_start_s)
    scaler = engine.Kubeinfer(
        name="yesterday", scaling_policy=shipped_policy(case), seed=before.seed
    )
    run_with(before, scaler)
    return engine.one_period_earlier(scaler.engine.memory.season)


def with_yesterday(scaler: engine.Kubeinfer, case: Case) -> engine.Kubeinfer:
    """``scaler`` starting with yesterday's history, as a service that ran yesterday does."""
    scaler.remember(_yesterday(case))
    return scaler


def build(spec: ScalerSpec, case: Case) -> sim.Scaler:
    m = service_model()
    s = _SETTINGS
    if spec.kind == "oracle":
        arr, _, _, _ = _inputs(case)
        need = oracle.need_per_second(arr, dt=s.dt, model=m, gpus=s.gpus)
        lead = case.cold_start_s * sim.SimConfig().cold_start_jitter[1]
        return oracle.Oracle(name=spec.label, desired=oracle.schedule(need, lead_s=lead))
    if spec.kind in ("HPA", "KEDA", "KPA"):
        assert spec.config is not None
        return peers.make(spec.kind, spec.config, target=m.target, seed=case.seed, name=spec.label)
    policy = shipped_policy(case)
    if spec.kind == "kubeinfer":
        scaler = engine.Kubeinfer(name=spec.label, scaling_policy=policy, seed=case.seed)
    else:
        scaler = prototypes.PROTOTYPES[spec.kind](
            name=spec.label, scaling_policy=policy, seed=case.seed, model=m
        )
    return with_yesterday(scaler, case)


def run(case: Case, spec: ScalerSpec, *, record_series: bool = False) -> sim.RunResult:
    result = run_with(
        case, build(spec, case), gpu_metric=spec.gpu_metric, record_series=record_series
    )
    result.scaler = spec.label
    return result


def run_with(
    case: Case, scaler: sim.Scaler, *, gpu_metric: str = "none", record_series: bool = False
) -> sim.RunResult:
    """Run an already built scaler on ``case``."""
    arr, factors, initial, _ = _inputs(case)
    s = _SETTINGS
    config = sim.SimConfig(
        dt=s.dt,
        cold_start_s=case.cold_start_s,
        gpus=s.gpus,
        min_replicas=s.min_replicas,
        max_replicas=s.max_replicas,
        gpu_metric=gpu_metric,
        record_series=record_series,
    )
    runner = sim.Sim(
        model=service_model(),
        config=config,
        arrivals=arr,
        cold_factors=factors,
        initial_replicas=initial,
        warmup_steps=round(WARMUP_S / s.dt),
    )
    result = runner.run(scaler)
    reasons = getattr(scaler, "reasons", None)
    if reasons:
        result.notes["reasons"] = dict(reasons)
    return result


def run_case(
    case: Case, specs: list[ScalerSpec], record_series: bool = False
) -> list[tuple[ScalerSpec, sim.RunResult]]:
    return [(spec, run(case, spec, record_series=record_series)) for spec in specs]
