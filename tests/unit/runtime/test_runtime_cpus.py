"""The CPUs the ONNX server reads (kubeinfer_onnx.cpus): the limit, the intra-op default, and
when `--allow-spinning auto` lets onnxruntime's threads spin."""

from __future__ import annotations

import pathlib

import pytest

from kubeinfer_onnx import cpus, model, repository, server
from tests.integration.runtime import runtime_models


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "50000 100000\n"}, 0.5),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "400000", "cpu/cpu.cfs_period_us": "100000"}, 4.0),
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
        ({}, None),
    ],
)
def test_cgroup_cpu_limit(
    tmp_path: pathlib.Path, files: dict[str, str], limit: float | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpus.cgroup_cpu_limit(tmp_path) == limit


def test_the_limit_comes_from_the_pod_spec_when_the_cgroup_has_no_quota(
    tmp_path: pathlib.Path,
) -> None:
    """A kubelet that pins whole cores may drop the CFS quota; the operator's downward-API
    variable still says how many cores are the container's. The quota wins when both exist."""
    env = {cpus.LIMIT_ENV: "2000"}
    assert cpus.Cpus.read(tmp_path, env).limit == 2.0
    assert cpus.Cpus.read(tmp_path, {cpus.LIMIT_ENV: "not a number"}).limit is None
    assert cpus.Cpus.read(tmp_path, {}).limit is None
    (tmp_path / "cpu.max").write_text("300000 100000\n")
    assert cpus.Cpus.read(tmp_path, env).limit == 3.0


@pytest.mark.parametrize(
    ("host", "usable"),
    [
        (cpus.Cpus(limit=1.5, allowed=8, online=8), 2),  # the limit, rounded up
        (cpus.Cpus(limit=0.25, allowed=8, online=8), 1),
        (cpus.Cpus(limit=None, allowed=3, online=8), 3),  # the affinity, never the host's 8
        (cpus.Cpus(limit=16.0, allowed=4, online=8), 4),  # a limit above the affinity
    ],
)
def test_intra_op_threads_default_to_the_cpus_the_process_can_use(
    host: cpus.Cpus, usable: int
) -> None:
    assert host.usable == usable


@pytest.mark.parametrize(
    ("usable", "workers", "threads"), [(2, 1, 2), (2, 2, 1), (8, 2, 4), (3, 2, 1), (1, 2, 1)]
)
def test_workers_share_the_cores_among_their_threads(
    usable: int, workers: int, threads: int
) -> None:
    """Each worker with every core's worth of threads oversubscribed them (two workers of two
    threads on two cores); at least one thread each."""
    host = cpus.Cpus(limit=float(usable), allowed=16, online=16)
    assert host.threads_per_worker(workers) == threads


PINNED = cpus.Cpus(limit=2.0, allowed=2, online=16)
BIG = 34 << 20  # the bench's heavy model


ON, IN_RUNS, OFF = cpus.Spinning.ON, cpus.Spinning.IN_RUNS, cpus.Spinning.OFF


@pytest.mark.parametrize(
    ("host", "workers", "threads", "spin", "why"),
    [
        # The static CPU manager's Guaranteed container: its own two cores.
        (PINNED, 1, 2, ON, "pinned to 2 of the host's 16 cores"),
        (PINNED, 1, 1, ON, "pinned"),
        # Two workers' threads would spin against each other on the same two cores.
        (PINNED, 2, 2, IN_RUNS, "2 worker(s) x 2 intra-op threads would spin on 2 owned cores"),
        # Every core of the host: a laptop, a CI runner, a pod under the none policy.
        (cpus.Cpus(limit=2.0, allowed=16, online=16), 1, 2, IN_RUNS, "all 16 of the host's"),
        (cpus.Cpus(limit=None, allowed=16, online=16), 1, 2, IN_RUNS, "no CPU limit"),
        # The static policy's shared pool: a subset, but not the container's whole-core limit.
        (cpus.Cpus(limit=None, allowed=6, online=16), 1, 2, IN_RUNS, "6 of 16 cores"),
        (cpus.Cpus(limit=2.0, allowed=6, online=16), 1, 2, IN_RUNS, "a CPU limit of 2"),
        # A fractional limit is never pinned, even where the pool happens to be that size.
        (cpus.Cpus(limit=1.5, allowed=2, online=16), 1, 1, IN_RUNS, "a CPU limit of 1.5"),
    ],
)
def test_big_models_spin_fully_only_on_cores_the_process_owns(
    host: cpus.Cpus, workers: int, threads: int, spin: cpus.Spinning, why: str
) -> None:
    """Elsewhere they spin within runs only: their threads sleep once a run returns."""
    decided, reason = cpus.spin_by_default(
        host, workers=workers, intra_op_threads=threads, model_bytes=BIG
    )
    assert decided is spin
    assert why in reason


@pytest.mark.parametrize("host", [PINNED, cpus.Cpus(limit=None, allowed=16, online=16)])
def test_small_models_do_not_spin_even_on_owned_cores(host: cpus.Cpus) -> None:
    """Their bound is the event loop, whose CPU spinning threads would take."""
    decided, reason = cpus.spin_by_default(
        host, workers=1, intra_op_threads=2, model_bytes=5 << 20
    )
    assert decided is OFF
    assert "models of 5.0 MiB: the event loop is the bound" in reason


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("auto", None),
        ("true", cpus.Spinning.ON),
        ("in-runs", cpus.Spinning.IN_RUNS),
        ("off", cpus.Spinning.OFF),
    ],
)
def test_allow_spinning_takes_auto_true_in_runs_or_false(
    text: str, value: cpus.Spinning | None
) -> None:
    args = server.parse_args(["--model-repository", "/models", "--allow-spinning", text])
    assert args.allow_spinning is value


def test_allow_spinning_defaults_to_auto() -> None:
    assert server.parse_args(["--model-repository", "/models"]).allow_spinning is None


def test_allow_spinning_rejects_other_words(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        server.parse_args(["--model-repository", "/models", "--allow-spinning", "sometimes"])
    assert "expected auto, true, in-runs or false, got 'sometimes'" in capsys.readouterr().err


SPIN, STOP = "session.intra_op.allow_spinning", "session.force_spinning_stop"


@pytest.mark.parametrize(
    ("spinning", "entries"),
    [
        (OFF, {SPIN: "0", STOP: ""}),
        (IN_RUNS, {SPIN: "", STOP: "1"}),
        (ON, {SPIN: "", STOP: ""}),
    ],
)
def test_each_mode_reaches_the_session(
    tmp_path: pathlib.Path, spinning: cpus.Spinning, entries: dict[str, str]
) -> None:
    """Read back from the loaded session ("" is unset: onnxruntime's default, spinning on)."""

    def entry(key: str) -> str:
        try:
            return str(session_options.get_session_config_entry(key))
        except RuntimeError:  # onnxruntime's answer for a key never set
            return ""

    runtime_models.build_mlp(tmp_path / "mlp" / "1" / "model.onnx", seed=1)
    options = model.ServerOptions(
        intra_op_threads=1, inter_op_threads=1, max_queue_size=8, spinning=spinning
    )
    served = model.ServedModel(
        entry=repository.scan(tmp_path)["mlp"], version=1, options=options
    )
    session_options = served.session.get_session_options()
    assert {key: entry(key) for key in entries} == entries
