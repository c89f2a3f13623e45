"""The forecast on the real local cluster: one InferenceService, the same "day" twice.

The simulator (bench/autoscaling) says the forecast (operator/kubeinfer/core/scaling/season.py)
scales ahead of a rise the previous period had. This runs the product itself: the operator as
a process, the local cluster's kubelet running real kubeinfer-onnx-server pods on loopback
IPs, `scaling.forecastPeriodSeconds` set to a short period (600 s, the shortest the API
accepts), and an open-loop load whose shape repeats every period: a base level with one rise.
Day 1 has no yesterday, so the reactive rules alone meet its rise; day 2 has day 1 as its
yesterday. Each day's scaling, decisions and requests are reported side by side.

Arrivals are evenly spaced, not Poisson: at the ~100-200 requests/s this machine can drive,
Poisson noise alone is ~8 % per 2-second bucket (one scrape at the shortest period), which a
service at production rates does not have and which would keep the forecast's error gate shut.

Run: ``make bench-realscale-day`` (or ``.venv/bin/python bench/realscale/day.py``); about
23 minutes. Writes bench/realscale/day.json and bench/realscale/DAY.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import pathlib
import platform
import sys
import threading
import time
from typing import Any

import bench  # bench/realscale/bench.py: the recorder, readiness, the result's header
import day_report
import report
from kubernetes import client

from tests.conftest import ClusterHandle
from tests.e2e import load, scenario

NAME = bench.NAME


class DecisionRecorder(bench.Poller):
    """Polls status.autoscaler.decisions every second (status keeps the newest 10) and keeps
    each decision once, times relative to ``t0`` (wall clock: status times are UTC)."""

    def __init__(self, cluster: ClusterHandle, namespace: str, t0_wall: float) -> None:
        super().__init__()
        self.cluster, self.namespace, self.t0_wall = cluster, namespace, t0_wall
        self.decisions: dict[tuple[str, str], day_report.Decision] = {}

    def poll(self) -> None:
        try:
            obj = scenario.get(self.cluster, self.namespace, NAME)
        except Exception:  # an API blip: the next poll will do
            return
        for d in ((obj.get("status") or {}).get("autoscaler") or {}).get("decisions") or []:
            key = (d["time"], d["reason"])
            if key in self.decisions:
                continue
            when = datetime.datetime.fromisoformat(d["time"].replace("Z", "+00:00"))
            inputs = d.get("inputs") or {}
            self.decisions[key] = day_report.Decision(
                t=round(when.timestamp() - self.t0_wall, 1),
                desired=int(d["desired"]),
                current=int(d["current"]),
                reason=str(d["reason"]),
                forecast_demand=inputs.get("forecastDemand"),
                forecast_error=inputs.get("forecastError"),
            )

    def ordered(self) -> list[day_report.Decision]:
        return sorted(self.decisions.values(), key=lambda d: d.t)


def manifest(uri: str, args: argparse.Namespace) -> str:
    # The replicas the base load needs from the start (Off keeps them while the capacity is
    # measured on one pod): a first day that begins overloaded would learn the start, not the
    # day (its 503s, retried, read as demand many times the base and fill the burst history).
    return bench.manifest(
        uri,
        args,
        keep_replicas=True,
        replicas=max(1, math.ceil(args.base)),
        scaling={"forecastPeriodSeconds": int(args.period)},
    )


async def two_days(
    endpoints: load.Endpoints,
    day: day_report.Day,
    capacity: float,
    args: argparse.Namespace,
    results: list[load.LoadResult],
    recorder: bench.DeploymentRecorder,
) -> None:
    """Day 2 starts one period after day 1 to the scheduler's accuracy, whatever day 1's last
    answers still take; each day's requests are counted on their own."""

    def progress(index: int) -> Any:
        def show(t: float, result: load.LoadResult) -> None:
            if int(t) % 30 == 0:
                last = recorder.samples[-1] if recorder.samples else None
                print(
                    f"[day {index + 1}] {t:5.0f}/{day.period_s:g} s, "
                    f"{day.rate(t, capacity):.0f} req/s, replicas "
                    f"{last.replicas if last else '?'} ({last.ready if last else '?'} Ready); "
                    f"{result.sent} sent, {result.ok} ok, {result.rejected_503} x 503",
                    flush=True,
                )

        return show

    async def warm_up() -> None:
        # From nothing to the base load: the service's own start is not part of any day.
        await load.open_loop(
            endpoints,
            rate=lambda t: day.rate(0.0, capacity) * max(0.05, t / args.warmup),
            duration_s=args.warmup,
            poisson=False,
            deadline_s=args.deadline,
        )

    async def one(index: int) -> None:
        await asyncio.sleep(args.warmup + index * day.period_s)
        await load.open_loop(
            endpoints,
            rate=lambda t: day.rate(t, capacity),
            duration_s=day.period_s,
            poisson=False,
            deadline_s=args.deadline,
            on_progress=progress(index),
            result=results[index],
        )

    await asyncio.gather(warm_up(), *(one(i) for i in range(len(results))))


def measure(cluster: ClusterHandle, uri: str, args: argparse.Namespace, day: day_report.Day) -> Any:
    namespace = "realscale-day"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    scenario.apply(cluster, namespace, manifest(uri, args))
    with load.Endpoints(cluster.core, namespace, f"{scenario.LABEL}={NAME}") as endpoints:
        ip = bench.wait_ready(cluster, namespace, endpoints)
        capacity = scenario.measure_then_autoscale(cluster, namespace, NAME, ip)
        print(f"[day] one replica: {capacity:.1f} requests/s", flush=True)
        results = [load.LoadResult(), load.LoadResult()]
        loads: list[list[float]] = [list(os.getloadavg())]
        # Times are from the start of day 1, after the warm-up.
        t0, t0_wall = time.monotonic() + args.warmup, time.time() + args.warmup
        with (
            bench.DeploymentRecorder(cluster.apps, namespace, t0) as recorder,
            DecisionRecorder(cluster, namespace, t0_wall) as decisions,
        ):

            def between() -> None:  # the load average where day 1 ends and day 2 begins
                time.sleep(args.warmup + day.period_s)
                loads.append(list(os.getloadavg()))

            threading.Thread(target=between, daemon=True).start()
            load.run(two_days(endpoints, day, capacity, args, results, recorder))
        loads.append(list(os.getloadavg()))
    state = (scenario.get(cluster, namespace, NAME).get("status") or {}).get("autoscaler") or {}
    days = []
    for index, result in enumerate(results):
        figures = day_report.day_figures(recorder.samples, decisions.ordered(), day, index)
        figures.update(report.request_figures(result))
        print(f"[day {index + 1}] {result.summary()}", flush=True)
        days.append(
            {
                "figures": figures,
                "loadavg_before": [round(x, 2) for x in loads[index]],
                "loadavg_after": [round(x, 2) for x in loads[min(index + 1, len(loads) - 1)]],
            }
        )
    timeline = report.timeline(recorder.samples)
    return capacity, days, timeline, state.get("coldStartSeconds")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--period", type=float, default=600.0, help="the forecast period, s")
    parser.add_argument("--base", type=float, default=1.5, help="load outside the rise")
    parser.add_argument("--rise", type=float, default=4.0, help="the rise, x one replica")
    parser.add_argument("--rise-at", type=float, default=240.0, help="seconds into each day")
    parser.add_argument("--rise-seconds", type=float, default=90.0)
    parser.add_argument("--target", type=float, default=4.0, help="queue per replica")
    parser.add_argument("--max-replicas", type=int, default=8)
    parser.add_argument("--cold-start", default="20s", help="emulated model load per pod")
    parser.add_argument("--deadline", type=float, default=30.0, help="client deadline, s")
    parser.add_argument("--warmup", type=float, default=60.0, help="0 to base before day 1, s")
    parser.add_argument("--out", type=pathlib.Path, default=bench.OUT)
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="compute the figures and DAY.md again from day.json's timeline and decisions",
    )
    args = parser.parse_args()
    if args.report_only:
        saved = day_report.refigure(json.loads((args.out / "day.json").read_text()))
        write(args.out, saved)
        return 0
    day = day_report.Day(args.period, args.base, args.rise, args.rise_at, args.rise_seconds)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with bench.cluster_and_operator("realscale-day") as (cluster, work):
        uri = scenario.model_uri(work)
        capacity, days, timeline, cold_start = measure(cluster, uri, args, day)
    results = {
        "started": started,
        "command": " ".join([os.path.relpath(sys.argv[0], bench.REPO), *sys.argv[1:]]),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "versions": {
            "kubeinfer": (bench.REPO / "VERSION").read_text().strip(),
            "kubernetes": cluster.tools.kubernetes_version,
            "git": bench.git_head(),
        },
        "load": {
            "period_s": day.period_s,
            "base": day.base,
            "rise": day.rise,
            "rise_at_s": day.rise_at_s,
            "rise_s": day.rise_s,
            "replicas_needed": day.replicas_needed,
            "capacity_per_replica": round(capacity, 1),
            "deadline_s": args.deadline,
            "warmup_s": args.warmup,
            "arrivals": "evenly spaced",
            "device_ms": bench.DEVICE_MS,
            "max_batch": bench.MAX_BATCH,
            "cold_start": args.cold_start,
            "learned_cold_start_s": cold_start,
            "target_per_replica": args.target,
            "max_replicas": args.max_replicas,
        },
        "days": days,
        "timeline": timeline,
    }
    write(args.out, results)
    return 0


def write(out: pathlib.Path, results: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "day.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "DAY.md").write_text(day_report.markdown(results))
    plot(out / "day.png", results)
    print(day_report.markdown(results))


def plot(path: pathlib.Path, results: dict[str, Any]) -> None:
    """Replicas asked for and Ready through each day, one over the other, with the offered
    load and the forecast's scale-ups."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ld = results["load"]
    day = day_report.Day(ld["period_s"], ld["base"], ld["rise"], ld["rise_at_s"], ld["rise_s"])
    fig, ax = plt.subplots(figsize=(9, 4), dpi=72)
    offered = ax.twinx()
    ts = [t / 2 for t in range(int(day.period_s * 2))]
    offered.fill_between(
        ts, [day.rate(t, ld["capacity_per_replica"]) for t in ts], color="#e4e4e4", step="pre"
    )
    offered.set_ylabel("offered requests/s")
    ax.set_zorder(offered.get_zorder() + 1)
    ax.patch.set_visible(False)
    for index, color in enumerate(("#d62728", "#1f77b4")):
        start = index * day.period_s
        inside = [r for r in results["timeline"] if start <= r[0] < start + day.period_s]
        t = [r[0] - start for r in inside]
        ax.step(
            t,
            [r[1] for r in inside],
            where="post",
            color=color,
            lw=1.4,
            label=f"day {index + 1}: asked for",
        )
        ax.step(
            t,
            [r[2] for r in inside],
            where="post",
            color=color,
            lw=1.0,
            ls=":",
            label=f"day {index + 1}: Ready",
        )
        ups = [
            d
            for d in results["days"][index]["figures"]["decisions"]
            if d["reason"] == "ForecastScaleUp"
        ]
        if ups:
            ax.scatter(
                [d["t"] for d in ups],
                [d["desired"] for d in ups],
                marker="^",
                color=color,
                zorder=5,
                label=f"day {index + 1}: ForecastScaleUp",
            )
    ax.set_ylim(0, ld["max_replicas"] + 1)
    ax.set_xlabel("seconds into the day")
    ax.set_ylabel("replicas")
    ax.legend(loc="upper right", fontsize=7)
    fig.suptitle(
        f"The same {day.period_s:g} s day twice: forecastPeriodSeconds {day.period_s:g}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
