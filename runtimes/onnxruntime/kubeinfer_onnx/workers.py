"""Several server processes on one set of ports: the supervisor that starts and stops them, and
the statistics they share.

One Python process answers every request on one event-loop thread, and past about a core of
protocol work (a small model at 32-64 concurrent calls, PROFILE.md) that thread is the bound,
not the model. With `--workers N` the command becomes a supervisor that starts N copies of the
server (workers, forked once the modules are imported), each with its own event loop, batcher
and onnxruntime session, all listening on the same ports with SO_REUSEPORT: the kernel spreads
new connections across them, and a worker gets none until it has loaded its models and bound.

What must look like one server is shared here:
- statistics: each worker answers its own records on a Unix socket in the abstract namespace
  (no file: nothing to clean up, no path-length limit, no writable folder needed), named after
  a token the supervisor drew; whichever worker is asked for /metrics or the v2 statistics
  sums every worker's records (`Peers.gather`), so Triton's counters and the queue gauges the
  autoscaler reads cover the whole pod, and perf_analyzer's statistics queries see every
  request wherever they land;
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
import secrets
import select
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn

from kubeinfer_onnx import metrics

log = logging.getLogger("kubeinfer_onnx.workers")

# A peer busy with a batch answers within milliseconds; one that takes longer than this is
# left out of the sum (and logged) rather than holding up the scrape or the statistics call.
ASK_TIMEOUT_S = 1.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h

# Up to this many bytes of models (on disk) a request's protocol work outweighs its share of a
# batch's compute, and one event loop is the bound; past it, one batcher's larger batches serve
# more than two half-size ones (PROFILE.md: the 5 MB mlp gained 25-45 % with two workers, the
# 34 MB heavy lost 10-30 % at 8-32 concurrent calls).
SMALL_MODELS_BYTES = 16 << 20

DEFAULT_COUNT_RULE = (
    "2 when models compute on CPU, the CPU limit is 2 or more and the models are small "
    f"(under {SMALL_MODELS_BYTES >> 20} MiB on disk, and two copies under half the memory "
    "limit); else 1 (an accelerator, a GPU or one emulated with --emulate-device-ms, "
    "is served from one process)"
)


def default_count(
    *, cpus: int, on_device: bool, model_bytes: int = 0, memory_limit: int | None = None
) -> int:
    """How many workers `--workers auto` starts.

    Two for small models on CPU: on 2 cores they served 25-45 % more than one process at
    32-64 concurrent calls with the bench's mlp and no less at one call, and were ready as soon
    (PROFILE.md). Not for bigger models, where compute is the bound: each worker batches only
    the calls on its own connections, and two half-size batches running side by side served
    10-30 % less than one full one (the bench's heavy, 8-32 calls). Not more than two: past the
    event loop's bound a third copy buys compute the intra-op threads already use. One on an
    accelerator, where each worker would hold its own context and model copy on the device
    (and an emulated one would gain a second device); on one core, where two loops only take
    turns; and when a second copy could crowd the memory limit (a loaded model takes about its
    file's size, and onnxruntime's working set comes on top: half the limit is left for it)."""
    if on_device or cpus < 2 or model_bytes > SMALL_MODELS_BYTES:
        return 1
    if memory_limit is not None and 2 * model_bytes * 2 > memory_limit:
        return 1
    return 2


def cgroup_memory_limit(root: pathlib.Path = pathlib.Path("/sys/fs/cgroup")) -> int | None:
    """The container's memory limit in bytes, from cgroup v2 `memory.max` or v1; None if none."""
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max" or not text.isdigit() or int(text) >= 1 << 60:  # v1's "unlimited"
            return None
        return int(text)
    return None


def supervise(count: int, run_worker: Callable[[Peers], int]) -> int:
    """Fork `count` workers, each running `run_worker` with its place among its siblings; pass
    SIGTERM/SIGINT on; return the exit status once all have exited (0 when all exited 0).

    Forked rather than started anew: the modules (onnxruntime, numpy, the protocol stacks) are
    already imported here, so a worker only loads its models, and a server of two workers is
    ready about as soon as one (a fresh interpreter per worker doubled the time to ready)."""
    token = secrets.token_hex(8)
    exits: dict[int, int | None] = {}  # pid -> exit code, None while running
    stopping = False

    def stop_all(signum: int = signal.SIGTERM) -> None:
        for pid, code in exits.items():
            if code is None:
                os.kill(pid, signum)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        stop_all(signum)

    supervisor = os.getpid()
    signals = {signal.SIGTERM, signal.SIGINT}
    previous = {s: signal.signal(s, on_signal) for s in signals}
    status = 0
    wakeup: _Wakeup | None = None
    try:
        for index in range(count):
            if stopping:
                break  # Told to stop while starting them: start no more.
            # Held back across the fork: a worker must not run the supervisor's handler, and
            # it lets them in only once its own stop them (server.serve).
            signal.pthread_sigmask(signal.SIG_BLOCK, signals)
            pid = os.fork()
            if pid == 0:
                _worker(Peers(token, index, count), run_worker, supervisor, previous)
            exits[pid] = None
            signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
        wakeup = _Wakeup()
        log.info(
            "supervising %d workers: pids %s; statistics sockets @kubeinfer-onnx-%s-<index>",
            count,
            list(exits),
            token,
        )
        while None in exits.values():
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                wakeup.wait()  # for a worker to exit, or a signal
                continue
            if pid not in exits:
                continue
            exits[pid] = code = os.waitstatus_to_exitcode(wait_status)
            status = max(status, code if code >= 0 else 128 - code)
            if not stopping:
                # Exited unasked (crashed, or exited 0 by mistake): the pod is at part
                # capacity. Stop the rest and exit non-zero, so the container restarts.
                log.error("worker pid %d exited unasked (%d); stopping the others", pid, code)
                stopping = True
                status = max(status, 1)
                stop_all()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
        stop_all(signal.SIGKILL)  # Only after an error here: leave no worker behind.
        if wakeup is not None:
            wakeup.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status


class _Wakeup:
    """Wakes the supervisor's main thread for any signal, whichever thread the kernel gave it to.

    The supervisor is not single-threaded: imported libraries start threads (numpy's OpenBLAS
    one per extra core, onnxruntime one), and a signal sent to the process goes to any thread
    that does not block it. One that landed on another thread never interrupted a blocking
    waitpid in the main thread, so the handler that stops the workers did not run until a
    worker exited, which none would: a SIGTERM as the workers started left the pod hanging
    until SIGKILL (seen once in 63 fresh-clone runs of `make test`). Here every signal also
    writes a byte to a pipe (Python's wakeup fd, written by its C-level handler in whichever
    thread runs it), the main thread waits on that pipe, and Python then runs the handlers in
    the main thread. SIGCHLD gets a handler too, so a worker's exit wakes the wait as well.
    Set up after the workers are forked: none inherits the pipe or the SIGCHLD handler."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._previous_chld = signal.signal(signal.SIGCHLD, _noop)

    def wait(self) -> None:
        """Until a signal arrives (or arrived since the last call: the pipe keeps it)."""
        select.select([self._read], [], [])
        try:
            while os.read(self._read, 512):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        signal.signal(signal.SIGCHLD, self._previous_chld)
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._read)
        os.close(self._write)


def _noop(signum: int, frame: FrameType | None) -> None:
    """A handler that only makes SIGCHLD reach the wakeup pipe (its default is to ignore)."""


def _worker(
    peers: Peers,
    run_worker: Callable[[Peers], int],
    supervisor: int,
    handlers: dict[signal.Signals, Any],
) -> NoReturn:
    """In a forked worker: the signal handling a lone server starts with, SIGTERM if the
    supervisor dies, then the server; never returns into the supervisor's code.

    SIGTERM and SIGINT stay blocked (as forked): `run_worker` unblocks them once it has
    installed its own handlers, and one that arrived in between waits for them. Unblocked
    here, a SIGTERM in the milliseconds before (a pod deleted as it starts) took the default
    action and the supervisor exited 143."""
    code = 1
    try:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        # SIGTERM when the supervisor dies (its one thread forked us), so a killed supervisor
        # leaves no worker on the ports: the worker drains and exits.
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() == supervisor:  # Else it died before prctl took effect.
            code = run_worker(peers)
    except BaseException:
        traceback.print_exc()
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class Peers:
    """This worker's place among its siblings: it answers its own statistics on its abstract
    Unix socket and gathers everyone's when asked."""

    def __init__(self, token: str, index: int, count: int) -> None:
        self.token = token
        self.index = index
        self.count = count
        self._server: asyncio.AbstractServer | None = None
        self._registry: metrics.Metrics | None = None
        self._all_up = False

    def address(self, index: int) -> str:
        """A worker's socket: abstract (leading NUL), unique to this supervisor's workers."""
        return f"\0kubeinfer-onnx-{self.token}-{index}"

    def all_up(self) -> bool:
        """Every worker has loaded its models (each opens its socket just before it binds).
        Once true it stays true: a worker that dies stops the whole server."""
        if not self._all_up:
            self._all_up = all(self._listening(index) for index in range(self.count))
        return self._all_up

    def _connect(self, index: int) -> socket.socket:
        """A connection to a sibling's socket, made at once: a listening Unix socket accepts
        without a round trip. ConnectionRefusedError when nothing listens there, BlockingIOError
        when its backlog is full (never a wait on the event loop)."""
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.setblocking(False)
        try:
            connection.connect(self.address(index))
        except OSError:
            connection.close()
            raise
        return connection

    def _listening(self, index: int) -> bool:
        try:
            self._connect(index).close()
        except OSError:
            return False
        return True

    async def start(self, registry: metrics.Metrics) -> None:
        """Answer this worker's records, and make `registry.collect` sum everyone's."""
        self._registry = registry
        # Bound here, not by asyncio: uvloop mishandles an abstract name's leading NUL.
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.address(self.index))
        listener.listen(16)
        self._server = await asyncio.start_unix_server(self._answer, sock=listener)
        registry.gather = self.gather

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._registry is not None
        try:
            if not await reader.readline():
                return  # A sibling's readiness check: it only wanted to see us listening.
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
                reader, writer = await asyncio.open_unix_connection(sock=self._connect(index))
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
