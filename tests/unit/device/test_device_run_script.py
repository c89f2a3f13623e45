"""tests/device/run.sh without a GPU: it stops at once with a clear message, installing and
writing nothing; and prove_gpu's veto check is decided by the operator's real pure step.

The script's no-GPU paths are driven by what the script itself reads (CUDA_VISIBLE_DEVICES,
nvidia-smi on PATH), so these tests give the same answer on a GPU machine.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

from kubeinfer.core.scaling import decide, signals
from tests.device import prove_gpu

REPO = pathlib.Path(__file__).resolve().parents[3]
SCRIPT = REPO / "tests" / "device" / "run.sh"
RESULTS = REPO / "tests" / "device" / "results"
BASH = shutil.which("bash") or "/bin/bash"


def listing(path: pathlib.Path) -> list[str]:
    return sorted(str(p) for p in path.rglob("*")) if path.exists() else []


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BASH, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"CUDA_VISIBLE_DEVICES": ""}, "CUDA_VISIBLE_DEVICES='' hides every GPU"),
        ({"CUDA_VISIBLE_DEVICES": "-1"}, "CUDA_VISIBLE_DEVICES='-1' hides every GPU"),
        ({"PATH": "EMPTY"}, "nvidia-smi is not on PATH"),
    ],
)
def test_no_gpu_fails_fast_and_touches_nothing(
    change: dict[str, str], says: str, tmp_path: pathlib.Path
) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(KUBEINFER_CACHE=str(cache), HOME=str(tmp_path / "home"))
    env.update({k: str(empty) if v == "EMPTY" else v for k, v in change.items()})
    before = listing(RESULTS)
    done = run(env)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "no NVIDIA GPU visible" in done.stderr and says in done.stderr
    assert "Nothing was installed or written" in done.stderr
    assert done.stdout == ""
    assert not cache.exists() and not (tmp_path / "home").exists()  # no venv was made
    assert listing(RESULTS) == before


def test_download_needs_a_folder() -> None:
    done = run(dict(os.environ), "--download")
    assert done.returncode == 2 and "usage" in done.stderr


def pod(gpu: float | None) -> signals.PodSignals:
    """One replica's signals under a light load: 2 requests in flight, 100/s."""
    return signals.PodSignals(
        pod="pod-0",
        pending_requests=0.5,
        queue_time_us=200.0,
        request_rate=100.0,
        executing=1.5,
        gpu_utilization=gpu,
    )


@pytest.mark.parametrize(
    ("gpu", "veto", "desired", "reason"),
    [
        (0.9, None, 2, decide.Reason.SCALE_DOWN),  # the control: the load fits in fewer
        (0.9, 0.5, 4, decide.Reason.GPU_VETO),  # what run.sh must see on a busy GPU
        (0.2, 0.5, 2, decide.Reason.SCALE_DOWN),  # an idle GPU does not hold replicas
        (None, 0.5, 2, decide.Reason.SCALE_DOWN),  # no GPU signal, no veto (the rehearsal)
    ],
)
def test_the_veto_check_uses_the_operators_step(
    gpu: float | None, veto: float | None, desired: int, reason: decide.Reason
) -> None:
    result = prove_gpu.decision([pod(gpu)] * 5, veto=veto, target=8.0)
    assert (result.desired, result.reason) == (desired, reason)
