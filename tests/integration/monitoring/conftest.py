"""Fixtures for the monitoring tests: Prometheus and promtool built from the Go module proxy,
and the chart rendered offline by helm."""

from __future__ import annotations

import pathlib

import pytest

from kubeinfer_cluster import build
from tests.integration.helm.conftest import Helm
from tests.integration.monitoring import prometheus


@pytest.fixture(scope="session")
def prometheus_tools() -> build.Prometheus:
    try:
        return prometheus.tools()
    except build.BuildError as exc:
        pytest.fail(
            "Prometheus could not be built from the Go module proxy (the monitoring tests need "
            "the real server and promtool; run `make tools` to see the whole build, and check "
            f"that the proxy serves github.com/prometheus/prometheus {build.PROMETHEUS_VERSION}):"
            f"\n{exc}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def chart_helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """helm for `helm template` only: no cluster, no repositories."""
    binary = build.build_helm(build.cache_root())
    home: pathlib.Path = tmp_path_factory.mktemp("helm-home")
    return Helm(binary, {"PATH": "/usr/bin:/bin"}, home)
