"""How perf_analyzer's gRPC connections land on our server's workers, and what that costs.

    .venv/bin/python bench/runtime/grpc_connections.py    # ~3 minutes; grpc-connections/

perf_analyzer's gRPC client (tritonclient's C++ one) shares a channel, one HTTP/2 connection,
among up to 6 of its concurrent contexts (TRITON_CLIENT_GRPC_CHANNEL_MAX_SHARE_COUNT), so at
concurrency 8 it opens two connections. Our `--workers 2` server's workers listen on one port
with SO_REUSEPORT, where the kernel gives each connection to one worker: whichever worker
holds no connection serves nothing. This measures, on the mlp model at c=8 over gRPC, for our
server and for Triton, with the client's default sharing and with one channel per context:
throughput and p99 (one perf_analyzer run per round, as bench.py measures a point), the
connections each process holds mid-run (`ss`), and the CPU each of our workers used.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import tempfile
import threading
import time
from typing import Any

import bench

from kubeinfer_cluster.triton import install as triton_install

SHARE = "TRITON_CLIENT_GRPC_CHANNEL_MAX_SHARE_COUNT"
ROUNDS = 3
CONCURRENCY = 8


def connections(port: int, pids: list[int]) -> dict[str, int]:
    """Established connections to `port`, counted by the process holding each."""
    listing = subprocess.run(
        ["ss", "-tnpH", "state", "established", "sport", "=", f":{port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    held = {str(pid): sum(f"pid={pid}," in line for line in listing.splitlines()) for pid in pids}
    return {pid: count for pid, count in held.items() if count}


def one_round(
    pa: pathlib.Path, server: str, process: Any, share: str | None, work: pathlib.Path
) -> dict[str, Any]:
    workers = bench.child_pids(process.pid) if server == "ours" else []
    port = (bench.OURS if server == "ours" else bench.TRITON)["grpc"]
    if share is not None:
        os.environ[SHARE] = share
    cpu_before = {w: bench.cpu_seconds(w) for w in workers}
    held: dict[str, int] = {}

    def sample() -> None:  # Mid-run: perf_analyzer's first window is under way by then.
        time.sleep(2)
        held.update(connections(port, [process.pid, *workers]))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        point = bench.measure(
            pa,
            server=server,
            pid=process.pid,
            model="mlp",
            protocol="grpc",
            concurrency=CONCURRENCY,
            interval_ms=3000,
            work=work,
        )
    finally:
        sampler.join()
        os.environ.pop(SHARE, None)
    return {
        "server": server,
        "channel_share": share or "default (6)",
        "throughput": point.get("throughput"),
        "p99_ms": point.get("p99_ms"),
        "connections_by_pid": held,
        "worker_cpu_s": {str(w): round(bench.cpu_seconds(w) - cpu_before[w], 2) for w in workers},
    }


def main() -> None:
    triton = triton_install.require()
    pa = bench.ensure_perf_analyzer(triton)
    work = pathlib.Path(tempfile.mkdtemp(prefix="kubeinfer-grpc-connections-"))
    commands = bench.commands(bench.write_repositories(work, ["mlp"], 2), 2, triton)
    rows = []
    for server in ("ours", "triton"):
        http = (bench.OURS if server == "ours" else bench.TRITON)["http"]
        process, _ = bench.start(commands[server], http, ["mlp"], work / f"{server}.log")
        try:
            for share in (None, "1"):
                for _ in range(ROUNDS):
                    rows.append(one_round(pa, server, process, share, work))
                    bench.say(json.dumps(rows[-1]))
        finally:
            bench.stop(process)
    out = bench.HERE / "grpc-connections"
    out.mkdir(exist_ok=True)
    result = {
        "command": "python bench/runtime/grpc_connections.py",
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load_average": os.getloadavg(),
        "python_loop_s": bench.python_loop_s(),
        "model": "mlp",
        "concurrency": CONCURRENCY,
        "rows": rows,
    }
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
