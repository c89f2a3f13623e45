"""The ONNX-server image in runc, started as the operator's Deployment starts it: the
InferenceRuntime's command and args, the builder's env and model config, uid 1000, a read-only
root, /tmp the only writable place, the model repository bind-mounted read-only."""

from __future__ import annotations

import pathlib
import signal
from collections.abc import Iterator

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml

from kubeinfer.core import api, builders
from kubeinfer_cluster import containers
from tests.images import pods
from tests.images.pods import Images
from tests.integration.runtime import runtime_models
from tests.operator_process import REPO
from tests.waiting import wait_for

MODEL = "mlp"
TRITON_METRICS = (
    "nv_inference_request_success",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_pending_request_count",
)


def serving_container(http: int, grpc: int, metrics: int) -> dict[str, object]:
    """The server container of the quick-start InferenceService's Deployment, as the operator
    builds it from the default onnxruntime InferenceRuntime (ports made free on this host)."""
    runtime_doc = yaml.safe_load((REPO / "runtimes" / "defaults" / "onnxruntime.yaml").read_text())
    runtime_doc["spec"]["ports"] = {"http": http, "grpc": grpc, "metrics": metrics}
    runtime = api.parse_runtime(runtime_doc["spec"])
    quickstart = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    spec = api.parse_spec(quickstart["spec"])
    owner = builders.Owner(name="quickstart", namespace="default", uid="uid-1")
    deployment = builders.build_deployment(owner, spec, "onnxruntime", runtime)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == pods.UID
    container: dict[str, object] = pod["containers"][0]
    filename, content = builders.build_model_config(spec, runtime)
    container["model_config"] = (filename, content)
    return container


@pytest.fixture(scope="module")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    repo = tmp_path_factory.mktemp("images-models") / "repo"
    runtime_models.build_mlp(repo / MODEL / "1" / "model.onnx", seed=3)
    for path in (repo, *repo.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return repo


class Served:
    def __init__(self, container: containers.Container, http: int, grpc: int, metrics: int):
        self.container, self.http, self.grpc, self.metrics = container, http, grpc, metrics


@pytest.fixture(scope="module")
def served(imageset: Images, model_repo: pathlib.Path) -> Iterator[Served]:
    http, grpc, metrics = pods.free_port(), pods.free_port(), pods.free_port()
    spec = serving_container(http, grpc, metrics)
    filename, content = spec["model_config"]  # type: ignore[misc]
    # Where the Deployment's model-config subPath mount puts it. Written into the repository
    # itself: a mount point inside a read-only bind mount cannot be created.
    config_file = model_repo / MODEL / filename
    config_file.write_text(content)
    config_file.chmod(0o644)
    env = {e["name"]: e["value"] for e in spec["env"]}  # type: ignore[attr-defined]
    mounts = [containers.Mount(env["MODEL_REPOSITORY"], model_repo, readonly=True)]
    container = imageset.container(
        "onnx-server",
        "server",
        command=spec["command"],  # type: ignore[arg-type]
        args=spec["args"],  # type: ignore[arg-type]
        env=env,
        mounts=mounts,
    )
    container.run()
    try:
        wait_for(
            lambda: (
                pods.http_status(f"http://127.0.0.1:{http}/v2/health/ready") == 200
                or container.exit_code() is not None
            ),
            60,
            "the server container to be ready",
        )
        assert container.exit_code() is None, f"server exited:\n{container.output()[-4000:]}"
        yield Served(container, http, grpc, metrics)
    finally:
        container.stop(timeout=30)


def reference(model_repo: pathlib.Path, data: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model_repo / MODEL / "1" / "model.onnx"))
    out: np.ndarray = session.run(None, {"INPUT0": data})[0]
    return out


def test_image_runs_as_uid_1000_read_only_without_capabilities(served: Served) -> None:
    pid = served.container.pid()
    status = pods.process_status(pid)
    assert status["Uid"].split() == ["1000"] * 4
    assert status["Gid"].split() == ["1000"] * 4
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    assert "ro" in pods.root_mount_options(pid)


def test_the_image_leaves_out_what_the_server_never_imports(imageset: Images) -> None:
    """tritonclient installed without its dependencies (the server uses two generated message
    modules of it, which need protobuf alone) and grpcio only in the `grpcio` extra: 27 MB
    that no server in the image imports (grpcio, python-rapidjson, urllib3; tritonclient's
    ml_dtypes stays, onnx needs it). test_grpc_inference_numerics serves gRPC without them."""
    (site,) = imageset.rootfs("onnx-server").glob("opt/venv/lib/python3*/site-packages")
    assert (site / "tritonclient" / "grpc" / "service_pb2.py").is_file()
    assert (site / "google" / "protobuf").is_dir()
    left_in = [p.name for name in ("grpc", "rapidjson*", "urllib3") for p in site.glob(name)]
    assert not left_in, f"the image installs what the server never imports: {left_in}"


def test_http_inference_numerics(served: Served, model_repo: pathlib.Path) -> None:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{served.http}")
    assert client.is_server_ready() and client.is_model_ready(MODEL)
    data = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
    tensor = httpclient.InferInput("INPUT0", [4, 64], "FP32")
    tensor.set_data_from_numpy(data, binary_data=True)
    result = client.infer(MODEL, [tensor])
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), reference(model_repo, data), atol=1e-5)
    # The operator's batching config reached the server through the mounted file.
    assert client.get_model_config(MODEL)["max_batch_size"] == 32


def test_grpc_inference_numerics(served: Served, model_repo: pathlib.Path) -> None:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{served.grpc}")
    assert client.is_server_live() and client.is_model_ready(MODEL)
    data = np.random.default_rng(2).standard_normal((2, 64)).astype(np.float32)
    tensor = grpcclient.InferInput("INPUT0", [2, 64], "FP32")
    tensor.set_data_from_numpy(data)
    result = client.infer(MODEL, [tensor], request_id="img-1")
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), reference(model_repo, data), atol=1e-5)
    assert result.get_response().id == "img-1"


def test_metrics_carry_tritons_names(served: Served) -> None:
    # After the two inference tests above (module order); one more request makes it standalone.
    client = httpclient.InferenceServerClient(f"127.0.0.1:{served.http}")
    tensor = httpclient.InferInput("INPUT0", [1, 64], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 64), np.float32))
    client.infer(MODEL, [tensor])
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{served.metrics}/metrics", timeout=5) as r:
        text = r.read().decode()
    for name in TRITON_METRICS:
        assert f"\n{name}{{" in text or text.startswith(f"{name}{{"), f"{name} missing"
    success = [
        line
        for line in text.splitlines()
        if line.startswith("nv_inference_request_success{") and f'model="{MODEL}"' in line
    ]
    assert success and float(success[0].rsplit(" ", 1)[1]) >= 1


def test_sigterm_drains_and_exits_zero(imageset: Images, model_repo: pathlib.Path) -> None:
    """A second container of the same image (the shared rootfs), stopped the kubelet's way."""
    http, grpc, metrics = pods.free_port(), pods.free_port(), pods.free_port()
    spec = serving_container(http, grpc, metrics)
    env = {e["name"]: e["value"] for e in spec["env"]}  # type: ignore[attr-defined]
    container = imageset.container(
        "onnx-server",
        "server-term",
        command=spec["command"],  # type: ignore[arg-type]
        args=spec["args"],  # type: ignore[arg-type]
        env=env,
        mounts=[containers.Mount(env["MODEL_REPOSITORY"], model_repo)],
    )
    container.run()
    try:
        wait_for(
            lambda: (
                pods.http_status(f"http://127.0.0.1:{http}/v2/health/ready") == 200
                or container.exit_code() is not None
            ),
            60,
            "the second server container to be ready",
        )
        container.kill(signal.SIGTERM)
        code = container.wait(timeout=30)
    finally:
        container.stop(timeout=5)
    assert code == 0, container.output()[-3000:]
