"""`--allow-spinning auto` on a real server process: onnxruntime's threads spin on cores the
process owns (pinned to exactly its whole-core CPU limit, as the static CPU manager pins a
Guaranteed pod) and only within runs on cores it may share (kubeinfer_onnx.cpus). The
repository holds the bench's heavy model (8 x 1024x1024, 32 MiB), big enough for compute to be
the bound."""

from __future__ import annotations

import os
import pathlib
import re

import pytest
import runtime_models
import tritonclient.http as httpclient
from test_runtime_http import mlp_input
from test_runtime_workers import assert_stopped_cleanly, killed_at_exit

from conftest import start_server
from kubeinfer_onnx import cpus

DECISION = re.compile(r"onnxruntime threads spin: (on|in-runs|off) \(auto: ([^)]*)\)")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    repo = tmp_path_factory.mktemp("cpus-repo")
    runtime_models.build_mlp(repo / "mlp" / "1" / "model.onnx", seed=1)
    runtime_models.build_heavy(repo / "heavy" / "1" / "model.onnx", width=1024, layers=8)
    return repo


def decided(repo: pathlib.Path, log: pathlib.Path, preamble: str = "", *extra: str) -> list[str]:
    """Start a server, infer once, stop it; what it logged it decided (one line per worker)."""
    server = start_server(repo, log, "--log-level", "info", *extra, preamble=preamble)
    with killed_at_exit(server):
        client = httpclient.InferenceServerClient(server.http_url)
        data = mlp_input(1)
        tensor = httpclient.InferInput("INPUT0", list(data.shape), "FP32")
        tensor.set_data_from_numpy(data)
        assert client.infer("mlp", [tensor]).as_numpy("OUTPUT0").shape[0] == 1
        server.process.terminate()
        assert_stopped_cleanly(server, workers=False)
    return [f"{on}: {why}" for on, why in DECISION.findall(server.log())]


def test_cores_it_may_share_spin_within_runs(
    repo: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """This test's own process: every core it may use, no CPU limit of its own."""
    assert cpus.Cpus.read().owned is False
    [decision] = decided(repo, tmp_path / "server.log", "", "--workers", "1")
    assert decision.startswith("in-runs: "), decision


def test_cores_it_owns_spin(repo: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """Pinned to one core with a one-core limit, as the operator's downward-API variable
    says it: the threads spin. (On a host of one core pinning is no subset, and a cgroup quota
    of another size overrides the variable: within runs only there.)"""
    core = min(os.sched_getaffinity(0))
    preamble = (
        f"import os\nos.sched_setaffinity(0, {{{core}}})\n"
        f"os.environ[{cpus.LIMIT_ENV!r}] = '1000'"
    )
    [decision] = decided(repo, tmp_path / "server.log", preamble)
    if (os.cpu_count() or 1) > 1 and cpus.cgroup_cpu_limit() in (None, 1.0):
        assert decision == f"on: pinned to 1 of the host's {os.cpu_count()} cores, its CPU limit"
    else:
        assert decision.startswith("in-runs: "), decision
