"""Shared pieces of the failure-mode suite: the runtime tier's server helpers, RSS readings,
and a figures recorder whose numbers bench/reliability/REPORT.md quotes.

The runtime helpers live in tests/integration/runtime (a rootless test folder whose modules
import each other by bare name); they are loaded from there, never copied.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import pathlib
import sys
from collections.abc import Iterator
from typing import Any

import pytest

RUNTIME_TESTS = pathlib.Path(__file__).resolve().parents[1] / "integration" / "runtime"
if str(RUNTIME_TESTS) not in sys.path:
    sys.path.insert(0, str(RUNTIME_TESTS))

import runtime_models  # noqa: E402  (found through the path entry above)

from tests import waiting  # noqa: E402


def _load_runtime_helpers() -> Any:
    # Under its own name: pytest may already hold that file as the bare module `conftest`.
    spec = importlib.util.spec_from_file_location(
        "kubeinfer_runtime_test_helpers", RUNTIME_TESTS / "conftest.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


runtime_helpers = _load_runtime_helpers()
Server = runtime_helpers.Server
start_server = runtime_helpers.start_server

__all__ = ["Server", "rss_mib", "runtime_models", "start_server", "wait_for"]


def rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


# Reliability checks poll through API server restarts.
wait_for = functools.partial(waiting.wait_for, tolerate_errors=True)


class Figures:
    """Measured figures, printed as they come (run with -s) and written as JSON when
    KUBEINFER_RELIABILITY_RESULTS names a file (bench/reliability/measure.sh sets it)."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, Any]] = {}

    def record(self, section: str, **values: Any) -> None:
        self.values.setdefault(section, {}).update(values)
        shown = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
        )
        print(f"\n[reliability] {section}: {shown}")


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    recorder = Figures()
    yield recorder
    target = os.environ.get("KUBEINFER_RELIABILITY_RESULTS")
    if target and recorder.values:
        path = pathlib.Path(target)
        old = json.loads(path.read_text()) if path.exists() else {}
        old.update(recorder.values)
        path.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def reliability_repo(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """mlp (cheap, serving overhead dominates), heavy (compute dominates), fixed (no batch)."""
    repo = tmp_path_factory.mktemp("reliability-repo")
    runtime_models.build_mlp(repo / "mlp" / "1" / "model.onnx", seed=1)
    runtime_models.build_heavy(repo / "heavy" / "1" / "model.onnx")
    runtime_models.build_fixed(repo / "fixed" / "1" / "model.onnx")
    runtime_models.build_addsub(repo / "addsub" / "1" / "model.onnx")
    return repo
