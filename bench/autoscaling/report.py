"""Results: medians over seeds, the issue's goals, the prototypes' effects; JSON, Markdown, PNGs.

Owns: turning the evaluated runs into results.json (every number the tables use, plus per-seed
misses and cost), RESULTS.md (machine, versions, command, model, workloads and sources,
tuned configurations, tables, and analysis.md appended verbatim) and the plots (replicas and
SLO misses over time per scaler for one seed per family; SLO attainment against replica-seconds
per scaler, with every grid point the tuning tried).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
from typing import Any

import engine
import model as model_
import numpy as np
import peers
import prototypes
import runner
import tuning

FIELDS = (
    "sloMisses",
    "attainment",
    "p99Ms",
    "failures",
    "rejected",
    "late",
    "replicaSeconds",
    "peakReplicas",
    "scaleEvents",
    "requests",
)

Evaluated = list[tuple[str, float, int, list[tuple[str, dict[str, float], Any, Any]]]]


def _ratio(a: float, b: float) -> float | None:
    if b == 0:
        return None if a == 0 else math.inf
    return a / b


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=runner.__file__.rsplit("/", 1)[0],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _medians(rows: list[dict[str, float]]) -> dict[str, float]:
    return {f: statistics.median(r[f] for r in rows) for f in FIELDS}


def build(
    *,
    args: argparse.Namespace,
    command: str,
    code_commit: str,
    elapsed: float,
    families: list[str],
    colds: list[float],
    headline: float,
    eval_seeds: list[int],
    tuning_seeds: list[int],
    points: dict[tuple[str, float], dict[str, tuning.Point]],
    choices: dict[tuple[str, float], tuple[dict[str, tuning.Choice], str]],
    evaluated: Evaluated,
) -> dict[str, Any]:
    m = runner.service_model()
    per: dict[tuple[str, float, str], dict[int, dict[str, float]]] = collections.defaultdict(dict)
    reasons: dict[tuple[str, float], collections.Counter[str]] = collections.defaultdict(
        collections.Counter
    )
    for family, cold, seed, rows in evaluated:
        for label, summary, _series, notes in rows:
            per[(family, cold, label)][seed] = summary
            if label == "kubeinfer" and notes.get("reasons"):
                reasons[(family, cold)].update(notes["reasons"])
    proto_seeds = eval_seeds[: args.prototype_seeds]
    results: dict[str, Any] = {}
    goals: dict[str, Any] = {}
    protos: dict[str, Any] = {}
    tuned_doc: dict[str, Any] = {}
    for f in families:
        results[f], goals[f], protos[f], tuned_doc[f] = {}, {}, {}, {}
        for c in colds:
            key = f"{c:g}"
            block = {}
            for (fam, cold, label), by_seed in sorted(per.items()):
                if fam != f or cold != c:
                    continue
                seeds = sorted(by_seed)
                summaries = [by_seed[s] for s in seeds]
                block[label] = {
                    "seeds": len(seeds),
                    "median": _medians(summaries),
                    "perSeed": {
                        "seed": seeds,
                        "sloMisses": [r["sloMisses"] for r in summaries],
                        "replicaSeconds": [r["replicaSeconds"] for r in summaries],
                        "attainment": [r["attainment"] for r in summaries],
                    },
                }
            results[f][key] = block
            choice, best_kind = choices[(f, c)]
            tuned_doc[f][key] = {
                "bestPeer": f"{best_kind} tuned",
                "kubeinferTuningCost": points[(f, c)]["kubeinfer"].cost,
                **{
                    kind: {
                        "tuned": tuning.grid(kind)[ch.tuned].label(),
                        "tunedOnTuningSeeds": dataclasses.asdict(ch.tuned_point),
                        "sameBudget": tuning.grid(kind)[ch.same_budget].label(),
                        "sameBudgetOnTuningSeeds": dataclasses.asdict(ch.same_budget_point),
                        "oracleBound": tuning.grid(kind)[ch.oracle_bound].label(),
                        "oracleBoundOnTuningSeeds": dataclasses.asdict(ch.oracle_bound_point),
                    }
                    for kind, ch in choice.items()
                },
            }
            goals[f][key] = _goal(block, f"{best_kind} tuned")
            protos[f][key] = _prototypes(per, f, c, proto_seeds, f"{best_kind} tuned")
            if reasons[(f, c)]:
                goals[f][key]["kubeinferDecisions"] = dict(reasons[(f, c)].most_common())
    shipped = engine.shipped_policy(
        target=m.target, min_replicas=model_.MIN_REPLICAS, max_replicas=model_.MAX_REPLICAS
    )
    return {
        "command": command,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "commit": code_commit,
        "elapsedSeconds": round(elapsed),
        "settings": {
            "dt": args.dt,
            "evaluationSeeds": eval_seeds,
            "tuningSeeds": tuning_seeds,
            "prototypeSeeds": proto_seeds,
            "coldStartsSeconds": colds,
            "headlineColdStartSeconds": headline,
            "warmupSeconds": runner.WARMUP_S,
            "clusterGpus": model_.CLUSTER_GPUS,
            "replicas": [model_.MIN_REPLICAS, model_.MAX_REPLICAS],
            "sloMs": model_.SLO_MS,
            "queuePerReplica": m.queue_per_replica,
            "clientDeadlineSeconds": m.deadline_s,
            "capacityRpsPerReplica": m.capacity_rps,
            "maxBatch": m.max_batch,
            "target": m.target,
            "rateAtTargetPerReplica": round(m.rate_at_target(), 1),
            "attainmentGoalForTuning": tuning.ATTAINMENT_GOAL,
        },
        "kubeinferPolicy": {k: str(v) for k, v in dataclasses.asdict(shipped).items()},
        "peerDefaults": {
            "HPA": peers.HPA_DEFAULT.label(),
            "KEDA": peers.HPA_DEFAULT.label() + " (External AverageValue)",
            "KPA": peers.KPA_DEFAULT.label(),
        },
        "gridSizes": {k: len(tuning.grid(k)) for k in tuning.KINDS},
        "workloads": {
            f: {
                "durationSeconds": runner.workload(f).duration_s,
                "description": runner.workload(f).description,
                "source": runner.workload(f).source,
            }
            for f in families
        },
        "tuning": tuned_doc,
        "results": results,
        "goals": goals,
        "prototypes": protos,
    }


def _goal(block: dict[str, Any], best: str) -> dict[str, Any]:
    ki, bp, orc = (block[x]["median"] for x in ("kubeinfer", best, "oracle"))
    miss_r = _ratio(ki["sloMisses"], bp["sloMisses"])
    cost_r = _ratio(ki["replicaSeconds"], bp["replicaSeconds"])
    oracle_r = _ratio(ki["replicaSeconds"], orc["replicaSeconds"])
    met_miss = ki["sloMisses"] <= tuning.MISS_GOAL * bp["sloMisses"]
    met_cost = cost_r is not None and cost_r <= tuning.COST_GOAL
    met_oracle = oracle_r is not None and oracle_r <= tuning.ORACLE_GOAL
    same = {}
    for kind in tuning.KINDS:
        row = block.get(f"{kind} same budget")
        if row:
            same[kind] = {
                "missesRatio": _ratio(ki["sloMisses"], row["median"]["sloMisses"]),
                "costRatio": _ratio(ki["replicaSeconds"], row["median"]["replicaSeconds"]),
            }
    bound = {}
    for kind in tuning.KINDS:
        row = block.get(f"{kind} {tuning.ORACLE_BOUND}")
        if row:
            r = row["median"]
            bound[kind] = {
                "sloMisses": r["sloMisses"],
                "missesVsBestPeer": _ratio(r["sloMisses"], bp["sloMisses"]),
                "costVsOracle": _ratio(r["replicaSeconds"], orc["replicaSeconds"]),
            }
    return {
        "bestPeer": best,
        "missesVsBestPeer": miss_r,
        "costVsBestPeer": cost_r,
        "costVsOracle": oracle_r,
        "missesGoalMet": met_miss,
        "costGoalMet": met_cost,
        "oracleGoalMet": met_oracle,
        "met": met_miss and met_cost and met_oracle,
        "vsSameBudgetPeers": same,
        "peersWithinOracleBound": bound,
    }


def _prototypes(
    per: dict[tuple[str, float, str], dict[int, dict[str, float]]],
    f: str,
    c: float,
    seeds: list[int],
    best: str,
) -> dict[str, Any]:
    """Each prototype against the shipped step and the best tuned peer, on the same seeds."""

    def med(label: str, field: str) -> float | None:
        rows = per.get((f, c, label), {})
        values = [rows[s][field] for s in seeds if s in rows]
        return statistics.median(values) if values else None

    ki_m, ki_c = med("kubeinfer", "sloMisses"), med("kubeinfer", "replicaSeconds")
    bp_m, bp_c = med(best, "sloMisses"), med(best, "replicaSeconds")
    out: dict[str, Any] = {}
    labels = [f"prototype: {n}" for n in prototypes.PROTOTYPES] + ["kubeinfer, Triton GPU metric"]
    for label in labels:
        pm, pc = med(label, "sloMisses"), med(label, "replicaSeconds")
        if pm is None or pc is None or ki_m is None or ki_c is None or bp_m is None or bp_c is None:
            continue
        out[label] = {
            "sloMisses": pm,
            "replicaSeconds": pc,
            "missesVsShipped": _ratio(pm, ki_m),
            "costVsShipped": _ratio(pc, ki_c),
            "missesVsBestPeer": _ratio(pm, bp_m),
            "costVsBestPeer": _ratio(pc, bp_c),
            "goalMetVsBestPeer": pm <= tuning.MISS_GOAL * bp_m and pc <= tuning.COST_GOAL * bp_c,
        }
    out["_shipped"] = {"sloMisses": ki_m, "replicaSeconds": ki_c}
    out["_bestPeer"] = {"label": best, "sloMisses": bp_m, "replicaSeconds": bp_c}
    return out


# ---------------------------------------------------------------------------- Markdown


def _x(v: float | None) -> str:
    if v is None:
        return "0/0"
    if math.isinf(v):
        return "inf"
    return f"{v:.2f}x"


def _n(v: float) -> str:
    return f"{v:,.0f}"


def headline_table(doc: dict[str, Any]) -> str:
    c = f"{doc['settings']['headlineColdStartSeconds']:g}"
    lines = [
        f"Headline (cold start {c} s; median over {len(doc['settings']['evaluationSeeds'])} "
        "seeds): SLO misses (requests) and replica-seconds",
        "",
        "| family | kubeinfer misses | best tuned peer | peer misses | oracle misses "
        "| kubeinfer replica-s | peer replica-s | oracle replica-s | misses vs peer "
        "| replica-s vs peer | replica-s vs oracle | goal |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for f, by_cold in doc["results"].items():
        if c not in by_cold:
            continue
        g = doc["goals"][f][c]
        best = g["bestPeer"]
        ki, bp, orc = (by_cold[c][x]["median"] for x in ("kubeinfer", best, "oracle"))
        lines.append(
            f"| {f} | {_n(ki['sloMisses'])} | {best} | {_n(bp['sloMisses'])} "
            f"| {_n(orc['sloMisses'])} | {_n(ki['replicaSeconds'])} | {_n(bp['replicaSeconds'])} "
            f"| {_n(orc['replicaSeconds'])} | {_x(g['missesVsBestPeer'])} "
            f"| {_x(g['costVsBestPeer'])} | {_x(g['costVsOracle'])} "
            f"| {'met' if g['met'] else 'not met'} |"
        )
    return "\n".join(lines)


def _family_table(doc: dict[str, Any], f: str, c: str) -> str:
    block = doc["results"][f][c]
    best = doc["goals"][f][c]["bestPeer"]
    bp = block[best]["median"]
    orc = block["oracle"]["median"]
    lines = [
        "| scaler | SLO misses | attainment | p99 ms | failures | replica-s "
        "| misses vs best peer | replica-s vs best peer | replica-s vs oracle |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = sorted(block, key=_row_order)
    for label in order:
        r = block[label]["median"]
        mark = " (best tuned peer)" if label == best else ""
        lines.append(
            f"| {label}{mark} | {_n(r['sloMisses'])} | {r['attainment']:.4f} | {r['p99Ms']:.0f} "
            f"| {_n(r['failures'])} | {_n(r['replicaSeconds'])} "
            f"| {_x(_ratio(r['sloMisses'], bp['sloMisses']))} "
            f"| {_x(_ratio(r['replicaSeconds'], bp['replicaSeconds']))} "
            f"| {_x(_ratio(r['replicaSeconds'], orc['replicaSeconds']))} |"
        )
    return "\n".join(lines)


def _row_order(label: str) -> tuple[int, str]:
    if label == "kubeinfer":
        return (0, label)
    if label.endswith("tuned"):
        return (1, label)
    if label.endswith("same budget"):
        return (2, label)
    if label.endswith(tuning.ORACLE_BOUND):
        return (3, label)
    if label.endswith("default"):
        return (4, label)
    if label == "oracle":
        return (5, label)
    return (6, label)


def _sweep_table(doc: dict[str, Any]) -> str:
    lines = [
        "| family | cold start s | kubeinfer misses | best tuned peer | peer misses "
        "| misses vs peer | replica-s vs peer | replica-s vs oracle | peer's replica-s vs oracle "
        "| goal |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    cells = reachable = 0
    for f, by_cold in doc["results"].items():
        for c in by_cold:
            g = doc["goals"][f][c]
            ki = by_cold[c]["kubeinfer"]["median"]
            bp = by_cold[c][g["bestPeer"]]["median"]
            peer_oracle = _ratio(
                bp["replicaSeconds"], by_cold[c]["oracle"]["median"]["replicaSeconds"]
            )
            cells += 1
            reachable += peer_oracle is not None and peer_oracle <= tuning.ORACLE_GOAL
            lines.append(
                f"| {f} | {c} | {_n(ki['sloMisses'])} | {g['bestPeer']} | {_n(bp['sloMisses'])} "
                f"| {_x(g['missesVsBestPeer'])} | {_x(g['costVsBestPeer'])} "
                f"| {_x(g['costVsOracle'])} | {_x(peer_oracle)} "
                f"| {'met' if g['met'] else 'not met'} |"
            )
    bound = tuning.ORACLE_GOAL
    lines += [
        "",
        f"The best tuned peer itself spends at most {bound:g}x the oracle's replica-seconds "
        f"on {reachable} of {cells} cells. Elsewhere the goal asks kubeinfer for fewer than half "
        f"the peer's misses at no more than {bound:g} / (the peer's replica-s vs oracle) "
        "of the peer's replica-seconds, well under 1.0x: the oracle provisions for each burst "
        "just in time, which a scaler that reacts to the load cannot do on loads whose bursts "
        "outrun the cold start.",
    ]
    return "\n".join(lines)


def _not_met_table(doc: dict[str, Any]) -> str:
    """Each cell where the goal does not hold: which criteria fail, by how much, and what the
    peers do inside the goal's cost bound (their oracle-bound picks, tuning.py)."""
    limit = tuning.ORACLE_GOAL
    lines = [
        f"Each criterion as measured (goal: misses <= {tuning.MISS_GOAL:g}x the best tuned "
        f"peer's, replica-s <= {tuning.COST_GOAL:g}x the peer's and <= {limit:g}x the "
        f"oracle's; a failing one in bold). 'Peer inside the bound': HPA, KEDA and KPA were each "
        f"also tuned for the fewest misses at no more than {limit:g}x the oracle's "
        "replica-seconds (on the tuning seeds); of those that stay inside it here, the one "
        "with the fewest misses (where none does, the cheapest): what a reactive rule does at "
        "the cost the goal allows.",
        "",
        "| family | cold start s | misses vs peer | replica-s vs peer | replica-s vs oracle "
        "| peer inside the bound: misses | vs the best tuned peer's | its replica-s vs oracle "
        "| reading |",
        "|---|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    counts: collections.Counter[str] = collections.Counter()
    for f, by_cold in doc["goals"].items():
        for c, g in by_cold.items():
            if g["met"]:
                continue
            peer_misses = doc["results"][f][c][g["bestPeer"]]["median"]["sloMisses"]
            kind, pick = _inside_bound(g.get("peersWithinOracleBound") or {})
            reading = _reading(g, pick, peer_misses)
            counts[reading] += 1
            cells = ["-", "-", "-"]
            if pick is not None:
                cells = [
                    f"{kind}: {_n(pick['sloMisses'])}",
                    _x(pick["missesVsBestPeer"]),
                    _x(pick["costVsOracle"]),
                ]
            lines.append(
                f"| {f} | {c} | {_bold(_x(g['missesVsBestPeer']), g['missesGoalMet'])} "
                f"| {_bold(_x(g['costVsBestPeer']), g['costGoalMet'])} "
                f"| {_bold(_x(g['costVsOracle']), g['oracleGoalMet'])} | "
                + " | ".join(cells)
                + f" | {reading} |"
            )
    lines += ["", "Readings: " + "; ".join(f"{k}: {n}" for k, n in counts.items()) + " cells."]
    return "\n".join(lines)


def _bold(text: str, ok: bool) -> str:
    return text if ok else f"**{text}**"


def _fits(pick: dict[str, Any]) -> bool:
    return pick["costVsOracle"] is not None and pick["costVsOracle"] <= tuning.ORACLE_GOAL


def _inside_bound(
    picks: dict[str, dict[str, Any]],
) -> tuple[str | None, dict[str, Any] | None]:
    """Of the peers' oracle-bound picks, the one with the fewest misses among those inside
    the bound on the evaluation seeds; where none is, the cheapest. (None, None): no picks
    (results from before they were run)."""
    inside = {k: p for k, p in picks.items() if _fits(p)}
    if inside:
        kind = min(inside, key=lambda k: (inside[k]["sloMisses"], k))
    elif picks:
        kind = min(picks, key=lambda k: (picks[k]["costVsOracle"] or math.inf, k))
    else:
        return None, None
    return kind, picks[kind]


READ_COST = "cost only"
READ_BEYOND = "no peer inside the bound meets the misses goal"
READ_NONE_FITS = "no peer stays inside the bound"
READ_REACHABLE = "a peer inside the bound meets the misses goal"


def _reading(goal: dict[str, Any], pick: dict[str, Any] | None, peer_misses: float) -> str:
    """Why a cell misses, in a few words: it costs more than the peer and nothing else
    fails; no peer's pick for the oracle bound stays inside it on the evaluation seeds, or
    none that does gets within the misses goal (the bound asks for what none of the three
    peers, tuned for it, does); or one does (a loss on kubeinfer's side)."""
    if goal["missesGoalMet"] and goal["oracleGoalMet"]:
        return READ_COST
    if pick is None:
        return "-"
    if not _fits(pick):
        return READ_NONE_FITS
    if pick["sloMisses"] <= tuning.MISS_GOAL * peer_misses:
        return READ_REACHABLE
    return READ_BEYOND


def _prototype_tables(doc: dict[str, Any]) -> str:
    c = f"{doc['settings']['headlineColdStartSeconds']:g}"
    names = [f"prototype: {n}" for n in prototypes.PROTOTYPES] + ["kubeinfer, Triton GPU metric"]
    out = [
        f"Cold start {c} s, median over {len(doc['settings']['prototypeSeeds'])} seeds: each "
        "cell is misses x / replica-s x relative to the shipped kubeinfer on the same seeds "
        "(below 1.00x is better); a check mark means the issue's goal against the best tuned "
        "peer holds with that mechanism. Rows starting 'without' and 'previous release' take "
        "shipped mechanisms out: above 1.00x misses there is what the mechanism earns.",
        "",
        "| mechanism | " + " | ".join(doc["prototypes"]) + " |",
        "|---|" + "---|" * len(doc["prototypes"]),
    ]
    for name in names:
        cells = []
        for f in doc["prototypes"]:
            p = doc["prototypes"][f].get(c, {}).get(name)
            if not p:
                cells.append("-")
                continue
            mark = " ✓" if p["goalMetVsBestPeer"] else ""
            cells.append(f"{_x(p['missesVsShipped'])} / {_x(p['costVsShipped'])}{mark}")
        out.append(f"| {name.removeprefix('prototype: ')} | " + " | ".join(cells) + " |")
    out += [
        "",
        "Across cold starts (median over families of the per-family ratios to shipped):",
        "",
        "| mechanism | "
        + " | ".join(f"{x} s" for x in doc["settings"]["coldStartsSeconds"])
        + " |",
        "|---|" + "---|" * len(doc["settings"]["coldStartsSeconds"]),
    ]
    for name in names:
        cells = []
        for cold in doc["settings"]["coldStartsSeconds"]:
            key = f"{cold:g}"
            ms, cs, met = [], [], 0
            for f in doc["prototypes"]:
                p = doc["prototypes"][f].get(key, {}).get(name)
                if not p:
                    continue
                if p["missesVsShipped"] is not None and not math.isinf(p["missesVsShipped"]):
                    ms.append(p["missesVsShipped"])
                if p["costVsShipped"] is not None:
                    cs.append(p["costVsShipped"])
                met += bool(p["goalMetVsBestPeer"])
            if not cs:
                cells.append("-")
                continue
            mm = _x(statistics.median(ms)) if ms else "0/0"
            cells.append(f"{mm} / {_x(statistics.median(cs))} ({met} met)")
        out.append(f"| {name.removeprefix('prototype: ')} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _tuned_table(doc: dict[str, Any]) -> str:
    lines = [
        "| family | cold start s | kind | best tuned (primary rule) | same budget "
        f"| within {tuning.ORACLE_GOAL:g}x oracle |",
        "|---|---:|---|---|---|---|",
    ]
    for f, by_cold in doc["tuning"].items():
        for c, t in by_cold.items():
            for kind in tuning.KINDS:
                lines.append(
                    f"| {f} | {c} | {kind} | {t[kind]['tuned']} | {t[kind]['sameBudget']} "
                    f"| {t[kind].get('oracleBound', '-')} |"
                )
    return "\n".join(lines)


def markdown(doc: dict[str, Any], analysis: str) -> str:
    s = doc["settings"]
    c = f"{s['headlineColdStartSeconds']:g}"
    parts = [
        "# Autoscaling benchmark (simulated, request level)",
        "",
        f"Command: `{doc['command']}` (from the repository root). Python {doc['python']}, "
        f"numpy {doc['numpy']}, {doc['machine']}, commit {doc['commit']}; ran in "
        f"{doc['elapsedSeconds']} s of wall time (virtual time: the numbers do not depend on "
        "the machine).",
        "",
        "The model, the peers' algorithms and every source are in the module docstrings of "
        "bench/autoscaling/*.py; the numbers below are from results.json.",
        "",
        "## Setup",
        "",
        f"- Service: `kubeinfer plan` on profile.json: max batch {s['maxBatch']}, "
        f"{s['capacityRpsPerReplica']:.0f} req/s per replica at most, QueueDepth target "
        f"{s['target']} in flight per replica (~{s['rateAtTargetPerReplica']:.0f} req/s). SLO: "
        f"answered within {s['sloMs']:g} ms. Queue bound {s['queuePerReplica']} per replica "
        f"(kubeinfer-onnx-server's default; a full queue rejects), client deadline "
        f"{s['clientDeadlineSeconds']:g} s. {s['clusterGpus']} GPUs in the cluster, replicas "
        f"{s['replicas'][0]}-{s['replicas'][1]} for every scaler (pods beyond the GPUs stay "
        "Pending and cost nothing).",
        f"- Seeds: evaluation {s['evaluationSeeds'][0]}-{s['evaluationSeeds'][-1]}; tuning "
        f"{', '.join(map(str, s['tuningSeeds']))} (never evaluated); prototypes on the first "
        f"{len(s['prototypeSeeds'])} evaluation seeds. Cold starts "
        f"{', '.join(f'{x:g}' for x in s['coldStartsSeconds'])} s (each pod x U(0.9, 1.1)); "
        f"{s['warmupSeconds']} s warm-up at the initial load before measuring; step {s['dt']} s.",
        "- kubeinfer: the operator's own pipeline (engine.py) with the shipped policy "
        "`policy_from_spec(ScalingSpec(target=<plan target>, minReplicas, maxReplicas))`: "
        f"`{json.dumps(doc['kubeinferPolicy'])}`.",
        f"- Peer defaults: HPA `{doc['peerDefaults']['HPA']}`; KEDA the same HPA on an External "
        f"AverageValue metric; KPA `{doc['peerDefaults']['KPA']}`; all with the plan's target.",
        f"- Tuning: grids of {doc['gridSizes']['HPA']} (HPA), {doc['gridSizes']['KEDA']} (KEDA), "
        f"{doc['gridSizes']['KPA']} (KPA) configurations per family and cold start. Best tuned: "
        f"the fewest replica-seconds with median attainment >= {s['attainmentGoalForTuning']:.0%} "
        "on the tuning seeds, else the highest attainment; the best tuned peer is the best of "
        "the three by the same rule. Same budget: the fewest misses at no more replica-seconds "
        "than kubeinfer on the tuning seeds; within "
        f"{tuning.ORACLE_GOAL:g}x oracle: the fewest misses at no more than "
        f"{tuning.ORACLE_GOAL:g}x the oracle's replica-seconds on the tuning seeds.",
        "",
        "## Workloads",
        "",
        "| family | duration s | load | source |",
        "|---|---:|---|---|",
        *(
            f"| {f} | {w['durationSeconds']} | {w['description']} | {w['source']} |"
            for f, w in doc["workloads"].items()
        ),
        "",
        "## Headline",
        "",
        headline_table(doc),
        "",
        "Goal (issue 15): kubeinfer's SLO misses <= 0.5x the best tuned peer's at <= 1.0x its "
        "replica-seconds, and replica-seconds within 1.5x of the oracle's (the oracle misses "
        "almost nothing by construction, so 'within 1.5x of the oracle' is read on cost).",
        "",
        "## Cold-start sweep",
        "",
        _sweep_table(doc),
        "",
        "## Where the goal does not hold: by how much, and what the peers do inside its bound",
        "",
        _not_met_table(doc),
        "",
        'Why, family by family: analysis.md\'s latest run (below) and "Where kubeinfer loses".',
        "",
        "## Prototypes (not shipped) and ablations of the shipped mechanisms",
        "",
        _prototype_tables(doc),
        "",
        f"## Every scaler per family (cold start {c} s)",
        "",
    ]
    for f in doc["results"]:
        if c in doc["results"][f]:
            parts += [f"### {f}", "", _family_table(doc, f, c), ""]
    parts += [
        "## Tuned configurations",
        "",
        _tuned_table(doc),
        "",
        "## Plots",
        "",
        "- `plots/timeline-<family>.png`: replicas and the share of requests missing the SLO "
        f"per second, seed {s['evaluationSeeds'][0]}, cold start {c} s.",
        "- `plots/attainment-vs-cost.png`: SLO attainment against replica-seconds per scaler; "
        "grey dots are every grid configuration (tuning seeds).",
        "",
        "Ablations of the shipped policy (one knob at a time, diagnostics): ABLATIONS.md, from "
        "`.venv/bin/python bench/autoscaling/ablate.py`.",
        "",
        analysis,
    ]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------- files and plots


def write(
    doc: dict[str, Any],
    *,
    out: pathlib.Path,
    evaluated: Evaluated,
    points: dict[tuple[str, float], dict[str, tuning.Point]],
    plots: bool,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(dumps(doc))
    analysis_path = pathlib.Path(__file__).resolve().parent / "analysis.md"
    analysis = analysis_path.read_text() if analysis_path.exists() else ""
    (out / "RESULTS.md").write_text(markdown(doc, analysis))
    if plots:
        _plots(doc, out=out / "plots", evaluated=evaluated, points=points)


def rewrite_markdown(out: pathlib.Path) -> None:
    """RESULTS.md again from results.json and analysis.md (no simulation, plots kept)."""
    doc = _revive(json.loads((out / "results.json").read_text(), parse_constant=float))
    (out / "results.json").write_text(dumps(doc))
    analysis_path = pathlib.Path(__file__).resolve().parent / "analysis.md"
    analysis = analysis_path.read_text() if analysis_path.exists() else ""
    (out / "RESULTS.md").write_text(markdown(doc, analysis))


def _revive(value: Any) -> Any:
    # results.json writes infinite ratios as the string "inf".
    if value == "inf":
        return math.inf
    if isinstance(value, dict):
        return {k: _revive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_revive(v) for v in value]
    return value


def dumps(doc: dict[str, Any]) -> str:
    """Indented JSON with lists of numbers kept on one line (the per-seed columns)."""
    text = json.dumps(_sanitize(doc), indent=1)
    return re.sub(r"\[\s*([-0-9.e,\s\"inf]*?)\s*\]", _one_line, text) + "\n"


def _one_line(match: re.Match[str]) -> str:
    return "[" + ", ".join(part.strip() for part in match.group(1).split(",")) + "]"


def _sanitize(value: Any) -> Any:
    # Standard JSON has no Infinity: an infinite ratio (x / 0) is written as "inf".
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, dict):
        return {k: _sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_sanitize(v) for v in value]
    return value


COLORS = {
    "kubeinfer": "#d62728",
    "HPA": "#1f77b4",
    "KEDA": "#9467bd",
    "KPA": "#2ca02c",
    "oracle": "#000000",
}


def _color(label: str) -> str:
    return COLORS.get(re.split(r"[ #,]", label)[0], "#ff7f0e")


def _plots(
    doc: dict[str, Any],
    *,
    out: pathlib.Path,
    evaluated: Evaluated,
    points: dict[tuple[str, float], dict[str, tuning.Point]],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    c = doc["settings"]["headlineColdStartSeconds"]
    shown = ("kubeinfer", "HPA tuned", "KEDA tuned", "KPA tuned", "oracle")
    for family, cold, _seed, rows in evaluated:
        series = {label: s for label, _, s, _ in rows if s}
        if not series or cold != c:
            continue
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.2), sharex=True, dpi=72)
        any_series = next(iter(series.values()))
        t = np.array(any_series["t"])
        load = top.twinx()
        load.fill_between(t, np.array(any_series["offered"]), color="#dddddd", step="pre")
        load.set_ylabel("offered req/s")
        top.set_zorder(load.get_zorder() + 1)
        top.patch.set_visible(False)
        for label in shown:
            s = series.get(label)
            if not s:
                continue
            top.step(t, s["scheduled"], where="post", lw=1.2, color=_color(label), label=label)
            miss = np.convolve(np.array(s["missShare"]), np.ones(10) / 10, mode="same")
            bottom.plot(t, miss, lw=1.0, color=_color(label), label=label)
        top.set_ylabel("replicas (holding a GPU)")
        top.legend(loc="upper left", fontsize=7, ncol=5)
        bottom.set_ylabel("share missing SLO (10 s avg)")
        bottom.set_xlabel("seconds")
        bottom.set_ylim(0, 1)
        fig.suptitle(f"{family}, cold start {c:g} s, seed 1", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / f"timeline-{family}.png")
        plt.close(fig)
    families = list(doc["results"])
    cols = 3
    rows_n = max(1, math.ceil(len(families) / cols))
    fig, axes = plt.subplots(rows_n, cols, figsize=(12, 3.3 * rows_n + 1.2), dpi=72, squeeze=False)
    key = f"{c:g}"
    for ax, f in zip(axes.flat, families, strict=False):
        grid_pts = points.get((f, c), {})
        for label, p in grid_pts.items():
            if "#" in label:
                ax.scatter(p.cost, p.attainment, s=6, color=_color(label), alpha=0.25, lw=0)
        for label, row in doc["results"][f].get(key, {}).items():
            med = row["median"]
            marker = "*" if label == "kubeinfer" else "o"
            if label.startswith("prototype"):
                marker = "."
            if label.endswith("default"):
                marker = "s"
            if label.endswith(tuning.ORACLE_BOUND):
                marker = "v"
            if label == "oracle":
                marker = "x"
                # The goal's cost bound: a scaler right of this line misses the goal.
                ax.axvline(
                    tuning.ORACLE_GOAL * med["replicaSeconds"], color="grey", lw=0.8, ls="--"
                )
            ax.scatter(
                med["replicaSeconds"],
                med["attainment"],
                marker=marker,
                s=90 if label == "kubeinfer" else 28,
                color=_color(label),
                edgecolors="black" if label.endswith("tuned") else None,
                label=label if f == families[0] else None,
                zorder=3,
            )
        ax.set_title(f, fontsize=9)
        ax.set_xlabel("replica-seconds", fontsize=8)
        ax.set_ylabel("SLO attainment", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(families) :]:
        ax.axis("off")
    fig.legend(loc="lower center", ncol=5, fontsize=7)
    fig.suptitle(
        f"SLO attainment vs replica-seconds, cold start {c:g} s (medians; faint dots: tuning "
        f"grid; dashed: {tuning.ORACLE_GOAL:g}x the oracle's replica-seconds)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.1 + 0.1 / rows_n, 1, 0.97))
    fig.savefig(out / "attainment-vs-cost.png")
    plt.close(fig)
