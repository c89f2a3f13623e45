"""Compare bench.py runs of two server versions side by side: the A/B tables in PROFILE.md.

    python bench/runtime/ab.py bench/runtime/grpc-ab/*.json

For each results.json given (one bench.py run each, alternating the versions), one line per
point: ours / Triton throughput, and server CPU per request (ms: the server's cores over its
requests per second) for ours and for Triton. CPU per request is the steadier figure on a
noisy host: it does not depend on how much of a core the server got.
"""

from __future__ import annotations

import json
import pathlib
import sys


def cpu_ms(side: dict[str, float]) -> float:
    return 1000 * side["server_cpu_cores"] / side["throughput"] if side["throughput"] else 0.0


def table(paths: list[pathlib.Path]) -> str:
    lines = [
        "| run | model | protocol | c | ours / Triton | ours CPU ms/req | Triton CPU ms/req |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for path in paths:
        for point in json.loads(path.read_text())["points"]:
            ours, triton = point["ours"], point["triton"]
            ratio = ours["throughput"] / triton["throughput"] if triton["throughput"] else 0.0
            lines.append(
                f"| {path.stem} | {point['model']} | {point['protocol']} | "
                f"{point['concurrency']} | {ratio:.2f} | {cpu_ms(ours):.2f} | "
                f"{cpu_ms(triton):.2f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table([pathlib.Path(p) for p in sys.argv[1:]]))
