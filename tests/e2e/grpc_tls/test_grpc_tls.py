"""End to end: an InferenceService with ``grpcTls`` serves gRPC over mutual TLS from its own
Secret, on both default runtimes, with the arguments their catalogue entries give.

The local kubelet runs each pod's real server (kubeinfer's ONNX server, or tritonserver 2.51
from the pytriton wheel) with the Secret mounted where the operator put it: a client holding
the CA and a client certificate infers, and gets onnxruntime's answer; a plaintext client and a
client without a certificate get nothing; HTTP (the probes, the autoscaler's scrape) stays
plaintext. A service whose Secret, or the CA that mutual TLS needs, is missing says so in
status, as the kubelet words it.

Certificates come from tests/certs.py (the openssl command line), made per test.
"""

from __future__ import annotations

import pathlib
import sys
import urllib.request

import grpc
import numpy as np
import onnxruntime
import pytest
import tritonclient.grpc as grpcclient
import yaml
from kubernetes import client

from tests import certs as tls_certs
from tests.conftest import ClusterHandle
from tests.e2e import scenario
from tests.operator_process import OperatorProcess
from tests.waiting import wait_for

GRPC_PORT, HTTP_PORT = 8001, 8000  # the default runtimes' ports (runtimes/defaults)


@pytest.fixture
def certs(tmp_path: pathlib.Path) -> pathlib.Path:
    try:
        return tls_certs.make(tmp_path / "certs")
    except tls_certs.OpenSSLMissing as exc:
        pytest.fail(str(exc), pytrace=False)


def create_tls_secret(
    cluster: ClusterHandle, namespace: str, name: str, certs: pathlib.Path, *, ca: bool
) -> None:
    """A kubernetes.io/tls Secret as cert-manager writes one (ca.crt only when ``ca``)."""
    files = {"tls.crt": "server.pem", "tls.key": "server.key"}
    if ca:
        files["ca.crt"] = "ca.pem"
    cluster.core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=name),
            type="kubernetes.io/tls",
            string_data={key: (certs / file).read_text() for key, file in files.items()},
        ),
    )


def tls_service(name: str, runtime: str, uri: str, secret: str) -> str:
    doc = yaml.safe_load(
        scenario.manifest(
            name,
            uri=uri,
            gpus=0,
            max_batch=4,
            device_ms=1,
            scaling={"minReplicas": 1, "maxReplicas": 1},
            cold_start="0s",
            mode="Off",
        )
    )
    doc["spec"]["runtime"] = runtime
    doc["spec"]["grpcTls"] = {"secretName": secret, "mutual": True}
    return yaml.safe_dump(doc)


@pytest.mark.parametrize("runtime", ["onnxruntime", "triton"])
def test_grpc_is_served_over_mutual_tls_from_the_services_secret(
    cluster: ClusterHandle,
    operator: OperatorProcess,
    namespace: str,
    tmp_path: pathlib.Path,
    certs: pathlib.Path,
    runtime: str,
) -> None:
    create_tls_secret(cluster, namespace, "serving-tls", certs, ca=True)
    uri = scenario.model_uri(tmp_path)
    scenario.apply(cluster, namespace, tls_service("tls", runtime, uri, "serving-tls"))
    ip = wait_for(
        lambda: scenario.ready_pod_ip(cluster.core, namespace, f"{scenario.LABEL}=tls"),
        180,
        f"a Ready {runtime} replica serving gRPC over TLS",
    )
    url = f"{ip}:{GRPC_PORT}"
    # The pod's certificate names localhost and 127.0.0.1, not this pod's 127.x address.
    target = [("grpc.ssl_target_name_override", tls_certs.SERVER_NAME)]

    trusted = grpcclient.InferenceServerClient(
        url,
        ssl=True,
        root_certificates=str(certs / "ca.pem"),
        private_key=str(certs / "client.key"),
        certificate_chain=str(certs / "client.pem"),
        channel_args=target,
    )
    data = np.random.default_rng(7).standard_normal((2, 64)).astype(np.float32)
    tensor = grpcclient.InferInput("INPUT0", [2, 64], "FP32")
    tensor.set_data_from_numpy(data)
    result = trusted.infer("mlp", [tensor])
    trusted.close()
    session = onnxruntime.InferenceSession(uri.removeprefix("file://"))
    (want,) = session.run(None, {"INPUT0": data})
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), want, rtol=1e-5, atol=1e-5)

    assert tls_certs.ready_over(grpc.insecure_channel(url)) == "UNAVAILABLE"
    no_certificate = grpc.ssl_channel_credentials((certs / "ca.pem").read_bytes())
    assert (
        tls_certs.ready_over(grpc.secure_channel(url, no_certificate, options=target))
        == "UNAVAILABLE"
    )
    with urllib.request.urlopen(f"http://{ip}:{HTTP_PORT}/v2/health/ready", timeout=10) as r:
        assert r.status == 200  # what the probes and the router use stays plaintext


@pytest.mark.parametrize(
    ("secret", "named"),
    [
        ("absent", 'CreateContainerConfigError: secret "absent" not found'),
        ("no-ca", "CreateContainerConfigError: couldn't find key ca.crt in Secret {ns}/no-ca"),
    ],
)
def test_a_missing_secret_or_ca_is_named_in_status(
    cluster: ClusterHandle,
    operator: OperatorProcess,
    namespace: str,
    tmp_path: pathlib.Path,
    certs: pathlib.Path,
    secret: str,
    named: str,
) -> None:
    """Mutual TLS needs the Secret and its ca.crt: without either the container is not
    created, and Ready says which, as the kubelet words it."""
    create_tls_secret(cluster, namespace, "no-ca", certs, ca=False)
    uri = scenario.model_uri(tmp_path)
    scenario.apply(cluster, namespace, tls_service("tls", "onnxruntime", uri, secret))
    expected = named.format(ns=namespace)

    def said() -> str | None:
        ready = scenario.condition(scenario.get(cluster, namespace, "tls"), "Ready")
        message = str(ready.get("message", ""))
        return message if ready.get("status") == "False" and expected in message else None

    message = wait_for(said, 120, f"Ready to say {expected!r}")
    print(f"\nReady: {message}", file=sys.stderr)


def test_a_renewed_secret_is_served_without_a_restart(
    cluster: ClusterHandle,
    operator: OperatorProcess,
    namespace: str,
    tmp_path: pathlib.Path,
    certs: pathlib.Path,
) -> None:
    """What cert-manager does at renewal: the Secret's data is replaced (here by a pair from
    another CA, with that CA as ca.crt). The kubelet updates the mounted files; kubeinfer's
    ONNX server serves the new pair and trusts the new CA for new connections, and the
    container is not restarted."""
    create_tls_secret(cluster, namespace, "serving-tls", certs, ca=True)
    uri = scenario.model_uri(tmp_path)
    scenario.apply(cluster, namespace, tls_service("tls", "onnxruntime", uri, "serving-tls"))
    selector = f"{scenario.LABEL}=tls"
    ip = wait_for(
        lambda: scenario.ready_pod_ip(cluster.core, namespace, selector), 180, "a Ready replica"
    )
    target = [("grpc.ssl_target_name_override", tls_certs.SERVER_NAME)]

    def as_client_of(ca: pathlib.Path) -> str:
        """ServerReady for a client holding `ca`'s CA and client certificate."""
        credentials = grpc.ssl_channel_credentials(
            (ca / "ca.pem").read_bytes(),
            (ca / "client.key").read_bytes(),
            (ca / "client.pem").read_bytes(),
        )
        return tls_certs.ready_over(
            grpc.secure_channel(f"{ip}:{GRPC_PORT}", credentials, options=target)
        )

    renewed = tls_certs.make(tmp_path / "renewed")
    assert as_client_of(certs) == "OK"
    assert as_client_of(renewed) == "UNAVAILABLE"
    cluster.core.patch_namespaced_secret(
        "serving-tls",
        namespace,
        {
            "stringData": {
                key: (renewed / file).read_text()
                for key, file in {
                    "tls.crt": "server.pem",
                    "tls.key": "server.key",
                    "ca.crt": "ca.pem",
                }.items()
            }
        },
    )
    # The kubelet's volume sync, then the server's next read of its files (10 s by default).
    wait_for(lambda: as_client_of(renewed) == "OK", 60, "the renewed certificate served")
    assert as_client_of(certs) == "UNAVAILABLE"
    [pod] = cluster.core.list_namespaced_pod(namespace, label_selector=selector).items
    assert pod.status.pod_ip == ip
    assert [c.restart_count for c in pod.status.container_statuses] == [0]
