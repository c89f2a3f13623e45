"""Restart kube-apiserver, and separately etcd, while the operator reconciles: it reconnects,
resumes its watches and converges; replicas it already set are held, and an InferenceService
created after the restart becomes Ready."""

from __future__ import annotations

import time

import pytest

from tests.conftest import ClusterHandle
from tests.operator_process import OperatorProcess
from tests.reliability import kube
from tests.reliability.conftest import Figures


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_control_plane_restart_during_reconcile(
    cluster: ClusterHandle,
    operator: OperatorProcess,
    namespace: str,
    figures: Figures,
    component: str,
) -> None:
    if cluster.local is None:
        pytest.fail(
            "this test restarts control-plane processes, so it needs the local cluster; "
            "unset KUBEINFER_KUBECONFIG to run it",
            pytrace=False,
        )
    steady = kube.isvc("steady", gpu={"count": 0}, scaling={"minReplicas": 2, "maxReplicas": 4})
    kube.create(cluster, namespace, steady)
    kube.wait_ready(cluster, namespace, "steady")
    # Reconciliation in flight when the component goes away.
    for i in range(5):
        kube.create(cluster, namespace, kube.isvc(f"during-{i}", gpu={"count": 0}))
    restarted = time.monotonic()
    with kube.operator_restored(operator):
        cluster.local.restart_component(component)
        api_back_s = kube.wait_api(cluster)
        kube.create(cluster, namespace, kube.isvc("after", gpu={"count": 0}))
        for name in ("steady", "after", *(f"during-{i}" for i in range(5))):
            kube.wait_ready(cluster, namespace, name, timeout=120)
        converged_s = time.monotonic() - restarted
        assert operator.proc is not None and operator.proc.poll() is None, (
            f"the operator exited during the {component} restart:\n{operator.log()[-3000:]}"
        )
    deployment = cluster.apps.read_namespaced_deployment("steady-predictor", namespace)
    assert deployment.spec.replicas == 2  # held through the outage
    found = kube.children(cluster, namespace)
    assert all(len(kinds["Deployment"]) == 1 for kinds in found.values()), found
    figures.record(
        f"control_plane.{component}",
        api_ready_after_restart_s=round(api_back_s, 1),
        all_ready_after_restart_s=round(converged_s, 1),
        operator_restarts_needed=0,
    )
