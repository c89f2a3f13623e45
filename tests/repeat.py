"""Proof that `make test` is not flaky: run it N times in a row on a fresh clone, then once
more while another process keeps one core busy, and write what each tier did each time.

    python tests/repeat.py [--runs 5] [--busy-runs 1] [--ci] [--out tests/repeat-results] [--append]

Each run is `make test` in a fresh `git clone` of this repository's HEAD (its own .venv, the
shared build cache, as a new user's second run would be). The busy runs start
`stress-ng --cpu 1` (installed with apt-get when missing) for their whole duration and stop it
by pid afterwards. Writes <out>/results.json (every tier of every run: result and wall time)
and <out>/SUMMARY.md (pass counts and wall times per tier) after every run, so a run cut short
keeps what it finished; `--append` adds to the runs already in <out>/results.json. The full logs
stay under the temporary folder printed at the start.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def stress_ng() -> str:
    found = shutil.which("stress-ng")
    if found:
        return found
    print("installing stress-ng (apt-get)", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "stress-ng"], check=True)
    return shutil.which("stress-ng") or "stress-ng"


def one_run(index: int, work: pathlib.Path, *, busy: bool, ci: bool) -> dict[str, object]:
    clone = work / f"run-{index}"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    commit = subprocess.run(
        ["git", "-C", str(clone), "rev-parse", "--short", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    summary = work / f"run-{index}.json"
    log = work / f"run-{index}.log"
    env = dict(os.environ, KUBEINFER_TEST_SUMMARY=str(summary))
    if ci:
        env["CI"] = "true"
    stress: subprocess.Popen[bytes] | None = None
    if busy:
        stress = subprocess.Popen([stress_ng(), "--cpu", "1", "--timeout", "0"])
    started = time.monotonic()
    print(f"run {index}{' (one core busy)' if busy else ''}: make test in {clone}", flush=True)
    try:
        with log.open("wb") as out:
            code = subprocess.call(["make", "test"], cwd=clone, env=env, stdout=out, stderr=out)
    finally:
        if stress is not None:
            stress.send_signal(signal.SIGTERM)
            stress.wait(timeout=30)
    wall = time.monotonic() - started
    data = json.loads(summary.read_text()) if summary.exists() else {"tiers": []}
    tiers = {t["tier"]: t for t in data["tiers"]}
    print(
        f"run {index}: {'passed' if code == 0 else 'FAILED'} in {wall / 60:.1f} min; "
        + ", ".join(f"{n} {'ok' if t['passed'] else 'FAILED'}" for n, t in tiers.items()),
        flush=True,
    )
    shutil.rmtree(clone / ".venv", ignore_errors=True)  # the logs stay; the venv is 1 GB
    return {
        "run": index,
        "commit": commit,
        "busy": busy,
        "passed": code == 0,
        "wall_s": round(wall, 1),
        "tiers": data["tiers"],
        "log": str(log),
    }


def summarize(runs: list[dict[str, object]]) -> str:
    tiers: dict[str, list[dict[str, object]]] = {}
    for run in runs:
        for tier in run["tiers"]:  # type: ignore[attr-defined]
            tiers.setdefault(tier["tier"], []).append(tier)
    lines = [
        "# `make test`, repeated on fresh clones",
        "",
        f"Command: `python tests/repeat.py {' '.join(sys.argv[1:])}` on "
        f"{datetime.date.today().isoformat()}; {platform.platform()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}.",
        "",
        "| run | commit | one core busy | result | wall (min) |",
        "|---:|---|:---:|:---:|---:|",
    ]
    for run in runs:
        lines.append(
            f"| {run['run']} | {run.get('commit', '')} | {'yes' if run['busy'] else ''} | "
            f"{'passed' if run['passed'] else 'FAILED'} | {float(run['wall_s']) / 60:.1f} |"  # type: ignore[arg-type]
        )
    lines += ["", "| tier | passed | median wall (s) | max wall (s) |", "|---|---:|---:|---:|"]
    for name, results in tiers.items():
        walls = [float(r["wall_s"]) for r in results]  # type: ignore[arg-type]
        ok = sum(1 for r in results if r["passed"])
        lines.append(
            f"| {name} | {ok}/{len(results)} | {statistics.median(walls):.0f} | {max(walls):.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--busy-runs", type=int, default=1)
    parser.add_argument("--ci", action="store_true", help="CI=true, as .ci/run does")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "tests" / "repeat-results")
    parser.add_argument("--append", action="store_true", help="keep the runs already in --out")
    args = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="kubeinfer-repeat-"))
    print(f"logs in {work}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    existing = args.out / "results.json"
    runs: list[dict[str, object]] = (
        json.loads(existing.read_text()) if args.append and existing.exists() else []
    )
    plan = [False] * args.runs + [True] * args.busy_runs
    for busy in plan:
        runs.append(one_run(len(runs) + 1, work, busy=busy, ci=args.ci))
        existing.write_text(json.dumps(runs, indent=2) + "\n")
        (args.out / "SUMMARY.md").write_text(summarize(runs))
    print(summarize(runs))
    return 0 if all(r["passed"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
