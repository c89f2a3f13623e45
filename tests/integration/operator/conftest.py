from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tests.conftest import ClusterHandle
from tests.operator_process import OperatorProcess, install, python_env


@pytest.fixture(scope="session")
def operator(
    cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    install(cluster.tools.kubectl, cluster.env)
    proc = OperatorProcess(python_env(cluster.env), pathlib.Path(tmp_path_factory.mktemp("op")))
    proc.start()
    yield proc
    proc.stop()
