"""`--workers 2`: two server processes on one set of ports that count, stop and fail as one
server (kubeinfer_onnx.workers)."""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import pathlib
import re
import signal
import socket
from collections.abc import Iterator

import pytest
import runtime_models
import tritonclient.grpc as grpcclient
from test_runtime_http import mlp_input

from conftest import Server, launch_server, start_server
from tests.waiting import wait_for

CONNECTIONS = 32
REQUESTS_PER_CONNECTION = 4


@pytest.fixture(scope="module")
def mlp_repo(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    repo = tmp_path_factory.mktemp("workers-repo")
    runtime_models.build_mlp(repo / "mlp" / "1" / "model.onnx", seed=1)
    return repo


@pytest.fixture
def workers(mlp_repo: pathlib.Path, tmp_path: pathlib.Path) -> Iterator[Server]:
    """Started and ready: ready means both workers have loaded and listen."""
    with killed_at_exit(start_server(mlp_repo, tmp_path / "server.log", "--workers", "2")) as s:
        yield s


@contextlib.contextmanager
def killed_at_exit(server: Server) -> Iterator[Server]:
    """The server, killed when the block ends if it is still running (a failed test's)."""
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def assert_stopped_cleanly(server: Server, *, workers: bool) -> None:
    """Exit status 0 within 30 s, no traceback, and (with workers) no worker left running."""
    assert server.process.wait(30) == 0, server.log()
    assert "Traceback" not in server.log(), server.log()
    if workers:
        pids, _ = supervised(server)
        assert not any(alive(pid) for pid in pids)


def supervised(server: Server) -> tuple[list[int], str]:
    """The worker pids and the statistics sockets' token, as the supervisor logs them."""
    found = re.search(
        r"pids \[(\d+), (\d+)\]; statistics sockets @kubeinfer-onnx-(\w+)-<index>", server.log()
    )
    assert found, server.log()
    return [int(found[1]), int(found[2])], found[3]


def worker_successes(token: str, index: int) -> int:
    """What one worker itself counted, asked on its statistics socket."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(f"\0kubeinfer-onnx-{token}-{index}")
        sock.sendall(b"stats\n")
        body = b"".join(iter(lambda: sock.recv(65536), b""))
    (record,) = json.loads(body)
    return int(record["success"][0])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) has stopped serving too.
    return pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def send_requests(server: Server) -> int:
    """CONNECTIONS connections, each opened anew (the kernel picks a worker per connection)."""
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "shape": [1, 64],
                    "datatype": "FP32",
                    "data": mlp_input(1, seed=3).ravel().tolist(),
                }
            ]
        }
    )
    sent = 0
    for _ in range(CONNECTIONS):
        connection = http.client.HTTPConnection(server.address, server.http_port, timeout=10)
        for _ in range(REQUESTS_PER_CONNECTION):
            connection.request("POST", "/v2/models/mlp/infer", body)
            response = connection.getresponse()
            assert response.status == 200, response.read()
            response.read()
            sent += 1
        connection.close()
    return sent


def test_two_workers_share_the_ports_and_report_as_one_server(workers: Server) -> None:
    pids, token = supervised(workers)
    sent = send_requests(workers)

    # Both served (32 connections all hashed to one worker: 2 in 2**32), and between them
    # they served every request.
    own = [worker_successes(token, index) for index in (0, 1)]
    assert all(count > 0 for count in own), own
    assert sum(own) == sent

    # Whichever worker a statistics call or a scrape reaches, it reports the whole server.
    for _ in range(8):
        status, body = workers.get("/v2/models/mlp/stats")
        assert status == 200
        (stats,) = json.loads(body)["model_stats"]
        assert stats["inference_stats"]["success"]["count"] == sent
        assert stats["inference_count"] == sent
        assert (
            sum(b["compute_infer"]["count"] for b in stats["batch_stats"])
            == (stats["execution_count"])
        )
        assert workers.metric("nv_inference_request_success", model="mlp") == sent
        assert (
            workers.metric("kubeinfer_inference_request_duration_seconds_count", model="mlp")
            == sent
        )
        client = grpcclient.InferenceServerClient(workers.grpc_url)
        grpc_stats = client.get_inference_statistics("mlp", as_json=True)["model_stats"][0]
        assert int(grpc_stats["inference_stats"]["success"]["count"]) == sent
        client.close()

    assert workers.stop() == 0, workers.log()
    assert not any(alive(pid) for pid in pids)


def test_a_worker_that_dies_stops_the_server(workers: Server) -> None:
    pids, _ = supervised(workers)
    os.kill(pids[0], signal.SIGKILL)
    assert workers.process.wait(30) != 0
    assert not alive(pids[1]), "the surviving worker was left running"
    assert "exited unasked" in workers.log()


def test_workers_stop_when_their_supervisor_is_gone(workers: Server) -> None:
    pids, _ = supervised(workers)
    workers.process.kill()
    workers.process.wait()
    wait_for(lambda: not any(alive(pid) for pid in pids), 30, "the orphaned workers to stop")
    assert workers.log().count("draining: not ready") == 2


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_sigterm_while_starting_stops_the_server_cleanly(
    mlp_repo: pathlib.Path, tmp_path: pathlib.Path, workers: str
) -> None:
    """A pod deleted as it starts: SIGTERM while the workers (or a lone server) load their
    models stops them as it would a ready server, exit status 0 (it was 143 when it reached a
    worker before its handler was installed: the default action killed it)."""
    with killed_at_exit(
        launch_server(mlp_repo, tmp_path / "server.log", "--workers", workers)
    ) as server:
        # As soon as the process is past its imports: the supervisor has forked the workers
        # (their models still loading), or the lone server has started its event loop.
        started = "supervising 2 workers" if workers == "2" else "loading mlp from"
        wait_for(
            lambda: started in server.log() or server.process.poll() is not None,
            60,
            "the server to start",
            every=0.005,
        )
        server.process.send_signal(signal.SIGTERM)
        assert_stopped_cleanly(server, workers=workers == "2")


# tgkill(2): a signal to one thread of another process (Python only signals its own threads).
_SYS_TGKILL = {"x86_64": 234, "aarch64": 131}
# A thread in the supervisor besides its main one, waiting forever with no signal blocked.
_ANOTHER_THREAD = (
    "import threading\nthreading.Thread(target=threading.Event().wait, daemon=True).start()"
)


@pytest.mark.parametrize("when", ["starting", "ready"])
def test_a_sigterm_that_lands_on_another_thread_still_stops_the_workers(
    mlp_repo: pathlib.Path, tmp_path: pathlib.Path, when: str
) -> None:
    """The kernel hands a process's SIGTERM to any of its threads that does not block it, and
    the supervisor can have threads besides its main one (libraries start them at import:
    numpy's OpenBLAS, onnxruntime, on some machines and not others). One that landed there
    never woke the main thread from waitpid, so the workers were never told to stop and the
    pod hung until SIGKILL (seen once in 63 fresh-clone runs). The test starts such a thread
    itself, so it does not depend on which libraries do, and sends SIGTERM to it."""
    syscall = _SYS_TGKILL.get(os.uname().machine)
    assert syscall is not None, f"no tgkill syscall number for {os.uname().machine}: add it"
    launch = start_server if when == "ready" else launch_server
    launched = launch(mlp_repo, tmp_path / "server.log", "--workers", "2", preamble=_ANOTHER_THREAD)
    with killed_at_exit(launched) as server:
        supervisor = server.process.pid
        wait_for(
            lambda: "supervising 2 workers" in server.log() or server.process.poll() is not None,
            60,
            "the supervisor to fork its workers",
            every=0.005,
        )
        others = [int(t) for t in os.listdir(f"/proc/{supervisor}/task") if int(t) != supervisor]
        assert others, "the preamble's thread is not running in the supervisor"
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.syscall(syscall, supervisor, others[0], int(signal.SIGTERM)) == 0, os.strerror(
            ctypes.get_errno()
        )
        assert_stopped_cleanly(server, workers=True)


@pytest.mark.parametrize("flag", ["--http-port", "--grpc-port", "--metrics-port"])
def test_workers_need_fixed_ports(
    mlp_repo: pathlib.Path, tmp_path: pathlib.Path, flag: str
) -> None:
    with pytest.raises(RuntimeError, match=f"needs fixed ports: {flag} is 0"):
        start_server(mlp_repo, tmp_path / "server.log", "--workers", "2", flag, "0")
