"""The runtime benchmark's verdicts and RESULTS.md, from its results.json. Pure: no I/O here.

The goal (issue 14): ours >= 1.0x Triton's throughput at every point with p99 no worse, and
ready-after-start <= 0.25x Triton's.
"""

from __future__ import annotations

import statistics
from typing import Any

THROUGHPUT_GOAL = 1.0
READY_GOAL = 0.25


def verdict(point: dict[str, Any]) -> str:
    """'met', or what missed: the throughput ratio and/or the p99 ratio."""
    ours, triton = point["ours"], point["triton"]
    if "error" in ours or "error" in triton:
        return "no measurement (perf_analyzer failed)"
    ratio = ours["throughput"] / triton["throughput"]
    p99 = ours["p99_ms"] / triton["p99_ms"]
    missed = []
    if ratio < THROUGHPUT_GOAL:
        missed.append(f"throughput {ratio:.2f}x")
    if p99 > 1.0:
        missed.append(f"p99 {p99:.2f}x")
    return "met" if not missed else "missed: " + ", ".join(missed)


def point_line(point: dict[str, Any]) -> str:
    def side(m: dict[str, Any]) -> str:
        if "error" in m:
            return "error"
        return f"{m['throughput']:7.0f}/s p50 {m['p50_ms']:.2f} p99 {m['p99_ms']:.2f}"

    return (
        f"{point['model']:5} {point['protocol']:4} c={point['concurrency']:<3} "
        f"ours {side(point['ours'])} | triton {side(point['triton'])} -> {verdict(point)}"
    )


def _host_speed(result: dict[str, Any]) -> str:
    """The host's Python speed before and after, where the run recorded it (from 2026-12-03)."""
    if "python_loop_s_before" not in result:
        return ""
    return (
        f" Host speed: a 3-million-step Python loop took {result['python_loop_s_before']:.2f} s "
        f"before and {result['python_loop_s_after']:.2f} s after (0.22-0.25 s on a quiet host "
        "here, 0.4-0.8 s in its slow hours, with load average near 0)."
    )


def render(result: dict[str, Any]) -> str:
    v = result["versions"]
    before, after = result["load_average_before"], result["load_average_after"]
    lines = [
        "# kubeinfer-onnx-server vs Triton under perf_analyzer (one run, side by side)",
        "",
        f"- When: {result['started']}; load average (1/5/15 min) {_load(before)} before, "
        f"{_load(after)} after.{_host_speed(result)}",
        f"- Machine: {v['cpu']}, {v['cpus']} CPUs usable, Linux {v['kernel']}, no GPU. "
        "perf_analyzer runs on the same cores as the server under test.",
        f"- Load: perf_analyzer {v['perf_analyzer']} (C++, from the tritonclient 2.51.0 wheel), "
        "closed loop at each concurrency, batch-1 requests of random data, windows of "
        f"{result['interval_ms']} ms until 3 agree within 100 % (throughput, mean latency; "
        "otherwise taken as they come, marked * below); points alternate between the servers.",
        f"- Triton {v['tritonserver']} ({v['triton_wheel']}; python backend running onnxruntime "
        f"{v['onnxruntime_triton']}, its only CPU path for ONNX here). Ours: "
        f"kubeinfer-onnx-server, onnxruntime {v['onnxruntime_ours']}, aiohttp "
        f"{v['aiohttp_ours']}, " + _grpc_frontend(result) + f", Python {v['python']}.",
        f"- Both: {_threads(result)}, dynamic batching with no queue delay "
        "(Triton's default, its best for latency here), max batch 128; "
        f"{_copies(result)}.",
        f"- Command: `{result['command']}`",
        "",
        "Throughput in requests/s, latencies in ms as perf_analyzer measured them; ratio = ours / "
        "Triton. CPU = cores the server process (Triton: with its python stub) used during the "
        "point; the load generator's own CPU is in results.json.",
        "",
        "| model | proto | conc | ours req/s | Triton req/s | ratio | ours p50 | Triton p50 "
        "| ours p99 | Triton p99 | ours CPU | Triton CPU | verdict |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p in result["points"]:
        o, t = p["ours"], p["triton"]
        if "error" in o or "error" in t:
            lines.append(
                f"| {p['model']} | {p['protocol']} | {p['concurrency']} |"
                + " |" * 9
                + f" {verdict(p)} |"
            )
            continue
        lines.append(
            f"| {p['model']} | {p['protocol']} | {p['concurrency']} | {o['throughput']:,.0f} | "
            f"{t['throughput']:,.0f} | {o['throughput'] / t['throughput']:.2f} | "
            f"{o['p50_ms']:.2f} | {t['p50_ms']:.2f} | {o['p99_ms']:.2f} | {t['p99_ms']:.2f} | "
            f"{o['server_cpu_cores']:.2f} | {t['server_cpu_cores']:.2f} | "
            f"{verdict(p)}{_unstable(p)} |"
        )
    lines += [
        "",
        "The physical limit, onnxruntime alone (no server, one caller, same threads): rows/s "
        "(ms per run) by batch size. A server at concurrency c batches at most c requests.",
        "",
        "| model | " + " | ".join(f"batch {b}" for b in _batches(result)) + " |",
        "|---|" + "---:|" * len(_batches(result)),
    ]
    for model, limits in result.get("onnxruntime_alone", {}).items():
        cells = [f"{v['rows_per_s']:,.0f} ({v['run_ms']:.2f})" for v in limits.values()]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    met = sum(verdict(p) == "met" for p in result["points"])
    ready = result["ready_after_start_s"]
    ours_s, triton_s = statistics.median(ready["ours"]), statistics.median(ready["triton"])
    ratio = ours_s / triton_s
    lines += [
        "",
        f"Throughput and p99: met at {met} of {len(result['points'])} points.",
        "",
        f"## Ready after start ({len(ready['ours'])} starts each, alone, alternating)",
        "",
        "Process start to `/v2/health/ready` 200 with every model's `/ready` 200 (5 ms polls).",
        "",
        "| server | median s | min s | max s |",
        "|---|---:|---:|---:|",
        f"| ours | {ours_s:.3f} | {min(ready['ours']):.3f} | {max(ready['ours']):.3f} |",
        f"| Triton | {triton_s:.3f} | {min(ready['triton']):.3f} | {max(ready['triton']):.3f} |",
        "",
        f"Ratio ours / Triton {ratio:.2f} (goal <= {READY_GOAL}): "
        f"{'met' if ratio <= READY_GOAL else 'missed'}.",
        "",
        "Models: " + "; ".join(f"`{k}` = {d}" for k, d in result["models"].items()) + ".",
        "What bounds each missed point, with the profile: PROFILE.md.",
    ]
    return "\n".join(lines) + "\n"


def _grpc_frontend(result: dict[str, Any]) -> str:
    """Which gRPC frontend our server ran: the default unless the command chose grpcio."""
    v = result["versions"]
    if "--grpc-frontend grpcio" in result["command"]:
        return f"gRPC on grpcio {v['grpcio_ours']}"
    hpack = f", hpack {v['hpack_ours']}" if "hpack_ours" in v else ""
    return f"gRPC on its own HTTP/2 reading (grpc_fastpath{hpack})"


def readme_figures(result: dict[str, Any]) -> str:
    """The README's runtime figures, from results.json (a unit test keeps the README equal)."""
    lines = [
        f"Against Triton {result['versions']['tritonserver']} under perf_analyzer, side by side "
        f"({result['started'][:10]}, {result['versions']['cpus']} CPUs, load average "
        f"{result['load_average_before'][0]:.2f}; `bench/runtime/RESULTS.md`):",
        "",
        "| model | protocol | throughput ours / Triton (c = "
        + ", ".join(str(c) for c in _concurrencies(result))
        + ") | points met (throughput and p99) |",
        "|---|---|---|---:|",
    ]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in result["points"]:
        groups.setdefault((p["model"], p["protocol"]), []).append(p)
    for (model, protocol), points in groups.items():
        ratios = [
            f"{p['ours']['throughput'] / p['triton']['throughput']:.2f}"
            if "error" not in p["ours"] and "error" not in p["triton"]
            else "-"
            for p in points
        ]
        met = sum(verdict(p) == "met" for p in points)
        lines.append(f"| {model} | {protocol} | {' / '.join(ratios)} | {met} of {len(points)} |")
    ready = result["ready_after_start_s"]
    ours_s, triton_s = statistics.median(ready["ours"]), statistics.median(ready["triton"])
    lines += [
        "",
        f"Ready after start: {ours_s:.2f} s vs Triton's {triton_s:.2f} s "
        f"({ours_s / triton_s:.2f}x; the goal is <= {READY_GOAL}x).",
    ]
    return "\n".join(lines) + "\n"


def _concurrencies(result: dict[str, Any]) -> list[int]:
    return sorted({p["concurrency"] for p in result["points"]})


def _load(values: list[float]) -> str:
    return " / ".join(f"{x:.2f}" for x in values)


def _unstable(point: dict[str, Any]) -> str:
    sides = ("ours", "triton")
    return " *" if any(point[s].get("stability_percentage", 100) > 100 for s in sides) else ""


def _batches(result: dict[str, Any]) -> list[str]:
    return list(next(iter(result.get("onnxruntime_alone", {}).values()), {}))


def _threads(result: dict[str, Any]) -> str:
    # Runs before 2026-12-05 03:40 gave ours the thread count, not a CPU limit.
    if "ours_cpu_limit" not in result:
        return f"{result['threads']} intra-op threads"
    return (
        f"{result['threads']} cores (Triton: intra-op threads per instance; ours: a CPU limit "
        "of that many cores, as a pod's, shared among its workers' intra-op threads)"
    )


def _copies(result: dict[str, Any]) -> str:
    # Runs before --workers existed: one process each, one instance, both models in one server.
    instances = result.get("triton_instances", 1)
    workers = result.get("ours_workers")
    if not workers:
        return f"one server each for both models, Triton {instances} instance"
    ours = ", ".join(f"{model} {count}" for model, count in workers.items())
    return (
        "one server per model under load; ours with --workers auto, worker processes (each "
        f"with its own event loop and copy of the model): {ours}; Triton {instances} instance"
        f"{'s' if instances > 1 else ''} (its best here, `triton-instances/`)"
    )
