"""Workload families: request-rate envelopes, their burstiness, and Poisson arrivals per step.

Owns: what load each family offers (a per-second rate array for a seed) and turning rates into
request counts per simulation step (Poisson: a doubly stochastic process around the rate).
Seeds change the timing jitter, the modulation and the Poisson draws; the same seed gives the
same arrivals to every scaler (common random numbers, so comparisons are paired).

Synthetic families: step, ramp, spike, diurnal, noisy. Production-shaped families use
statistics published with public traces; each states its source in ``source`` and every
number taken from a source is marked where it is used. "Digitised" means read off the
published figure with a script (pixel positions of the plotted curve), accurate to ~10-20 %;
"by eye" means read off the figure without one.

How a published inter-arrival CV becomes burstiness here: for a Poisson process whose rate is
Gamma-distributed with shape k and changes slowly relative to the inter-arrival time, the
inter-arrival CV satisfies CV^2 = (k + 1) / (k - 1), so the rate's CV is
sqrt((CV^2 - 1) / (CV^2 + 1)). The time scale of the modulation (one point per minute, linear
between points) is an assumption: the Azure traces publish counts per minute.

Also accepts a user trace (CSV: seconds, requests per second; linear between rows).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import pathlib
from collections.abc import Callable

import numpy as np

# (seed-specific rng, duration_s) -> per-second request rate, len == duration_s
RateFn = Callable[[np.random.Generator, int], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    duration_s: int
    description: str
    source: str
    rates_fn: RateFn

    def rates(self, seed: int) -> np.ndarray:
        """Per-second offered rate for ``seed`` (requests/s), deterministic."""
        rng = np.random.default_rng([_name_key(self.name), seed, 1])
        out = self.rates_fn(rng, self.duration_s)
        return np.asarray(np.maximum(out.astype(float), 0.0), dtype=float)


def _name_key(name: str) -> int:
    # A stable integer from the name (hash() is salted per process).
    return int.from_bytes(name.encode()[:8].ljust(8, b"\0"), "little")


def arrivals(rates: np.ndarray, *, dt: float, seed: int, name: str) -> np.ndarray:
    """Request counts per step of ``dt`` seconds: Poisson around the per-second rate."""
    rng = np.random.default_rng([_name_key(name), seed, 2])
    steps_per_s = round(1.0 / dt)
    per_step = np.repeat(rates, steps_per_s) * dt
    return np.asarray(rng.poisson(per_step), dtype=float)


# ---------------------------------------------------------------------------- building blocks


def gamma_modulation(
    rng: np.random.Generator, n: int, *, cv: float, every_s: int = 60
) -> np.ndarray:
    """Mean-1 multiplier per second: independent Gamma(1/cv^2) points, linear between them."""
    if cv <= 0:
        return np.ones(n)
    k = 1.0 / (cv * cv)
    points = rng.gamma(k, 1.0 / k, size=n // every_s + 2)
    t = np.arange(n) / every_s
    return np.asarray(np.interp(t, np.arange(points.size), points), dtype=float)


def rate_cv_from_iat_cv(iat_cv: float) -> float:
    """Rate CV of a slowly Gamma-modulated Poisson process with the given inter-arrival CV."""
    c2 = iat_cv * iat_cv
    return math.sqrt(max(0.0, (c2 - 1.0) / (c2 + 1.0)))


def hourly_shape(rng: np.random.Generator, n: int, hours: tuple[float, ...]) -> np.ndarray:
    """A 24-point daily curve (relative), compressed so one day spans ``n`` seconds."""
    del rng
    t = np.arange(n) * len(hours) / n
    looped = np.array((*hours, hours[0]))
    return np.asarray(np.interp(t, np.arange(looped.size), looped), dtype=float)


def _jitter(rng: np.random.Generator, at: float, spread: float = 30.0) -> float:
    # Load changes land at seeded, non-round times so no scaler's sync phase is lucky.
    return at + float(rng.uniform(-spread, spread))


# ---------------------------------------------------------------------------- synthetic


def _step(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n)
    up = _jitter(rng, 600)
    return np.where((t >= up) & (t < up + 900), 9000.0, 3000.0).astype(float)


def _ramp(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n, dtype=float)
    start = _jitter(rng, 600)
    knots = [0, start, start + 600, start + 900, start + 1500, n]
    return np.asarray(np.interp(t, knots, [3000, 3000, 12000, 12000, 3000, 3000]), dtype=float)


def _spike(rng: np.random.Generator, n: int) -> np.ndarray:
    # Two one-minute spikes 15 minutes apart: the second finds whatever the first left.
    t = np.arange(n)
    out = np.full(n, 3000.0)
    for at in (_jitter(rng, 600), _jitter(rng, 1500)):
        out[(t >= at) & (t < at + 60)] = 12000.0
    return out


def _diurnal(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n, dtype=float)
    phase = float(rng.uniform(-0.05, 0.05))
    return np.asarray(2500.0 + 7500.0 * (1 - np.cos(2 * np.pi * (t / n + phase))) / 2)


def _noisy(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n)
    up = _jitter(rng, 1200)
    level = np.where((t >= up) & (t < up + 900), 8000.0, 4000.0)
    out: np.ndarray = level * gamma_modulation(rng, n, cv=0.2, every_s=10)
    return out


# ---------------------------------------------------------------------------- production-shaped

# Shahrad et al., "Serverless in the Wild", USENIX ATC 2020, Fig. 6 (reproduced in
# Azure/AzurePublicDataset analysis/AzureFunctionsDataset2019-Trace_Analysis.md): the median
# inter-arrival CV of applications without timer triggers is ~1.8 (read by eye off the CDF).
AZURE_FUNCTIONS_IAT_CV = 1.8
# Same paper, Fig. 4: hourly invocations stay within ~0.8-1.25 of the mean (diurnal; by eye).
AZURE_FUNCTIONS_DIURNAL = (0.8, 1.25)


def _azure_functions(rng: np.random.Generator, n: int) -> np.ndarray:
    lo, hi = AZURE_FUNCTIONS_DIURNAL
    t = np.arange(n, dtype=float)
    phase = float(rng.uniform(0, 1))
    daily = lo + (hi - lo) * (1 - np.cos(2 * np.pi * (t / n + phase))) / 2
    cv = rate_cv_from_iat_cv(AZURE_FUNCTIONS_IAT_CV)
    out: np.ndarray = 4000.0 * daily * gamma_modulation(rng, n, cv=cv, every_s=60)
    return out


# Patel et al., "Splitwise", ISCA 2024; the Azure LLM inference trace 2023, coding service
# (AzurePublicDataset analysis/AzureLLMInferenceDataset2023.ipynb, invocations per minute,
# digitised): per-minute CV ~0.70, peak/mean ~3.6, lag-1 autocorrelation ~0.3 (near
# independent minutes), so independent Gamma points per minute with that CV.
AZURE_LLM_CODE_2023_CV = 0.70


def _azure_llm_code_2023(rng: np.random.Generator, n: int) -> np.ndarray:
    return 3500.0 * gamma_modulation(rng, n, cv=AZURE_LLM_CODE_2023_CV, every_s=60)


# Stojkovic et al., "DynamoLLM", HPCA 2025; the Azure LLM inference trace 2024, coding service,
# one week (AzurePublicDataset analysis/AzureLLMInferenceDataset2024.ipynb, invocations per
# minute, digitised, weekdays May 14-16 averaged per UTC hour, relative to the peak hour):
# peak/trough ~9.8; the 10th-90th percentile band within an hour is +-18 % of the median,
# i.e. a per-minute CV of ~0.14.
AZURE_LLM_2024_HOURS = (
    0.33, 0.31, 0.30, 0.25, 0.19, 0.16, 0.13, 0.11, 0.10, 0.10, 0.11, 0.15,
    0.29, 0.50, 0.72, 0.80, 0.75, 0.85, 0.97, 1.00, 0.94, 0.70, 0.50, 0.38,
)  # fmt: skip
AZURE_LLM_2024_MINUTE_CV = 0.14


def _azure_llm_2024(rng: np.random.Generator, n: int) -> np.ndarray:
    # One day compressed into the run (24x): the morning ramp (x7 in ~4 h) takes ~10 min.
    day = hourly_shape(rng, n, AZURE_LLM_2024_HOURS)
    out: np.ndarray = (
        13000.0 * day * gamma_modulation(rng, n, cv=AZURE_LLM_2024_MINUTE_CV, every_s=60)
    )
    return out


# Wang et al., "BurstGPT", arXiv 2401.17644: request counts per hour of day, ChatGPT
# conversation log (README Figure 2 / paper's daily periodicity figure; hourly medians,
# read by eye, relative to the peak hour). Arrivals are modelled as Gamma renewal in the paper;
# its released generator (BurstGPT-Perf, example/src/burstgpt/config.py) defaults to Gamma
# shape 0.5, i.e. an inter-arrival CV of 1.41. (The paper's fitted shapes per service are not
# reproduced here: that default is the one number we could verify.)
BURSTGPT_HOURS = (
    0.24, 0.16, 0.08, 0.03, 0.03, 0.03, 0.03, 0.03, 0.11, 0.55, 0.84, 0.84,
    0.37, 0.53, 0.82, 0.97, 1.00, 0.71, 0.45, 0.53, 0.61, 0.58, 0.53, 0.39,
)  # fmt: skip
BURSTGPT_IAT_CV = math.sqrt(1 / 0.5)


def _burstgpt(rng: np.random.Generator, n: int) -> np.ndarray:
    day = hourly_shape(rng, n, BURSTGPT_HOURS)
    cv = rate_cv_from_iat_cv(BURSTGPT_IAT_CV)
    out: np.ndarray = 12000.0 * day * gamma_modulation(rng, n, cv=cv, every_s=60)
    return out


SYNTHETIC = {
    "step": Workload(
        "step", 2400, "3,000 -> 9,000 req/s for 15 min at ~10 min", "synthetic", _step
    ),
    "ramp": Workload(
        "ramp", 2400, "3,000 -> 12,000 req/s over 10 min, hold 5, down over 10", "synthetic", _ramp
    ),
    "spike": Workload(
        "spike", 2400, "3,000 base, two 1-min spikes to 12,000 15 min apart", "synthetic", _spike
    ),
    "diurnal": Workload(
        "diurnal", 3600, "2,500-10,000 req/s, one cosine period per hour", "synthetic", _diurnal
    ),
    "noisy": Workload(
        "noisy",
        2400,
        "4,000 -> 8,000 req/s step, Gamma noise CV 0.2 every 10 s",
        "synthetic",
        _noisy,
    ),
}

PRODUCTION = {
    "azure-functions": Workload(
        "azure-functions",
        3600,
        "mean 4,000 req/s, diurnal 0.8-1.25x, Gamma rate CV 0.73 per minute",
        "Shahrad et al., USENIX ATC 2020 (Azure Functions 2019): Fig. 6 median IAT CV ~1.8 of "
        "non-timer apps -> rate CV 0.73; Fig. 4 hourly range 0.8-1.25x mean",
        _azure_functions,
    ),
    "azure-llm-code-2023": Workload(
        "azure-llm-code-2023",
        3600,
        "mean 3,500 req/s, independent per-minute Gamma CV 0.70",
        "Patel et al., ISCA 2024 (Splitwise; Azure LLM inference trace 2023, coding): per-minute "
        "CV ~0.70, peak/mean ~3.6, lag-1 autocorrelation ~0.3 (digitised)",
        _azure_llm_code_2023,
    ),
    "azure-llm-2024": Workload(
        "azure-llm-2024",
        3600,
        "weekday coding-service day compressed 24x: 1,300-13,000 req/s, per-minute CV 0.14",
        "Stojkovic et al., HPCA 2025 (DynamoLLM; Azure LLM inference trace 2024, coding, 1 "
        "week): hourly weekday shape, peak/trough ~9.8, per-minute CV ~0.14 (digitised)",
        _azure_llm_2024,
    ),
    "burstgpt": Workload(
        "burstgpt",
        3600,
        "ChatGPT conversation day compressed 24x (peak 12,000 req/s), Gamma IAT CV 1.41",
        "Wang et al., arXiv 2401.17644 (BurstGPT): hourly medians of the ChatGPT conversation "
        "log (read by eye); Gamma arrivals, BurstGPT-Perf default shape 0.5 -> IAT CV 1.41 -> "
        "rate CV 0.58",
        _burstgpt,
    ),
}

FAMILIES: dict[str, Workload] = {**SYNTHETIC, **PRODUCTION}


def from_csv(path: pathlib.Path) -> Workload:
    """A user trace: rows of (seconds, requests per second), linear between rows."""
    times: list[float] = []
    values: list[float] = []
    with path.open() as f:
        for row in csv.reader(f):
            if not row or row[0].strip().startswith("#"):
                continue
            try:
                t, v = float(row[0]), float(row[1])
            except (ValueError, IndexError):
                continue  # a header line
            times.append(t)
            values.append(v)
    if len(times) < 2:
        raise ValueError(f"{path}: need at least two rows of (seconds, requests per second)")
    order = np.argsort(times)
    ts, vs = np.array(times)[order], np.array(values)[order]
    duration = math.ceil(float(ts[-1] - ts[0]))

    def rates(rng: np.random.Generator, n: int) -> np.ndarray:
        del rng
        return np.asarray(np.interp(np.arange(n) + ts[0], ts, vs), dtype=float)

    name = f"trace:{path.name}"
    return Workload(name, duration, f"user trace {path}", str(path), rates)
