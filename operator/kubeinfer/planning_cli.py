"""``kubeinfer plan``: read a kubeinfer-onnx-profile report and print the plan as a table.

Owns the file reading and printing around the pure ``core.planning``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence

from kubeinfer.core import planning


def plan_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kubeinfer plan",
        description="Replicas and batching to start with, from a kubeinfer-onnx-profile report.",
    )
    parser.add_argument("profile", type=pathlib.Path, help="kubeinfer-onnx-profile JSON report")
    parser.add_argument(
        "--precision", default="fp32", help="which run of the report to plan from (fp32, int8)"
    )
    parser.add_argument("--rps", type=float, required=True, help="target requests per second")
    parser.add_argument("--p99-ms", type=float, required=True, help="p99 latency target (ms)")
    parser.add_argument(
        "--utilization",
        type=float,
        default=planning.DEFAULT_UTILIZATION,
        help="share of measured throughput to plan for (default %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        rows = planning.parse_profile(
            json.loads(args.profile.read_text()), precision=args.precision
        )
        result = planning.plan(
            profile=rows,
            target_rps=args.rps,
            p99_target_ms=args.p99_ms,
            utilization=args.utilization,
        )
    except (OSError, ValueError) as error:
        print(f"kubeinfer plan: {error}", file=sys.stderr)
        return 2
    print(f"{'batch':>6} {'p50 ms':>8} {'p99 ms':>8} {'rps':>10}")
    for row in rows:
        mark = "  <- planned" if row.batch == result.max_batch_size else ""
        print(
            f"{row.batch:>6} {row.p50_ms:>8.1f} {row.p99_ms:>8.1f} {row.throughput_rps:>10.1f}"
            f"{mark}"
        )
    print()
    print(f"replicas            {result.replicas}")
    print(f"maxBatchSize        {result.max_batch_size}")
    print(f"maxQueueDelayUs     {result.max_queue_delay_us}")
    print(f"capacity per replica {result.capacity_rps:.1f} rps (p99 {result.p99_ms:.1f} ms)")
    print(f"scaling target      {result.target_queue_depth} requests queued or executing")
    if not result.meets_p99:
        print(f"warning: no batch size meets a {args.p99_ms:g} ms p99 with queueing headroom")
    return 0


if __name__ == "__main__":
    raise SystemExit(plan_main())
