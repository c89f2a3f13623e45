"""`make test`: run every tier, keep going after a failure, and report each tier at the end.

One flaky or broken tier must not hide the others, so each tier runs to completion whatever
the ones before it did. The run still fails (exit 1) when any tier failed. The summary (tier,
result, wall time) is printed as a table and written as JSON to $KUBEINFER_TEST_SUMMARY
(default .state/test-summary.json), which tests/repeat.sh collects across runs.

Usage: python tests/run_tiers.py [TIER ...]   (default: every tier, in order)
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Each tier is the make target of the same name, so `make test-e2e` alone runs the same thing.
TIERS = ["lint", "unit", "integration", "router", "e2e", "reliability", "images"]


def run_tier(tier: str) -> dict[str, object]:
    target = "lint" if tier == "lint" else f"test-{tier}"
    print(f"\n\033[1m==> tier {tier}: make {target}\033[0m", flush=True)
    started = time.monotonic()
    code = subprocess.call(["make", "--no-print-directory", target], cwd=ROOT)
    wall = time.monotonic() - started
    return {"tier": tier, "passed": code == 0, "exit_code": code, "wall_s": round(wall, 1)}


def main(argv: list[str]) -> int:
    tiers = argv or TIERS
    unknown = [t for t in tiers if t not in TIERS]
    if unknown:
        print(f"unknown tiers {unknown}; known: {TIERS}", file=sys.stderr)
        return 2
    started = time.monotonic()
    results = [run_tier(tier) for tier in tiers]
    total = time.monotonic() - started
    print("\n\033[1m==> make test summary\033[0m")
    print(f"{'tier':<13}{'result':<9}{'wall':>9}")
    for r in results:
        print(f"{r['tier']:<13}{'passed' if r['passed'] else 'FAILED':<9}{r['wall_s']:>8.1f}s")
    failed = [str(r["tier"]) for r in results if not r["passed"]]
    print(f"{'total':<22}{total:>8.1f}s  " + (f"FAILED: {', '.join(failed)}" if failed else "ok"))
    summary = pathlib.Path(
        os.environ.get("KUBEINFER_TEST_SUMMARY", ROOT / ".state" / "test-summary.json")
    )
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(
        json.dumps({"passed": not failed, "wall_s": round(total, 1), "tiers": results}, indent=2)
        + "\n"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
