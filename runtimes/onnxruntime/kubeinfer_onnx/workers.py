"""Several server processes on one set of ports: the supervisor that starts and stops them, and
the statistics they share.

One Python process answers every request on one event-loop thread, and past about a core of
protocol work (a small model at 32-64 concurrent calls, PROFILE.md) that thread is the bound,
not the model. With `--workers N` the command becomes a supervisor that starts N copies of the
server (workers), each with its own event loop, batcher and onnxruntime session, all listening
on the same ports with SO_REUSEPORT: the kernel spreads new connections across them, and a
worker gets none until it has loaded its models and bound.

What must look like one server is shared here:
- statistics: each worker answers its own records on a Unix socket in a folder the supervisor
  made; whichever worker is asked for /metrics or the v2 statistics sums every worker's records
  (`Peers.gather`), so Triton's counters and the queue gauges the autoscaler reads cover the
  whole pod, and perf_analyzer's statistics queries see every request wherever they land;
- stopping: SIGTERM/SIGINT to the supervisor goes to every worker, and each drains as a lone
  server would; the supervisor exits when all have, with the worst exit status;
- failure: a worker that dies stops the others and the supervisor exits non-zero, so the
  kubelet restarts the container (a pod at part capacity that reports itself whole is worse);
  a worker whose supervisor is gone stops too;
- readiness: a worker reports ready only once every worker has loaded its models.
Not shared: the response cache (each worker caches what it has served).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from types import FrameType
from typing import Any

from kubeinfer_onnx import metrics

log = logging.getLogger("kubeinfer_onnx.workers")

# A peer busy with a batch answers within milliseconds; one that takes longer than this is
# left out of the sum (and logged) rather than holding up the scrape or the statistics call.
ASK_TIMEOUT_S = 1.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def supervise(argv: Sequence[str], workers: int) -> int:
    """Start `workers` copies of the server with `argv`, pass SIGTERM/SIGINT on, and return
    the exit status once all have exited: 0 when all exited 0."""
    folder = tempfile.mkdtemp(prefix="kubeinfer-onnx-")
    command = [sys.executable, "-m", "kubeinfer_onnx.server", *argv, f"--peers-dir={folder}"]
    children: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop_all(signum: int = signal.SIGTERM) -> None:
        for child in children.values():
            if child.returncode is None:
                child.send_signal(signum)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        stop_all(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        for index in range(workers):
            child = subprocess.Popen(
                [*command, f"--worker-index={index}"], preexec_fn=_stop_with_supervisor
            )
            children[child.pid] = child
        if stopping:  # A signal came while they were starting: the late ones get it too.
            stop_all()
        log.info(
            "supervising %d workers: pids %s; statistics sockets in %s",
            workers,
            sorted(children),
            folder,
        )
        while any(child.returncode is None for child in children.values()):
            pid, wait_status = os.waitpid(-1, 0)
            exited = children.get(pid)
            if exited is None:
                continue
            exited.returncode = code = os.waitstatus_to_exitcode(wait_status)
            status = max(status, code if code >= 0 else 128 - code)
            if not stopping:
                # Exited unasked (crashed, or exited 0 by mistake): the pod is at part
                # capacity. Stop the rest and exit non-zero, so the container restarts.
                log.error("worker pid %d exited unasked (%d); stopping the others", pid, code)
                stopping = True
                status = max(status, 1)
                stop_all()
    finally:
        for child in children.values():
            if child.returncode is None:  # Only after an error here: leave no worker behind.
                child.kill()
                child.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        shutil.rmtree(folder, ignore_errors=True)
    return status


class Peers:
    """This worker's place among its siblings: it answers its own statistics on
    `<folder>/<index>.sock` and gathers everyone's when asked."""

    def __init__(self, folder: pathlib.Path, index: int, count: int) -> None:
        self.folder = folder
        self.index = index
        self.count = count
        self._server: asyncio.AbstractServer | None = None
        self._registry: metrics.Metrics | None = None

    def path(self, index: int) -> pathlib.Path:
        return self.folder / f"{index}.sock"

    def all_up(self) -> bool:
        """Every worker has loaded its models (it opens its socket just before it binds)."""
        return all(self.path(index).exists() for index in range(self.count))

    async def start(self, registry: metrics.Metrics) -> None:
        """Answer this worker's records, and make `registry.collect` sum everyone's."""
        self._registry = registry
        self._server = await asyncio.start_unix_server(self._answer, path=self.path(self.index))
        registry.gather = self.gather

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._registry is not None
        try:
            await reader.readline()
            records = [metrics.snapshot(stats) for stats in self._registry.models]
            writer.write(json.dumps(records).encode())
            await writer.drain()
        except OSError:
            pass  # The asking worker gave up (timeout) or stopped; nothing to answer.
        finally:
            writer.close()

    async def gather(self, local: list[metrics.ModelStats]) -> list[metrics.ModelStats]:
        """This worker's records plus every sibling's that answers, summed per model version."""
        others = await asyncio.gather(
            *(self._ask(index) for index in range(self.count) if index != self.index)
        )
        return metrics.merge([local, *(records for records in others if records is not None)])

    async def _ask(self, index: int) -> list[dict[str, Any]] | None:
        try:
            async with asyncio.timeout(ASK_TIMEOUT_S):
                reader, writer = await asyncio.open_unix_connection(self.path(index))
                try:
                    writer.write(b"stats\n")
                    body = await reader.read()
                finally:
                    writer.close()
            records: list[dict[str, Any]] = json.loads(body)
            return records
        except (FileNotFoundError, ConnectionRefusedError):
            # Still loading, or already gone: it serves nothing, so it has nothing to add.
            log.debug("worker %d has no statistics socket yet", index)
        except (OSError, TimeoutError, ValueError) as exc:
            log.warning("worker %d did not answer its statistics (%r); left out", index, exc)
        return None


def _stop_with_supervisor() -> None:
    """In a worker, between fork and exec: SIGTERM when the supervisor dies (its one thread
    forked us), so a killed supervisor leaves no worker on the ports; the worker drains."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
