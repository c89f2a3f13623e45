"""Shared fixtures: the local cluster (session) and API clients for the integration and e2e tiers.

`KUBEINFER_KUBECONFIG` points the suite at a cluster of your own instead; otherwise one local
control plane is started per test session and dies with it.
"""

from __future__ import annotations

import os
import pathlib
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client, config

from kubeinfer_cluster import build, run
from tests.operator_process import OperatorProcess, install, python_env

# Every server these tests start is forked from this process (subprocess with a preexec_fn),
# and grpcio >= 1.80 restarts its poller in a child forked while a channel is open: the child
# then aborts on the epoll fd subprocess closed, before it can exec (grpc/grpc#43055; seen
# here once as "server exited with -6"). Without fork support the child has nothing to
# restart. Read when grpc initialises, so it is set before any test imports it.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


class ClusterHandle:
    def __init__(self, kubeconfig: pathlib.Path, local: run.Cluster | None) -> None:
        self.kubeconfig = kubeconfig
        self.local = local
        self.api = config.new_client_from_config(config_file=str(kubeconfig))
        self.tools = build.ensure_tools(with_helm=False)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.tools.kubectl.parent}:{env['PATH']}"
        return env


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterHandle]:
    own = os.environ.get("KUBEINFER_KUBECONFIG")
    if own:
        yield ClusterHandle(pathlib.Path(own), None)
        return
    try:
        local = run.up(f"pytest-{os.getpid()}", tie_to_parent=True)
    except (build.BuildError, run.ClusterError) as exc:
        pytest.fail(
            f"the local cluster could not be started (run `make tools` to see the "
            f"build, or set KUBEINFER_KUBECONFIG to use your own cluster):\n{exc}",
            pytrace=False,
        )
    try:
        yield ClusterHandle(local.kubeconfig, local)
    finally:
        local.down()


@pytest.fixture
def namespace(cluster: ClusterHandle) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    cluster.core.delete_namespace(name)


@pytest.fixture(scope="session")
def operator(
    cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The real operator as a process (CRDs and default runtimes installed first)."""
    install(cluster.tools.kubectl, cluster.env)
    proc = OperatorProcess(python_env(cluster.env), pathlib.Path(tmp_path_factory.mktemp("op")))
    proc.start()
    yield proc
    proc.stop()
