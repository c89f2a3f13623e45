"""A model Triton cannot load: its own error line, read from the termination message the kubelet
keeps, becomes ModelLoadFailed on PodsHealthy and Ready.

The fixtures are real: tritonserver 2.51 (the nvidia-pytriton wheel) started with the default
runtime's flags on a repository with one broken model, cut as the kubelet cuts a log under
FallbackToLogsOnError (the last 80 lines, at most 2048 bytes).
"""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from kubeinfer.core import runtime_failures, status

FIXTURES = pathlib.Path(__file__).with_name("fixtures")


def built(obs: status.Observed) -> dict[str, Any]:
    """The status as the reconciler writes it."""
    return status.to_dict(status.build_status(obs))


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.mark.parametrize(
    "name,expected",
    [
        (
            "triton_no_gpu.log",
            "failed to load 'mlp' version 1: Invalid argument: instance group mlp_0 of model mlp "
            "specifies invalid or unsupported gpu id 0.",
        ),
        (
            "triton_no_backend.log",
            "failed to load 'mlp' version 1: Invalid argument: unable to find backend library "
            "for backend 'pytorch'",
        ),
        (
            "triton_bad_field.log",
            "Poll failed for model directory 'mlp': failed to read text proto from "
            '/tmp/tx/repo/mlp/config.pbtxt (4:16: Message type "inference.ModelConfig" has no '
            'field named "max_batch_sizes".)',
        ),
        # With info logging on, Triton's start-up tables push the error line out of the tail:
        # only its last words remain (why the default runtime passes --log-info=false).
        ("triton_no_gpu_info_logging.log", "Internal - failed to load all models"),
    ],
)
def test_tritons_own_line_is_found(name: str, expected: str) -> None:
    found = runtime_failures.model_load_error(fixture(name))
    assert found is not None and found.startswith(expected)
    assert "\n" not in found


@pytest.mark.parametrize(
    "message",
    [
        "",
        "Traceback (most recent call last):\n  File x\nMemoryError",
        'E1202 06:25:38.815737 3791 server.cc:241] "CudaDriverHelper has not been initialized."',
        "kubeinfer storage-init: error: s3://b/k: NoSuchKey",
    ],
)
def test_other_failures_are_not_load_failures(message: str) -> None:
    assert runtime_failures.model_load_error(message) is None


def test_a_long_line_is_cut() -> None:
    line = "E1202 06:25:38.819075 3791 model_lifecycle.cc:642] \"failed to load 'm': " + (
        "x" * 5000
    )
    found = runtime_failures.model_load_error(line + '"')
    assert found is not None and len(found) == 1000 and found.endswith("...")


def _pod(container_status: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "resnet-predictor-7d9f-x2"},
        "status": {"containerStatuses": [{"name": "server", **container_status}]},
    }


def _observed(pod: dict[str, Any]) -> status.Observed:
    return status.Observed(
        generation=1,
        runtime_name="triton",
        runtime_problem=None,
        spec_problem=None,
        stopped=False,
        gpu_resource="nvidia.com/gpu",
        gpus_per_replica=1,
        url="http://x",
        selector="a=b",
        deployment={"status": {"replicas": 1, "readyReplicas": 0}},
        pods=[pod],
    )


LAST_EXIT = {"terminated": {"reason": "Error", "exitCode": 1, "message": ""}}


@pytest.mark.parametrize(
    "container_status",
    [
        # Backing off between restarts: the reason is in lastState.
        {
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
            "lastState": {
                "terminated": {**LAST_EXIT["terminated"], "message": fixture("triton_no_gpu.log")}
            },
        },
        # Just exited, before the back-off starts.
        {
            "state": {
                "terminated": {**LAST_EXIT["terminated"], "message": fixture("triton_no_gpu.log")}
            }
        },
    ],
)
def test_status_says_model_load_failed_with_tritons_words(
    container_status: dict[str, Any],
) -> None:
    st = built(_observed(_pod(container_status)))
    conditions = {c["type"]: c for c in st["conditions"]}
    for ctype in ("PodsHealthy", "Ready"):
        assert conditions[ctype]["status"] == "False"
        assert conditions[ctype]["reason"] == "ModelLoadFailed"
        assert (
            "container server: ModelLoadFailed: failed to load 'mlp' version 1: Invalid argument"
            in conditions[ctype]["message"]
        )


def test_a_crash_without_a_load_error_keeps_the_kubelets_reason() -> None:
    pod = _pod(
        {
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
            "lastState": {"terminated": {**LAST_EXIT["terminated"], "message": "segfault"}},
        }
    )
    (problem,) = status.pod_failures([pod])
    assert problem.reason == "CrashLoopBackOff"
