"""Builders: the manifests an InferenceService turns into (pure, no cluster)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from kubeinfer.core import api, builders, config, crdgen

OWNER = builders.Owner(name="m", namespace="ns", uid="u-1")
ONNX_RT = api.InferenceRuntimeSpec(
    image="onnx:1",
    formats=[api.RuntimeFormat(name=api.ModelFormat.ONNX, priority=2)],
    batching_config=api.BatchingConfigKind.KUBEINFER_JSON,
)
TRITON = api.InferenceRuntimeSpec(
    image="triton:1",
    formats=[
        api.RuntimeFormat(name=api.ModelFormat.ONNX, priority=1),
        api.RuntimeFormat(name=api.ModelFormat.TENSORRT, priority=2),
    ],
)
CPU_ONLY = api.InferenceRuntimeSpec(
    image="cpu:1",
    supports_gpu=False,
    formats=[api.RuntimeFormat(name=api.ModelFormat.ONNX, priority=9)],
)


def spec(**kw: Any) -> api.InferenceServiceSpec:
    raw: dict[str, Any] = {
        "model": {"name": "mlp", "format": "onnx", "storageUri": "https://h/m.onnx"}
    }
    raw.update(kw)
    return api.parse_spec(raw)


@pytest.mark.parametrize(
    "kw,runtimes,expected",
    [
        ({}, {"onnxruntime": ONNX_RT, "triton": TRITON}, "onnxruntime"),
        ({"runtime": "triton"}, {"onnxruntime": ONNX_RT, "triton": TRITON}, "triton"),
        ({"gpu": {"count": 1}}, {"cpu": CPU_ONLY, "triton": TRITON}, "triton"),
        ({}, {"cpu": CPU_ONLY, "triton": TRITON}, "cpu"),
    ],
)
def test_choose_runtime(
    kw: dict[str, Any], runtimes: dict[str, api.InferenceRuntimeSpec], expected: str
) -> None:
    assert builders.choose_runtime(spec(**kw), runtimes)[0] == expected


@pytest.mark.parametrize(
    "kw,runtimes,reason",
    [
        ({"runtime": "nope"}, {"triton": TRITON}, "RuntimeNotFound"),
        ({"runtime": "cpu", "gpu": {"count": 1}}, {"cpu": CPU_ONLY}, "GPUNotSupported"),
        (
            {
                "model": {
                    "name": "m",
                    "format": "pytorch",
                    "storageUri": "s3://bucket/k",
                    "inputs": [{"name": "x", "datatype": "FP32", "dims": [4]}],
                    "outputs": [{"name": "y", "datatype": "FP32", "dims": [2]}],
                }
            },
            {"onnxruntime": ONNX_RT},
            "NoRuntimeForFormat",
        ),
    ],
)
def test_runtime_resolution_errors(
    kw: dict[str, Any], runtimes: dict[str, api.InferenceRuntimeSpec], reason: str
) -> None:
    with pytest.raises(builders.RuntimeResolutionError) as err:
        builders.choose_runtime(spec(**kw), runtimes)
    assert err.value.reason == reason


def test_deployment_never_sets_replicas_and_is_restricted() -> None:
    dep = builders.build_deployment(OWNER, spec(gpu={"count": 2}), "triton", TRITON)
    assert "replicas" not in dep["spec"]
    pod = dep["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    assert server["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert dep["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert pod["initContainers"][0]["args"][:3] == [
        "storage-init",
        "https://h/m.onnx",
        "/mnt/models",
    ]


def test_pvc_mounts_read_only_without_copy() -> None:
    dep = builders.build_deployment(
        OWNER,
        spec(model={"name": "mlp", "format": "onnx", "storageUri": "pvc://claim/a/b"}),
        "onnxruntime",
        ONNX_RT,
    )
    pod = dep["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "model-pvc")
    assert mount == {
        "name": "model-pvc",
        "mountPath": "/mnt/models/mlp/1",
        "readOnly": True,
        "subPath": "a/b",
    }


def test_pdb_only_with_two_replicas_promised() -> None:
    assert builders.build_pdb(OWNER, spec(), "t") is None
    pdb = builders.build_pdb(OWNER, spec(scaling={"minReplicas": 2, "maxReplicas": 3}), "t")
    assert pdb is not None and pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize(
    "kw,current,expected",
    [
        ({}, 7, 4),  # clamped to maxReplicas 4
        ({"scaling": {"minReplicas": 2, "maxReplicas": 4}}, 1, 2),
        ({"stopped": True}, 3, 0),
        ({"scaling": {"mode": "Off"}, "replicas": 5}, 1, 5),
    ],
)
def test_clamp_replicas(kw: dict[str, Any], current: int, expected: int) -> None:
    assert builders.clamp_replicas(spec(**kw), current) == expected


def test_pod_metadata_cannot_override_selector_labels() -> None:
    dep = builders.build_deployment(
        OWNER,
        spec(
            podMetadata={
                "labels": {"kubeinfer.io/inferenceservice": "x", "team": "a"},
                "annotations": {"sidecar.istio.io/inject": "false"},
            }
        ),
        "onnxruntime",
        ONNX_RT,
    )
    meta = dep["spec"]["template"]["metadata"]
    assert meta["labels"]["kubeinfer.io/inferenceservice"] == "m"
    assert meta["labels"]["team"] == "a"
    assert meta["annotations"]["sidecar.istio.io/inject"] == "false"


def test_cross_field_validation_in_python() -> None:
    with pytest.raises(ValueError, match="minReplicas"):
        spec(scaling={"minReplicas": 5, "maxReplicas": 2})
    with pytest.raises(ValueError, match="extra"):
        spec(unknownField=1)


def test_the_operator_config_reaches_serving_pods() -> None:
    """The init image and pull secrets come from the operator's configuration (chart values)."""
    cfg = config.OperatorConfig(
        init_image="registry.local/ml/operator:9", image_pull_secrets=("regcred",)
    )
    dep = builders.build_deployment(OWNER, spec(), "onnxruntime", ONNX_RT, cfg)
    pod = dep["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["image"] == "registry.local/ml/operator:9"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    # The storage initializer's one-line error becomes its termination message (status).
    assert pod["initContainers"][0]["terminationMessagePolicy"] == "FallbackToLogsOnError"


@pytest.mark.parametrize(
    ("gpu", "device"),
    [
        ({}, "cpu"),
        ({"count": 1}, "gpu"),
        ({"count": 4, "resourceName": "nvidia.com/mig-1g.10gb"}, "gpu"),
    ],
)
def test_the_server_is_told_its_device_by_gpu_count(gpu: dict[str, Any], device: str) -> None:
    """gpu.count > 0: the ONNX server asks for CUDA/TensorRT and reports a CPU fallback;
    none: it stays on CPU, even in the gpu image on a GPU node."""
    dep = builders.build_deployment(OWNER, spec(gpu=gpu), "onnxruntime", ONNX_RT)
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "KUBEINFER_DEVICE", "value": device} in env


WHOLE = {"cpu": "2", "memory": "1Gi"}


@pytest.mark.parametrize(
    ("resources", "init"),
    [
        # Limits alone (requests default to them) or equal requests, in any spelling: the
        # initializer gets the server's figures, so the whole pod is Guaranteed.
        ({"limits": WHOLE}, {"requests": WHOLE, "limits": WHOLE}),
        (
            {"requests": {"cpu": "2000m", "memory": "1024Mi"}, "limits": WHOLE},
            {"requests": WHOLE, "limits": WHOLE},
        ),
        # Burstable servers keep the initializer's own small request.
        ({"limits": {"cpu": "2"}}, None),
        ({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": WHOLE}, None),
        ({}, None),
    ],
)
def test_a_guaranteed_server_makes_a_guaranteed_pod(
    resources: dict[str, Any], init: dict[str, Any] | None
) -> None:
    """Kubernetes counts init containers in a pod's QoS class: a Burstable initializer would
    keep the static CPU manager from pinning the server's whole CPUs."""
    dep = builders.build_deployment(OWNER, spec(resources=resources), "onnxruntime", ONNX_RT)
    [initializer] = dep["spec"]["template"]["spec"]["initContainers"]
    default = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}}
    assert initializer["resources"] == (init or default)


@pytest.mark.parametrize(("limits", "passed"), [({"cpu": "2"}, True), ({}, False)])
def test_the_server_is_told_its_cpu_limit_only_when_it_has_one(
    limits: dict[str, str], passed: bool
) -> None:
    """Without a limit the downward API would give the node's allocatable CPU, which the
    server would take for its own."""
    dep = builders.build_deployment(
        OWNER, spec(resources={"limits": limits}), "onnxruntime", ONNX_RT
    )
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    ref = {"containerName": "server", "resource": "limits.cpu", "divisor": "1m"}
    expected = {"name": builders.CPU_LIMIT_ENV, "valueFrom": {"resourceFieldRef": ref}}
    assert (expected in env) is passed


@pytest.mark.parametrize(
    ("gpu_image", "gpu", "image"),
    [
        ("onnx:1-gpu", {"count": 1}, "onnx:1-gpu"),  # the spec's gpu.count picks the variant
        ("onnx:1-gpu", {}, "onnx:1"),  # CPU services keep the small image
        (None, {"count": 1}, "onnx:1"),  # no variant set: GPUInUse will say it runs on CPU
    ],
)
def test_gpu_services_get_the_runtimes_gpu_image(
    gpu_image: str | None, gpu: dict[str, Any], image: str
) -> None:
    runtime = ONNX_RT.model_copy(update={"gpu_image": gpu_image})
    dep = builders.build_deployment(OWNER, spec(gpu=gpu), "onnxruntime", runtime)
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == image


def _catalogue() -> dict[str, api.InferenceRuntimeSpec]:
    """The default runtimes as shipped (runtimes/defaults), parsed as the operator parses them."""
    docs = [yaml.safe_load(p.read_text()) for p in sorted(crdgen.RUNTIME_DIR.glob("*.yaml"))]
    return {d["metadata"]["name"]: api.InferenceRuntimeSpec.model_validate(d["spec"]) for d in docs}


def _expand(arg: str, env: dict[str, str]) -> str:
    # Kubernetes' $(VAR) expansion in container args.
    return re.sub(r"\$\(([A-Z_]+)\)", lambda m: env.get(m.group(1), m.group(0)), arg)


@pytest.mark.parametrize("runtime_name", ["onnxruntime", "triton"])
@pytest.mark.parametrize("mutual", [False, True])
def test_grpc_tls_mounts_the_secret_and_gives_the_runtime_its_flags(
    runtime_name: str, mutual: bool
) -> None:
    runtime = _catalogue()[runtime_name]
    tls = {"secretName": "serving-tls", "mutual": mutual}
    dep = builders.build_deployment(OWNER, spec(grpcTls=tls), runtime_name, runtime)
    pod = dep["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == builders.GRPC_TLS_VOLUME]
    # Group-readable for the server (fsGroup), nobody else.
    assert volume["secret"] == {"secretName": "serving-tls", "defaultMode": 0o440, "optional": True}
    assert pod["securityContext"]["fsGroup"] == runtime.run_as_user
    server = pod["containers"][0]
    (mount,) = [m for m in server["volumeMounts"] if m["name"] == builders.GRPC_TLS_VOLUME]
    assert mount == {"name": "grpc-tls", "mountPath": builders.GRPC_TLS_DIR, "readOnly": True}
    env = {e["name"]: e["value"] for e in server["env"] if "value" in e}
    # What stops the container without its Secret (the kubelet names the Secret or the key):
    # references to the public keys it must hold, never to the private key.
    refs = [e["valueFrom"]["secretKeyRef"] for e in server["env"] if "valueFrom" in e]
    assert refs == [{"name": "serving-tls", "key": k} for k in ["tls.crt", "ca.crt"][: 1 + mutual]]
    args = [_expand(a, env) for a in server["args"]]
    expected = [
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={builders.GRPC_TLS_DIR}/tls.crt",
        f"--grpc-server-key={builders.GRPC_TLS_DIR}/tls.key",
    ]
    if mutual:
        expected += [
            "--grpc-use-ssl-mutual=true",
            f"--grpc-root-cert={builders.GRPC_TLS_DIR}/ca.crt",
        ]
    # The runtime's own args first, untouched; every $(VAR) expanded.
    assert args[: len(runtime.args)] == [_expand(a, env) for a in runtime.args]
    assert args[len(runtime.args) :] == expected
    assert not any("$(" in a for a in args)
    # The probes stay on plaintext HTTP.
    assert server["readinessProbe"]["httpGet"]["port"] == "http"


def test_without_grpc_tls_no_secret_and_no_flags() -> None:
    runtime = _catalogue()["onnxruntime"]
    dep = builders.build_deployment(OWNER, spec(), "onnxruntime", runtime)
    pod = dep["spec"]["template"]["spec"]
    assert builders.GRPC_TLS_VOLUME not in {v["name"] for v in pod["volumes"]}
    assert not any("ssl" in a for a in pod["containers"][0]["args"])
    assert not any(e["name"].startswith("GRPC_TLS") for e in pod["containers"][0]["env"])


def test_a_runtimes_own_tls_flags_are_used() -> None:
    runtime = ONNX_RT.model_copy(
        update={
            "grpc_tls": api.RuntimeGrpcTLS(
                args=["--tls-cert=$(GRPC_TLS_CERT)", "--tls-key=$(GRPC_TLS_KEY)"],
                mutual_args=["--client-ca=$(GRPC_TLS_CA)"],
            )
        }
    )
    tls = {"secretName": "s", "mutual": True}
    server = builders.build_deployment(OWNER, spec(grpcTls=tls), "custom", runtime)["spec"][
        "template"
    ]["spec"]["containers"][0]
    assert server["args"] == [
        "--tls-cert=$(GRPC_TLS_CERT)",
        "--tls-key=$(GRPC_TLS_KEY)",
        "--client-ca=$(GRPC_TLS_CA)",
    ]


def test_grpc_tls_chooses_a_runtime_that_can_serve_it() -> None:
    able = ONNX_RT.model_copy(update={"grpc_tls": api.RuntimeGrpcTLS()})
    tls = spec(grpcTls={"secretName": "s"})
    # CPU_ONLY outranks it on priority but cannot serve TLS.
    assert builders.choose_runtime(tls, {"cpu": CPU_ONLY, "able": able})[0] == "able"
    assert builders.choose_runtime(spec(), {"cpu": CPU_ONLY, "able": able})[0] == "cpu"
    with pytest.raises(builders.RuntimeResolutionError) as err:
        builders.choose_runtime(tls.model_copy(update={"runtime": "cpu"}), {"cpu": CPU_ONLY})
    assert err.value.reason == "GrpcTLSNotSupported"
    assert "grpcTls" in str(err.value)
    with pytest.raises(builders.RuntimeResolutionError) as err:
        builders.choose_runtime(tls, {"cpu": CPU_ONLY})
    assert err.value.reason == "NoRuntimeForFormat"
    assert "with gRPC TLS" in str(err.value)


@pytest.mark.parametrize(
    "tls", [{"secretName": "Not_A_Name"}, {"secretName": ""}, {"mutual": True}]
)
def test_a_bad_grpc_tls_names_the_field(tls: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=re.escape("grpcTls.secretName")):
        spec(grpcTls=tls)
