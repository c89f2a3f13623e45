"""Print the ONNX server's dependencies for one device, one per line, from pyproject.toml.

    python runtimes/onnxruntime/requirements.py [--device cpu|gpu] > requirements.txt

What the server image (runtimes/onnxruntime/Dockerfile, build argument DEVICE) and
tests/device/run.sh install. It exists because `onnxruntime` and `onnxruntime-gpu` are two
wheels of one `onnxruntime` module: installed together, whichever came last owns the files, and
removing either breaks the other. So `pip install kubeinfer-onnx[gpu]` is not enough; the gpu
list is the base dependencies without the CPU wheel, plus the `gpu` extra. Standard library
only: it runs before anything is installed.
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


def requirements(device: str, pyproject: pathlib.Path = PYPROJECT) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    base: list[str] = list(project["dependencies"])
    if device == "cpu":
        return base
    gpu: list[str] = list(project["optional-dependencies"]["gpu"])
    return [r for r in base if _name(r) != CPU_WHEEL] + gpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    args = parser.parse_args(argv)
    print("\n".join(requirements(args.device)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
