"""runtimes/onnxruntime/requirements.py: what each image variant installs (never both wheels)."""

from __future__ import annotations

import importlib.util
import pathlib
import tomllib
from types import ModuleType

import pytest

RUNTIME = pathlib.Path(__file__).resolve().parents[3] / "runtimes" / "onnxruntime"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("requirements", RUNTIME / "requirements.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


requirements = load()
NAMES = {requirements._name(r) for r in requirements.requirements("gpu")}


@pytest.mark.parametrize(
    ("requirement", "name"),
    [
        ("onnxruntime>=1.17", "onnxruntime"),
        ("onnxruntime-gpu[cuda,cudnn]>=1.21", "onnxruntime-gpu"),
        ("uvloop>=0.19; sys_platform != 'win32'", "uvloop"),
        ("ONNXRuntime", "onnxruntime"),
        ("tritonclient[grpc]>=2.40", "tritonclient"),
    ],
)
def test_requirement_names(requirement: str, name: str) -> None:
    assert requirements._name(requirement) == name


def test_cpu_is_the_packages_own_dependencies() -> None:
    project = tomllib.loads((RUNTIME / "pyproject.toml").read_text())["project"]
    assert requirements.requirements("cpu") == project["dependencies"]


def test_gpu_swaps_the_wheel_and_adds_nvml() -> None:
    """onnxruntime and onnxruntime-gpu own the same module: the gpu list has only the latter."""
    assert "onnxruntime" not in NAMES
    assert {"onnxruntime-gpu", "nvidia-ml-py", "onnx", "numpy"} <= NAMES


def test_the_dockerfile_installs_the_list_for_its_device() -> None:
    dockerfile = (RUNTIME / "Dockerfile").read_text()
    assert "ARG DEVICE=cpu" in dockerfile  # the CPU image stays the default
    assert 'requirements.py --device "$DEVICE"' in dockerfile
    ignore = (RUNTIME / "Dockerfile.dockerignore").read_text()
    assert "!runtimes/onnxruntime/" in ignore  # requirements.py reaches the build context
