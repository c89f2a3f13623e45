"""The local kubelet's translation of a pod spec into host processes, on the operator's own pods."""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

import pytest
import yaml

from kubeinfer.core import api, builders
from kubeinfer_cluster.kubelet import plan, podstatus

REPO = pathlib.Path(__file__).resolve().parents[3]
SANDBOX = pathlib.Path("/sandbox")
IP = "127.3.1.2"


def onnx_pod(
    uri: str = "file:///models/mlp.onnx", *, extra: dict[str, Any] | None = None, **annotations: str
) -> dict[str, Any]:
    """The pod the operator's Deployment would create for an ONNX InferenceService (`extra`:
    more of its spec)."""
    runtime = api.parse_runtime(
        yaml.safe_load((REPO / "runtimes/defaults/onnxruntime.yaml").read_text())["spec"]
    )
    spec = api.parse_spec(
        {
            "model": {"name": "mlp", "format": "onnx", "storageUri": uri},
            "podMetadata": {"annotations": annotations},
            **(extra or {}),
        }
    )
    owner = builders.Owner(name="q", namespace="ns", uid="u")
    deployment = builders.build_deployment(owner, spec, "onnxruntime", runtime)
    template = deployment["spec"]["template"]
    return {**template, "metadata": {"name": "q-1", "namespace": "ns", **template["metadata"]}}


def config_contents(pod: dict[str, Any]) -> dict[str, dict[str, str]]:
    """What the kubelet fills the pod's downwardAPI volumes with (the model config)."""
    return {
        v["name"]: plan.downward_files(pod, v["downwardAPI"]["items"])
        for v in pod["spec"]["volumes"]
        if "downwardAPI" in v
    }


def test_the_operators_onnx_pod_becomes_host_processes() -> None:
    pod = onnx_pod()
    result = plan.pod_plan(pod, ip=IP, sandbox=SANDBOX, contents=config_contents(pod), secrets={})
    repo = SANDBOX / "volumes" / builders.MODELS_VOLUME
    [init] = result.init
    assert init.argv[:3] == [sys.executable, "-m", "kubeinfer.cli"]
    assert init.argv[3:6] == ["storage-init", "file:///models/mlp.onnx", str(repo)]
    [server] = result.main
    assert server.argv[:3] == [sys.executable, "-m", "kubeinfer_onnx.server"]
    # $(VAR) expanded, the mount path mapped into the sandbox, 0.0.0.0 bound to the pod IP.
    assert f"--model-repository={repo}" in server.argv
    assert "--http-port=8000" in server.argv
    assert f"--address={IP}" in server.argv
    # The model config, carried in the pod's annotation and projected by a downwardAPI
    # volume mounted by subPath into the model folder, is written there.
    config = json.loads(server.files[repo / "mlp" / "config.json"])
    assert list(server.files) == [repo / "mlp" / "config.json"]
    assert config["max_batch_size"] == api.BatchingSpec().max_batch_size
    assert server.startup is not None and server.startup.port == 8000
    assert server.readiness is not None and server.readiness.path == "/v2/health/ready"
    assert server.pre_stop_s == 5
    assert server.env["TMPDIR"] == str(SANDBOX / "volumes" / "tmp")


def test_annotations_emulate_a_device_and_a_cold_start() -> None:
    pod = onnx_pod(**{plan.DEVICE_MS_ANNOTATION: "40", plan.COLD_START_ANNOTATION: "1500ms"})
    result = plan.pod_plan(pod, ip=IP, sandbox=SANDBOX, contents=config_contents(pod), secrets={})
    assert result.main[0].argv[-1] == "--emulate-device-ms=40"
    assert result.cold_start_s == 1.5
    assert "--emulate-device-ms=40" not in result.init[0].argv


def test_the_cpu_limit_reaches_the_server_as_a_kubelet_computes_it() -> None:
    """The downward API's limits.cpu in millicores, rounded up as a kubelet rounds it."""
    for cpu, millicores in (("2", "2000"), ("1500m", "1500"), ("0.0005", "1")):
        pod = onnx_pod(extra={"resources": {"limits": {"cpu": cpu, "memory": "1Gi"}}})
        result = plan.pod_plan(
            pod, ip=IP, sandbox=SANDBOX, contents=config_contents(pod), secrets={}
        )
        assert result.main[0].env[builders.CPU_LIMIT_ENV] == millicores
        assert builders.CPU_LIMIT_ENV not in result.init[0].env


def test_credentials_reach_the_init_container_only() -> None:
    pod = onnx_pod()
    pod["spec"]["initContainers"][0]["envFrom"] = [{"secretRef": {"name": "creds"}}]
    secrets = {"creds": {"AWS_ACCESS_KEY_ID": "k"}}
    result = plan.pod_plan(
        pod, ip=IP, sandbox=SANDBOX, contents=config_contents(pod), secrets=secrets
    )
    assert result.init[0].env["AWS_ACCESS_KEY_ID"] == "k"
    assert "AWS_ACCESS_KEY_ID" not in result.main[0].env


def test_a_grpc_tls_pod_gets_its_secret_as_files_and_its_checks_as_values() -> None:
    pod = onnx_pod(extra={"grpcTls": {"secretName": "serving-tls", "mutual": True}})
    secret = {"tls.crt": "CERT", "tls.key": "KEY", "ca.crt": "CA"}
    contents = {**config_contents(pod), builders.GRPC_TLS_VOLUME: secret}
    result = plan.pod_plan(
        pod, ip=IP, sandbox=SANDBOX, contents=contents, secrets={"serving-tls": secret}
    )
    [server] = result.main
    folder = SANDBOX / "volumes" / builders.GRPC_TLS_VOLUME
    assert f"--grpc-server-cert={folder}/tls.crt" in server.argv
    assert f"--grpc-root-cert={folder}/ca.crt" in server.argv
    assert server.env["GRPC_TLS_SECRET_TLS"] == "CERT"
    assert server.env["GRPC_TLS_SECRET_CA"] == "CA"
    assert "KEY" not in server.env.values()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda p: p["spec"]["volumes"].append(
                {"name": "x", "persistentVolumeClaim": {"claimName": "c"}}
            ),
            "persistentVolumeClaim volumes are not supported",
        ),
        (
            lambda p: p["spec"]["containers"][0].update(command=["bash"]),
            "command 'bash'",
        ),
        (
            lambda p: p["spec"]["initContainers"][0].update(image="busybox:1"),
            "image 'busybox:1'",
        ),
        (
            lambda p: p["spec"]["containers"][0]["env"].append(
                {"name": "N", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}
            ),
            "resourceFieldRef 'limits.cpu' is unset",
        ),
    ],
)
def test_what_cannot_run_here_is_named(change: Any, message: str) -> None:
    pod = onnx_pod()
    change(pod)
    with pytest.raises(plan.Unsupported, match=message):
        plan.pod_plan(pod, ip=IP, sandbox=SANDBOX, contents=config_contents(pod), secrets={})


@pytest.mark.parametrize(
    ("text", "env", "out"),
    [
        ("$(A)/x", {"A": "1"}, "1/x"),
        ("$(B)", {}, "$(B)"),
        ("$$(A)", {"A": "1"}, "$(A)"),
    ],
)
def test_expand_follows_kubernetes(text: str, env: dict[str, str], out: str) -> None:
    assert plan.expand(text, env) == out


def test_status_follows_the_containers() -> None:
    init = [podstatus.Container("storage-initializer", "img")]
    main = [podstatus.Container("server", "img")]
    pending = podstatus.build(ip=IP, host_ip="127.0.1.1", init=init, main=main, started_at="t")
    assert pending["phase"] == "Pending"
    assert {c["type"]: c["status"] for c in pending["conditions"]}["Ready"] == "False"
    init[0].running()
    init[0].terminated(0, "")
    main[0].running()
    main[0].started = main[0].ready = True
    ready = podstatus.build(ip=IP, host_ip="127.0.1.1", init=init, main=main, started_at="t")
    assert ready["phase"] == "Running" and ready["podIP"] == IP
    assert {c["type"]: c["status"] for c in ready["conditions"]}["Ready"] == "True"
    main[0].terminated(1, "model failed to load")
    main[0].restarting(10)
    crashed = podstatus.build(ip=IP, host_ip="127.0.1.1", init=init, main=main, started_at="t")
    [record] = crashed["containerStatuses"]
    assert record["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert record["lastState"]["terminated"]["message"] == "model failed to load"
    assert record["restartCount"] == 1
    stamped = podstatus.stamp(crashed, podstatus.stamp(ready, {}, "t1"), "t2")
    times = {c["type"]: c["lastTransitionTime"] for c in stamped["conditions"]}
    assert times["Initialized"] == "t1" and times["Ready"] == "t2"


def test_termination_message_is_the_log_tail() -> None:
    log = "".join(f"line {i}\n" for i in range(200))
    message = podstatus.termination_message(log)
    assert message.endswith("line 199") and "line 119\n" not in message
    assert len(message.encode()) <= podstatus.TAIL_BYTES


def test_the_operators_router_pod_runs_as_its_service_account() -> None:
    """kubeinfer-router's pod (core/router.py), with the token volume the API server's
    ServiceAccount admission adds: the host process gets a kubeconfig naming the pod's own
    token and CA in the sandbox, and binds the pod's IP."""
    from kubeinfer.core import config, router

    runtime = api.parse_runtime(
        yaml.safe_load((REPO / "runtimes/defaults/onnxruntime.yaml").read_text())["spec"]
    )
    spec = api.parse_spec(
        {
            "model": {"name": "mlp", "format": "onnx", "storageUri": "file:///m.onnx"},
            "router": {"enabled": True},
        }
    )
    owner = builders.Owner(name="q", namespace="ns", uid="u")
    template = router.build_deployment(owner, spec, runtime, config.OperatorConfig())["spec"][
        "template"
    ]
    pod: dict[str, Any] = {"metadata": {"name": "q-router-1", **template["metadata"]}, **template}
    pod["spec"]["volumes"].append({"name": "kube-api-access", "projected": {"sources": []}})
    pod["spec"]["containers"][0]["volumeMounts"].append(
        {"name": "kube-api-access", "mountPath": plan.SERVICE_ACCOUNT_DIR, "readOnly": True}
    )
    contents = {"config": {router.CONFIG_FILE: "{}"}}
    result = plan.pod_plan(
        pod,
        ip=IP,
        sandbox=SANDBOX,
        contents=contents,
        secrets={},
        api_server="https://127.0.0.1:6443",
    )
    [proc] = result.main
    assert proc.argv[:3] == [sys.executable, "-m", "kubeinfer_router"]
    assert f"--config={SANDBOX / 'volumes' / 'config' / router.CONFIG_FILE}" in proc.argv
    assert f"--listen={IP}:{router.HTTP_PORT}" in proc.argv
    kubeconfig = pathlib.Path(proc.env["KUBECONFIG"])
    doc = yaml.safe_load(proc.files[kubeconfig])
    account = SANDBOX / "volumes" / "kube-api-access"
    assert doc["users"][0]["user"] == {"tokenFile": str(account / "token")}
    assert doc["clusters"][0]["cluster"] == {
        "server": "https://127.0.0.1:6443",
        "certificate-authority": str(account / "ca.crt"),
    }
    # A pod without a token gets no credentials at all.
    no_token = plan.pod_plan(
        onnx_pod(),
        ip=IP,
        sandbox=SANDBOX,
        contents=config_contents(onnx_pod()),
        secrets={},
        api_server="https://127.0.0.1:6443",
    )
    assert all("KUBECONFIG" not in c.env for c in [*no_token.init, *no_token.main])


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("metadata.name", "q-1"),
        ("metadata.namespace", "ns"),
        ("metadata.labels['kubeinfer.io/inferenceservice']", "q"),
        (f"metadata.annotations['{builders.CONFIG_ANNOTATION}']", None),
        # An absent key makes an empty file, as the kubelet does.
        ("metadata.annotations['absent']", ""),
    ],
)
def test_downward_api_files(field: str, expected: str | None) -> None:
    pod = onnx_pod()
    files = plan.downward_files(pod, [{"path": "f", "fieldRef": {"fieldPath": field}}])
    want = (
        pod["metadata"]["annotations"][builders.CONFIG_ANNOTATION] if expected is None else expected
    )
    assert files == {"f": want}


def test_downward_api_refuses_what_it_cannot_know() -> None:
    with pytest.raises(plan.Unsupported, match=r"metadata\.uid"):
        plan.downward_files(onnx_pod(), [{"path": "f", "fieldRef": {"fieldPath": "metadata.uid"}}])
