"""Fixtures for the chart tests: helm and kubeconform binaries, a helm runner, offline schemas,
and a way to keep the session's admin operator out of the RBAC tests."""

from __future__ import annotations

import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from kubeinfer_cluster import build
from tests.conftest import ClusterHandle
from tests.integration.helm import kubeconform_schemas
from tests.operator_process import REPO

CHART = REPO / "charts" / "kubeinfer"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))


class Helm:
    """`helm` with the test cluster's kubeconfig and a private config/cache (no repositories)."""

    def __init__(self, binary: pathlib.Path, env: dict[str, str], home: pathlib.Path) -> None:
        self.binary = binary
        self.env = dict(env)
        for var, sub in (
            ("HELM_CONFIG_HOME", "config"),
            ("HELM_CACHE_HOME", "cache"),
            ("HELM_DATA_HOME", "data"),
        ):
            self.env[var] = str(home / sub)

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        if args and args[0] == "template":
            # Offline, helm assumes Kubernetes 1.20, below the chart's kubeVersion: render for
            # the version the suite's cluster runs, as Argo CD or a live install would.
            version = build.ensure_tools(with_helm=True).kubernetes_version
            args = (*args, f"--kube-version={version}")
        proc = subprocess.run(
            [str(self.binary), *args], env=self.env, capture_output=True, text=True, timeout=300
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def template(self, *args: str) -> list[dict[str, Any]]:
        out = self("template", "kubeinfer", str(CHART), *args).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="session")
def helm_binary() -> pathlib.Path:
    helm = build.ensure_tools(with_helm=True).helm
    assert helm is not None
    return helm


@pytest.fixture(scope="session")
def helm_offline(helm_binary: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """helm for lint and template only: no cluster needed."""
    return Helm(helm_binary, {"PATH": "/usr/bin:/bin"}, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def helm(
    helm_binary: pathlib.Path, cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory
) -> Helm:
    return Helm(helm_binary, cluster.env, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def kubeconform() -> pathlib.Path:
    return build.build_kubeconform(build.cache_root())


@pytest.fixture(scope="session")
def schema_dir(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return kubeconform_schemas.write(
        cluster.tools.kubectl, cluster.env, tmp_path_factory.mktemp("kubeconform-schemas")
    )


@pytest.fixture
def no_admin_operator(request: pytest.FixtureRequest) -> Iterator[None]:
    """Stop the session's admin operator (tests/conftest.py `operator`) while a test runs its own
    operator with the chart's identity, so that only the least-privileged one does the work;
    restart it afterwards. A no-op when the InferenceService suite has not started it."""
    manager = request.session._fixturemanager  # no public "is it active" API
    defs = manager.getfixturedefs("operator", request.node) or ()
    active = [d.cached_result[0] for d in defs if d.cached_result and d.cached_result[0]]
    for proc in active:
        proc.stop()
    try:
        yield
    finally:
        for proc in active:
            proc.start()
