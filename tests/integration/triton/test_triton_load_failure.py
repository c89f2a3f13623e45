"""A model real Triton cannot load stops the pod's server (--exit-on-error), and the log tail the
kubelet keeps as its termination message carries Triton's own error line into status as
ModelLoadFailed - not only CrashLoopBackOff.

The model is an example exactly as the operator generates it, with no stand-in swap: the
pytriton wheel has no pytorch backend, like a runtime image built without one.
"""

from __future__ import annotations

import pathlib

import pytest

from kubeinfer.core import status
from tests import triton_server
from tests.integration.triton import pod_repository, standin

EXAMPLE = "triton-pytorch.yaml"
LOG_INFO_OFF = "--log-info=false"


def _run_until_exit(
    found: triton_server.Installation,
    pod: pod_repository.PodRepository,
    args: list[str],
    log: pathlib.Path,
) -> tuple[int, str]:
    process = triton_server.TritonProcess(found, pod.root, args, log)
    try:
        code = process.wait_exit(timeout=120)
    finally:
        process.stop()
    return code, standin.kubelet_termination_message(process.log())


@pytest.fixture
def pod(tmp_path: pathlib.Path) -> pod_repository.PodRepository:
    doc = dict(pod_repository.triton_examples())[EXAMPLE]
    return pod_repository.build(doc, tmp_path)


def test_load_failure_exits_and_status_quotes_triton(
    triton_install: triton_server.Installation,
    pod: pod_repository.PodRepository,
    tmp_path: pathlib.Path,
) -> None:
    args = pod.server["args"]
    assert "--exit-on-error=true" in args and LOG_INFO_OFF in args
    assert pod.server["terminationMessagePolicy"] == "FallbackToLogsOnError"
    code, message = _run_until_exit(triton_install, pod, args, tmp_path / "triton.log")
    assert code != 0

    crash_looping = {
        "metadata": {"name": "ranker-predictor-5f7c9-x2"},
        "status": {
            "containerStatuses": [
                {
                    "name": pod.server["name"],
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    "lastState": {
                        "terminated": {"reason": "Error", "exitCode": code, "message": message}
                    },
                }
            ]
        },
    }
    observed = status.Observed(
        generation=1,
        runtime_name="triton",
        runtime_problem=None,
        spec_problem=None,
        stopped=False,
        gpu_resource="nvidia.com/gpu",
        gpus_per_replica=1,
        url="http://ranker",
        selector="a=b",
        deployment={"status": {"replicas": 1, "readyReplicas": 0}},
        pods=[crash_looping],
    )
    built = status.to_dict(status.build_status(observed))
    ready = next(c for c in built["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ModelLoadFailed"
    assert (
        "container server: ModelLoadFailed: failed to load 'ranker' version 1: Invalid argument: "
        "unable to find backend library for backend 'pytorch'" in ready["message"]
    ), ready["message"]


def test_with_info_logging_the_error_line_leaves_the_tail(
    triton_install: triton_server.Installation,
    pod: pod_repository.PodRepository,
    tmp_path: pathlib.Path,
) -> None:
    """Why the runtime turns info logging off: Triton's start-up tables fill the kubelet's
    80-line / 2 KiB tail, and the line naming the model is gone from it."""
    args = [a for a in pod.server["args"] if a != LOG_INFO_OFF]
    code, message = _run_until_exit(triton_install, pod, args, tmp_path / "triton.log")
    assert code != 0
    assert "failed to load 'ranker'" in (tmp_path / "triton.log").read_text()
    assert "failed to load 'ranker'" not in message
