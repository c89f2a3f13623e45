"""tests/device/prove_gpu.py rehearsed on CPU: the script run.sh runs on a GPU machine, end to
end against a real server here (model built, server started, load, scrapes, the operator's
parsing and step), checking what holds without a GPU: CPU provider, no nv_gpu_* series at
all, and a veto that cannot act without a GPU signal."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[3]


def test_the_device_proof_rehearses_on_cpu(tmp_path: pathlib.Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "tests" / "device" / "prove_gpu.py"),
            "--rehearse",
            "--results",
            str(tmp_path),
            "--seconds",
            "3",
            "--concurrency",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr + (tmp_path / "server.log").read_text()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["passed"] and summary["provider"] == ["CPUExecutionProvider"]
    assert [c["name"] for c in summary["checks"]] == ["provider", "load", "gpu metrics", "veto"]
    assert summary["load"]["ok"] > 0 and summary["gpu_under_load"]["utilization_max"] is None
    assert summary["veto"]["with_veto"]["reason"] == "ScaleDown"
    assert "passed" in (tmp_path / "summary.txt").read_text()
