"""runtimes/onnxruntime/requirements.py: what each image variant installs (never both wheels;
tritonclient without its dependencies), and the server's answer where grpcio is left out."""

from __future__ import annotations

import importlib.util
import pathlib
import tomllib
from types import ModuleType

import pytest

from kubeinfer_onnx import server

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


def test_cpu_is_the_packages_own_dependencies_in_two_lists() -> None:
    project = tomllib.loads((RUNTIME / "pyproject.toml").read_text())["project"]
    with_deps = requirements.requirements("cpu")
    bare = requirements.requirements("cpu", without_dependencies=True)
    assert sorted(with_deps + bare) == sorted(project["dependencies"])
    assert [requirements._name(r) for r in bare] == ["tritonclient"]
    assert not set(with_deps) & set(bare)


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_neither_list_brings_grpcio(device: str) -> None:
    """grpcio is only the `grpcio` extra's (the optional frontend); tritonclient's `[grpc]`
    extra would bring it back."""
    for bare in (False, True):
        listed = requirements.requirements(device, without_dependencies=bare)
        assert "grpcio" not in {requirements._name(r) for r in listed}
        assert not any("[" in r for r in listed if requirements._name(r) == "tritonclient")


def test_main_prints_each_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert requirements.main(["--device", "gpu", "--no-deps"]) == 0
    assert capsys.readouterr().out.split() == ["tritonclient>=2.40"]
    assert requirements.main(["--device", "gpu"]) == 0
    assert "tritonclient>=2.40" not in capsys.readouterr().out.split()


def test_gpu_swaps_the_wheel_and_adds_nvml() -> None:
    """onnxruntime and onnxruntime-gpu own the same module: the gpu list has only the latter."""
    assert "onnxruntime" not in NAMES
    assert {"onnxruntime-gpu", "nvidia-ml-py", "onnx", "numpy"} <= NAMES


def test_the_dockerfile_installs_the_list_for_its_device() -> None:
    dockerfile = (RUNTIME / "Dockerfile").read_text()
    assert "ARG DEVICE=cpu" in dockerfile  # the CPU image stays the default
    assert 'requirements.py --device "$DEVICE" > /tmp/requirements.txt' in dockerfile
    assert 'requirements.py --device "$DEVICE" --no-deps > /tmp/no-deps.txt' in dockerfile
    assert "pip install -q --no-deps -r /tmp/no-deps.txt -c constraints-dev.txt" in dockerfile
    ignore = (RUNTIME / "Dockerfile.dockerignore").read_text()
    assert "!runtimes/onnxruntime/" in ignore  # requirements.py reaches the build context


def test_the_device_venv_installs_both_lists_as_the_image_does() -> None:
    script = (RUNTIME.parents[1] / "tests" / "device" / "run.sh").read_text()
    assert "requirements.py --device gpu --no-deps" in script
    assert "--no-deps -r <(bare_requirements)" in script


def test_the_grpcio_frontend_without_grpcio_is_refused_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As in the image, which leaves grpcio out: a clear start-up error, not an ImportError
    once the models have loaded."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "grpc" else find_spec(name, *a),
    )
    with pytest.raises(SystemExit) as exited:
        server.parse_args(["--model-repository", "/m", "--grpc-frontend", "grpcio"])
    assert exited.value.code == 2
    assert "pip install 'kubeinfer-onnx[grpcio]'" in capsys.readouterr().err
    assert server.parse_args(["--model-repository", "/m"]).grpc_frontend == "fast"
