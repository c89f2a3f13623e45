"""Where kubeinfer-onnx-server's time goes under perf_analyzer load: py-spy on the server alone.

Run from the repository root, after `make bench-runtime` has cached perf_analyzer once and with
py-spy in the venv (`.venv/bin/pip install py-spy`; a profiler, not a dependency):

    .venv/bin/python bench/runtime/profile_server.py --protocol grpc --concurrency 64
    .venv/bin/python bench/runtime/profile_server.py --protocol http --concurrency 32 --raw out.txt

The server gets the benchmark's model and flags (bench.py), perf_analyzer drives it as in the
benchmark, and py-spy samples every thread for a few seconds in the middle of the load. The
summary groups samples by thread and by whose code was on top: the HTTP or gRPC framework,
this server's modules, onnxruntime, or a blocking call into the kernel (socket writes, epoll).
PROFILE.md quotes its output. A sample is wall-clock time a thread was not idle, so on shared
cores it includes time spent runnable but waiting for a core or for the GIL.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import bench

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Who owns the top frame of a sample, by file name (first match wins).
OWNERS = [
    ("onnxruntime", "onnxruntime (Session.run)"),
    ("grpc_fastpath", "kubeinfer_onnx.grpc_fastpath (HTTP/2 framing)"),
    ("hpack", "hpack (HTTP/2 header blocks)"),
    ("kubeinfer_onnx", "kubeinfer_onnx (our code)"),
    ("grpc", "grpcio (cygrpc, grpc.aio)"),
    ("aiohttp", "aiohttp"),
    ("runners.py", "event loop (uvloop: epoll, recv, callbacks)"),
    ("thread.py", "thread pool hand-off"),
    ("threading.py", "thread pool hand-off"),
    ("asyncio", "asyncio tasks and futures"),
]


def owner(frame: str, transport_write: bool) -> str:
    if transport_write:
        return "socket write (transport.write: the kernel's loopback TCP)"
    for needle, name in OWNERS:
        if needle in frame:
            return name
    return "other Python"


def summarize(raw: pathlib.Path, top: int = 15) -> str:
    threads: collections.Counter[str] = collections.Counter()
    owners: collections.Counter[tuple[str, str]] = collections.Counter()
    frames: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        parts = stack.split(";")
        n = int(count)
        thread = parts[0].split(":")[-1].strip() or parts[0]
        total += n
        threads[thread] += n
        leaf = parts[-1]
        # aiohttp's writer or our fast path, at the line that calls transport.write
        write = any(
            w in leaf
            for w in (
                "_writelines",
                "FastProtocol._write",
                "StreamWriter._write",
                "Connection._send",
            )
        )
        owners[(thread, owner(leaf, write))] += n
        frames[f"{thread}: {leaf}"] += n
    out = [f"{total} samples"]
    out += [f"  {n / total:6.1%}  thread {t}" for t, n in threads.most_common()]
    out.append("by owner of the top frame:")
    out += [f"  {n / total:6.1%}  {t}: {o}" for (t, o), n in owners.most_common()]
    out.append(f"top {top} frames (self):")
    out += [f"  {n / total:6.1%}  {f[:140]}" for f, n in frames.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--model", choices=list(bench.MODELS), default="mlp")
    parser.add_argument("--seconds", type=int, default=8, help="py-spy recording length")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--raw", type=pathlib.Path, help="keep py-spy's raw stacks here")
    args = parser.parse_args(argv)
    py_spy = ROOT / ".venv" / "bin" / "py-spy"
    if not py_spy.is_file() and shutil.which("py-spy") is None:
        raise SystemExit("py-spy is needed: .venv/bin/pip install py-spy")
    triton = bench.triton_install.require()
    pa = bench.ensure_perf_analyzer(triton)
    work = pathlib.Path(tempfile.mkdtemp(prefix="kubeinfer-profile-"))
    command = bench.commands(
        bench.write_repositories(work, [args.model], args.threads), args.threads, triton
    )["ours"]
    server, _ = bench.start(command, bench.OURS["http"], [args.model], work / "ours.log")
    raw = args.raw or work / "py-spy.txt"
    try:
        result: dict[str, object] = {}
        interval = int(args.seconds * 1000 / 2) + 2000  # the recording sits inside the load
        load = threading.Thread(
            target=lambda: result.update(
                bench.measure(
                    pa,
                    server="ours",
                    pid=server.pid,
                    model=args.model,
                    protocol=args.protocol,
                    concurrency=args.concurrency,
                    interval_ms=interval,
                    work=work,
                )
            )
        )
        load.start()
        time.sleep(2.0)
        subprocess.run(
            [
                str(py_spy if py_spy.is_file() else "py-spy"),
                "record",
                "-p",
                str(server.pid),
                "-d",
                str(args.seconds),
                "-r",
                "250",
                "-f",
                "raw",
                "-o",
                str(raw),
                "--threads",
            ],
            check=True,
            capture_output=True,
        )
        load.join()
    finally:
        bench.stop(server)
    print(
        f"{args.model} {args.protocol} c={args.concurrency}: "
        f"{result.get('throughput', 0):.0f} req/s, p99 {result.get('p99_ms', 0):.2f} ms, "
        f"server {result.get('server_cpu_cores', 0):.2f} cores"
    )
    print(summarize(raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
