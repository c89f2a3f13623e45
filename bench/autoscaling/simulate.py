"""Autoscaling benchmark: kubeinfer's shipped scaling step against best-tuned and default HPA,
KEDA and Knative KPA, and an oracle, on request-level simulations of synthetic and
production-shaped workloads. One command; writes results.json, RESULTS.md and PNGs here.

    .venv/bin/python bench/autoscaling/simulate.py            # all: ~70 min on 2 busy cores
    .venv/bin/python bench/autoscaling/simulate.py --quick    # smoke run: ~3 CPU-minutes
    .venv/bin/python bench/autoscaling/simulate.py --trace my.csv --cold-start 60

Owns: the command line and the two phases. Phase 1 tunes each peer per workload family and
cold start on the tuning seeds (tuning.py has the rule). Phase 2 evaluates everything on the
evaluation seeds, which never overlap the tuning seeds. Virtual time: results do not depend on
the machine or its load, and the same arguments give the same numbers.

Module map: model.py (service model, SLO), workloads.py (families, arrivals), sim.py (the
cluster and the queue), engine.py (kubeinfer's pipeline: the one adapter to the product),
peers.py (HPA, KEDA, KPA), oracle.py (the physical limit), prototypes.py (candidate
mechanisms, not shipped), runner.py (one run), tuning.py (the grid and the rule), report.py.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peers  # noqa: E402
import prototypes  # noqa: E402
import report  # noqa: E402
import runner  # noqa: E402
import tuning  # noqa: E402
import workloads  # noqa: E402
from runner import Case, ScalerSpec  # noqa: E402

COLD_STARTS = (10.0, 30.0, 60.0, 120.0, 300.0)
HEADLINE_COLD_START = 60.0
TUNING_SEED_BASE = 1000  # tuning seeds are 1001, 1002, ...; evaluation seeds 1, 2, ...
TRITON_GPU = "kubeinfer, Triton GPU metric"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="a smoke run: 3 seeds, 1 tuning seed, cold start 60 s"
    )
    p.add_argument("--seeds", type=int, default=20, help="evaluation seeds per case")
    p.add_argument("--tuning-seeds", type=int, default=2, help="seeds the grid search uses")
    p.add_argument(
        "--prototype-seeds",
        type=int,
        default=8,
        help="evaluation seeds the prototypes and the Triton-GPU variant run on",
    )
    p.add_argument("--workloads", default=",".join(workloads.FAMILIES), help="comma-separated")
    p.add_argument(
        "--cold-start",
        default=",".join(f"{c:g}" for c in COLD_STARTS),
        help="seconds, comma-separated",
    )
    p.add_argument("--trace", help="CSV of (seconds, requests per second): run it as a family")
    p.add_argument("--jobs", type=int, default=2, help="worker processes")
    p.add_argument("--dt", type=float, default=0.25, help="simulation step, seconds")
    p.add_argument("--out", default=str(HERE), help="directory for results and plots")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite RESULTS.md from the results.json in --out (after editing analysis.md)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.tuning_seeds, args.prototype_seeds = 3, 1, 2
        if args.cold_start == p.get_default("cold_start"):
            args.cold_start = "60"
    return args


# ---------------------------------------------------------------------------- worker tasks


def _tune(task: tuple[str, float, int]) -> tuple[str, float, int, dict[str, dict[str, float]]]:
    family, cold, seed = task
    case = Case(family, seed, cold)
    out = {spec.label: r.summary() for spec, r in runner.run_case(case, tuning.tuning_specs())}
    return family, cold, seed, out


Row = tuple[str, dict[str, float], dict[str, list[float]], dict[str, object]]


def _evaluate(
    task: tuple[str, float, int, list[ScalerSpec], bool],
) -> tuple[str, float, int, list[Row]]:
    family, cold, seed, specs, record = task
    case = Case(family, seed, cold)
    rows = []
    for spec, r in runner.run_case(case, specs, record_series=record):
        rows.append((spec.label, r.summary(), r.series, r.notes))
    return family, cold, seed, rows


# ---------------------------------------------------------------------------- phases


def eval_specs(choice: dict[str, tuning.Choice], *, extras: bool) -> list[ScalerSpec]:
    specs = [
        ScalerSpec("kubeinfer", "kubeinfer"),
        ScalerSpec("oracle", "oracle"),
        ScalerSpec("HPA default", "HPA", peers.HPA_DEFAULT),
        ScalerSpec("KEDA default", "KEDA", peers.HPA_DEFAULT),
        ScalerSpec("KPA default", "KPA", peers.KPA_DEFAULT),
    ]
    for kind in tuning.KINDS:
        g = tuning.grid(kind)
        c = choice[kind]
        specs.append(ScalerSpec(f"{kind} tuned", kind, g[c.tuned]))
        specs.append(ScalerSpec(f"{kind} same budget", kind, g[c.same_budget]))
        specs.append(ScalerSpec(f"{kind} {tuning.ORACLE_BOUND}", kind, g[c.oracle_bound]))
    if extras:
        specs.append(ScalerSpec(TRITON_GPU, "kubeinfer", gpu_metric="busy"))
        for name in prototypes.PROTOTYPES:
            specs.append(ScalerSpec(f"prototype: {name}", name))
    return specs


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.report_only:
        report.rewrite_markdown(pathlib.Path(args.out))
        return 0
    started = time.perf_counter()
    code_commit = report.commit()  # the code the numbers come from, before anything else runs
    settings = runner.Settings(dt=args.dt, trace_path=args.trace)
    runner.configure(settings)
    families = [f for f in args.workloads.split(",") if f]
    if args.trace:
        families = [runner.workload("trace").name]
    colds = [float(c) for c in args.cold_start.split(",") if c]
    eval_seeds = list(range(1, args.seeds + 1))
    tuning_seeds = [TUNING_SEED_BASE + i for i in range(1, args.tuning_seeds + 1)]
    headline = HEADLINE_COLD_START if HEADLINE_COLD_START in colds else colds[len(colds) // 2]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(args.jobs, initializer=runner.configure, initargs=(settings,)) as pool:
        # Phase 1: the grid search, on tuning seeds only.
        tasks = [(f, c, s) for f in families for c in colds for s in tuning_seeds]
        tuned: dict[tuple[str, float], list[dict[str, dict[str, float]]]] = collections.defaultdict(
            list
        )
        for done, (family, cold, _, runs) in enumerate(pool.imap_unordered(_tune, tasks), 1):
            tuned[(family, cold)].append(runs)
            print(f"\rtuning {done}/{len(tasks)}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        points = {key: tuning.medians(runs) for key, runs in sorted(tuned.items())}
        choices = {key: tuning.choose(p) for key, p in points.items()}
        # Phase 2: everything on the evaluation seeds.
        etasks = []
        for f in families:
            for c in colds:
                for s in eval_seeds:
                    specs = eval_specs(choices[(f, c)][0], extras=s <= args.prototype_seeds)
                    etasks.append((f, c, s, specs, s == eval_seeds[0] and c == headline))
        evaluated: list[tuple[str, float, int, list[Row]]] = []
        for done, item in enumerate(pool.imap_unordered(_evaluate, etasks), 1):
            evaluated.append(item)
            print(f"\revaluating {done}/{len(etasks)}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    elapsed = time.perf_counter() - started
    command = " ".join([".venv/bin/python", "bench/autoscaling/simulate.py", *sys.argv[1:]])
    doc = report.build(
        args=args,
        command=command,
        code_commit=code_commit,
        elapsed=elapsed,
        families=families,
        colds=colds,
        headline=headline,
        eval_seeds=eval_seeds,
        tuning_seeds=tuning_seeds,
        points=points,
        choices=choices,
        evaluated=evaluated,
    )
    out = pathlib.Path(args.out)
    report.write(doc, out=out, evaluated=evaluated, points=points, plots=not args.no_plots)
    print(report.headline_table(doc))
    print(f"elapsed {elapsed:.0f} s; wrote {out / 'results.json'} and {out / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
