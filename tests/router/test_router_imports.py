"""The router's import discipline: an installable package of its own with a pure core.

The same rules an import-linter contract would state, checked on the source: no module
imports the operator (`kubeinfer`) or the ONNX server (`kubeinfer_onnx`), and the pure core
does no I/O (no aiohttp, asyncio, kubernetes, prometheus_client, sockets or clocks).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import kubeinfer_router

PACKAGE = pathlib.Path(kubeinfer_router.__file__).parent
PURE = ["config", "exposition", "holding", "inventory", "picking", "splitting", "table"]
NO_IO = {"aiohttp", "asyncio", "kubernetes", "prometheus_client", "socket", "time", "urllib"}


def imports(module: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.stem)
def test_never_imports_the_operator_or_the_onnx_server(module: pathlib.Path) -> None:
    top = {name.split(".")[0] for name in imports(module)}
    assert not top & {"kubeinfer", "kubeinfer_onnx"}, module.name


@pytest.mark.parametrize("name", PURE)
def test_the_pure_core_does_no_io(name: str) -> None:
    top = {n.split(".")[0] for n in imports(PACKAGE / f"{name}.py")}
    assert not top & NO_IO, f"{name} imports {sorted(top & NO_IO)}"
    text = (PACKAGE / f"{name}.py").read_text()
    assert text.startswith('"""'), f"{name} has no module docstring"


def test_every_module_says_what_it_owns() -> None:
    for module in PACKAGE.glob("*.py"):
        tree = ast.parse(module.read_text())
        assert ast.get_docstring(tree), module.name
