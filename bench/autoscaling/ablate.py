"""Ablations (not shipped): which of kubeinfer's own knobs explains where it loses.

    .venv/bin/python bench/autoscaling/ablate.py [--seeds 6] [--cold-start 30,60,120]

Owns: variants of the SHIPPED policy with one field changed, run through the same adapter
(engine.Kubeinfer) on the evaluation seeds, and ABLATIONS.md / ablations.json beside this
file: per family and cold start, each variant's median SLO misses and replica-seconds relative
to the shipped policy on the same seeds. These are diagnostics, not candidates: a knob that
helps everywhere would be a default to change; one that trades misses for cost shows where the
shipped default sits on the trade-off. The prototypes (prototypes.py) are the mechanisms.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import pathlib
import statistics
import sys
import time
from collections.abc import Callable

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import engine  # noqa: E402
import runner  # noqa: E402
import workloads  # noqa: E402
from runner import Case  # noqa: E402

from kubeinfer.core.scaling import policy as policy_  # noqa: E402

Change = Callable[[policy_.ScalingPolicy], policy_.ScalingPolicy]

ABLATIONS: dict[str, Change] = {
    "target x0.7": lambda p: dataclasses.replace(p, target=p.target * 0.7),
    "target x0.5": lambda p: dataclasses.replace(p, target=p.target * 0.5),
    "scale-down delay 300 s": lambda p: dataclasses.replace(p, scale_down_stabilization_s=300.0),
    "scale-down delay 0 s": lambda p: dataclasses.replace(p, scale_down_stabilization_s=0.0),
    "no hysteresis": lambda p: dataclasses.replace(p, scale_down_min_fraction=0.0),
    "stable window 180 s": lambda p: dataclasses.replace(
        p, stable_window_s=180.0, panic_window_s=18.0
    ),
    "panic threshold 1.5": lambda p: dataclasses.replace(p, panic_threshold=1.5),
    "no trend look-ahead": lambda p: dataclasses.replace(p, early_scale_up=False),
    "no calm target": lambda p: dataclasses.replace(p, calm_target_factor=1.0),
}


def _run(task: tuple[str, float, int]) -> tuple[str, float, int, dict[str, dict[str, float]]]:
    family, cold, seed = task
    case = Case(family, seed, cold)
    shipped = runner.shipped_policy(case)
    out = {"shipped": runner.run(case, runner.ScalerSpec("shipped", "kubeinfer")).summary()}
    for name, change in ABLATIONS.items():
        scaler = engine.Kubeinfer(name=name, scaling_policy=change(shipped), seed=seed)
        out[name] = runner.run_with(case, runner.with_yesterday(scaler, case)).summary()
    return family, cold, seed, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=6)
    p.add_argument("--cold-start", default="30,60,120")
    p.add_argument("--workloads", default=",".join(workloads.FAMILIES))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default=str(HERE))
    args = p.parse_args(argv)
    started = time.perf_counter()
    colds = [float(c) for c in args.cold_start.split(",")]
    families = args.workloads.split(",")
    tasks = [(f, c, s) for f in families for c in colds for s in range(1, args.seeds + 1)]
    runs: dict[tuple[str, float], list[dict[str, dict[str, float]]]] = {}
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(args.jobs) as pool:
        for done, (f, c, _, out) in enumerate(pool.imap_unordered(_run, tasks), 1):
            runs.setdefault((f, c), []).append(out)
            print(f"\rablations {done}/{len(tasks)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    table: dict[str, dict[str, dict[str, dict[str, float | None]]]] = {}
    for (f, c), rows in sorted(runs.items()):
        base_m = statistics.median(r["shipped"]["sloMisses"] for r in rows)
        base_c = statistics.median(r["shipped"]["replicaSeconds"] for r in rows)
        entry: dict[str, dict[str, float | None]] = {
            "shipped": {"sloMisses": base_m, "replicaSeconds": base_c}
        }
        for name in ABLATIONS:
            m_ = statistics.median(r[name]["sloMisses"] for r in rows)
            c_ = statistics.median(r[name]["replicaSeconds"] for r in rows)
            entry[name] = {
                "sloMisses": m_,
                "replicaSeconds": c_,
                "missesVsShipped": m_ / base_m if base_m else None,
                "costVsShipped": c_ / base_c,
            }
        table.setdefault(f, {})[f"{c:g}"] = entry
    elapsed = time.perf_counter() - started
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "command": " ".join([".venv/bin/python", "bench/autoscaling/ablate.py", *sys.argv[1:]]),
        "elapsedSeconds": round(elapsed),
        "seeds": list(range(1, args.seeds + 1)),
        "ablations": table,
    }
    (out_dir / "ablations.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out_dir / "ABLATIONS.md").write_text(_markdown(doc, colds))
    print(f"elapsed {elapsed:.0f} s; wrote {out_dir / 'ABLATIONS.md'}")
    return 0


def _markdown(doc: dict[str, object], colds: list[float]) -> str:
    table = doc["ablations"]
    assert isinstance(table, dict)
    lines = [
        "# Ablations of the shipped policy (not shipped)",
        "",
        f"Command: `{doc['command']}`; seeds {doc['seeds'][0]}-{doc['seeds'][-1]}"  # type: ignore[index]
        f"; {doc['elapsedSeconds']} s. Each cell: SLO misses x / replica-seconds x relative to "
        "the shipped policy on the same seeds (medians; '-' where the shipped policy missed "
        "nothing). One field changed per row; everything else as shipped.",
        "",
    ]
    for c in colds:
        key = f"{c:g}"
        families = [f for f in table if key in table[f]]
        lines += [
            f"## Cold start {key} s",
            "",
            "| change | " + " | ".join(families) + " |",
            "|---|" + "---|" * len(families),
        ]
        for name in ABLATIONS:
            cells = []
            for f in families:
                e = table[f][key][name]
                mr = e["missesVsShipped"]
                miss = "-" if mr is None else f"{mr:.2f}x"
                cells.append(f"{miss} / {e['costVsShipped']:.2f}x")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
