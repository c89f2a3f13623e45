"""Print the ONNX server's dependencies for one device, one per line, from pyproject.toml.

    python runtimes/onnxruntime/requirements.py [--device cpu|gpu] > requirements.txt
    python runtimes/onnxruntime/requirements.py [--device cpu|gpu] --no-deps > no-deps.txt
    pip install -r requirements.txt && pip install --no-deps -r no-deps.txt

What the server image (runtimes/onnxruntime/Dockerfile, build argument DEVICE) and
tests/device/run.sh install, in two lists: the first installed with its dependencies, the
second (`--no-deps`: pyproject's [tool.kubeinfer-onnx] install-without-dependencies, such as
tritonclient, of which the server uses two generated modules) without. It exists because
`onnxruntime` and `onnxruntime-gpu` are two wheels of one `onnxruntime` module: installed
together, whichever came last owns the files, and removing either breaks the other. So
`pip install kubeinfer-onnx[gpu]` is not enough; the gpu list is the base dependencies without
the CPU wheel, plus the `gpu` extra. Standard library only: it runs before anything is
installed.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys
import tomllib

PYPROJECT = pathlib.Path(__file__).with_name("pyproject.toml")
CPU_WHEEL = "onnxruntime"


def _name(requirement: str) -> str:
    """The distribution name of a requirement string (before extras, versions, markers)."""
    return re.split(r"[\s\[<>=!~;@]", requirement.strip(), maxsplit=1)[0].lower()


def requirements(
    device: str, pyproject: pathlib.Path = PYPROJECT, *, without_dependencies: bool = False
) -> list[str]:
    """The device's dependencies to install with their own (or, `without_dependencies`, the
    ones to install without: together they are every dependency)."""
    document = tomllib.loads(pyproject.read_text())
    project = document["project"]
    base: list[str] = list(project["dependencies"])
    if device == "gpu":
        gpu: list[str] = list(project["optional-dependencies"]["gpu"])
        base = [r for r in base if _name(r) != CPU_WHEEL] + gpu
    bare = set(document["tool"]["kubeinfer-onnx"]["install-without-dependencies"])
    return [r for r in base if (_name(r) in bare) == without_dependencies]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument(
        "--no-deps",
        action="store_true",
        help="the list to install with pip's --no-deps instead",
    )
    args = parser.parse_args(argv)
    print("\n".join(requirements(args.device, without_dependencies=args.no_deps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
