"""The operator image as the storage initializer: the init container kubeinfer's Deployments
run, fetching a model over HTTPS (a CA the pod is given) and from S3 (moto's server) into an
emptyDir-like folder, as uid 1000 on a read-only root; then the server image serves what it
fetched, as the pod's two containers share the emptyDir."""

from __future__ import annotations

import datetime
import hashlib
import http.server
import ipaddress
import pathlib
import ssl
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as httpclient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kubeinfer.core import api, builders, config
from kubeinfer_cluster import containers
from tests.images import pods
from tests.images.pods import Images
from tests.images.test_server_image import serving_container
from tests.integration.runtime import runtime_models
from tests.waiting import wait_for

MODELS_PATH = "/mnt/models"
CA_DIR = "/etc/kubeinfer-test-ca"


def _self_signed(directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """(certificate, key) for 127.0.0.1, its own CA: what a private model store might use."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubeinfer-test-models")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "ca.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    directory.chmod(0o755)
    cert_path.chmod(0o644)
    return cert_path, key_path


class HttpsModels:
    def __init__(self, base: str, ca_dir: pathlib.Path, model: bytes) -> None:
        self.base, self.ca_dir, self.model = base, ca_dir, model


@pytest.fixture(scope="module")
def https_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsModels]:
    """An HTTPS file server on loopback with a model and its .sha256 sidecar."""
    root = tmp_path_factory.mktemp("https-root")
    # Named model.onnx, as in examples/quickstart.yaml: a single-file URI keeps its file name,
    # and the server (like Triton) loads <model>/<version>/model.onnx.
    model_path = runtime_models.build_mlp(root / "mlp" / "model.onnx", seed=5)
    model = model_path.read_bytes()
    (root / "mlp" / "model.onnx.sha256").write_text(
        f"{hashlib.sha256(model).hexdigest()}  model.onnx\n"
    )
    ca_dir = tmp_path_factory.mktemp("https-ca") / "ca"
    cert, key = _self_signed(ca_dir)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    key.unlink()  # the pod only ever sees the certificate
    try:
        yield HttpsModels(f"https://127.0.0.1:{server.server_address[1]}", ca_dir, model)
    finally:
        server.shutdown()
        server.server_close()


def init_args(uri: str) -> list[str]:
    """The storage initializer's args, exactly as kubeinfer's builder writes them."""
    spec, runtime = _quickstart_with(uri)
    deployment = builders.build_deployment(builders.Owner("m", "ns", "uid"), spec, "o", runtime)
    [init] = deployment["spec"]["template"]["spec"]["initContainers"]
    # The operator image serves as the init image.
    assert init["image"].startswith(f"{config.OPERATOR_IMAGE_REPOSITORY}:")
    args: list[str] = init["args"]
    return args


def _quickstart_with(uri: str) -> tuple[api.InferenceServiceSpec, api.InferenceRuntimeSpec]:
    import yaml

    from tests.operator_process import REPO

    doc = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    doc["spec"]["model"]["storageUri"] = uri
    runtime = yaml.safe_load((REPO / "runtimes" / "defaults" / "onnxruntime.yaml").read_text())
    return api.parse_spec(doc["spec"]), api.parse_runtime(runtime["spec"])


def run_init(
    imageset: Images,
    name: str,
    uri: str,
    models: pathlib.Path,
    env: dict[str, str],
    extra: list[containers.Mount],
) -> tuple[int, str]:
    container = imageset.container(
        "operator",
        name,
        args=init_args(uri),
        env=env,
        mounts=[containers.Mount(MODELS_PATH, models, readonly=False), *extra],
    )
    container.run()
    try:
        code = container.wait(timeout=120)
    finally:
        container.stop(timeout=5)
    return code, container.output()


def test_https_fetch_then_serve(
    imageset: Images, https_models: HttpsModels, tmp_path: pathlib.Path
) -> None:
    models = pods.empty_dir(tmp_path / "model-repository")
    code, output = run_init(
        imageset,
        "init-https",
        f"{https_models.base}/mlp/model.onnx",
        models,
        # How a pod trusts a private CA: a mounted bundle named by SSL_CERT_FILE.
        {"SSL_CERT_FILE": f"{CA_DIR}/ca.crt"},
        [containers.Mount(CA_DIR, https_models.ca_dir)],
    )
    assert code == 0, output
    assert "sha256 verified" in output, output
    fetched = models / "mlp" / "1" / "model.onnx"
    assert fetched.read_bytes() == https_models.model
    assert fetched.stat().st_uid == pods.UID  # written by the pod's user, not root

    # The serving container of the same pod reads the emptyDir the init container filled.
    http, grpc, metrics = pods.free_port(), pods.free_port(), pods.free_port()
    spec = serving_container(http, grpc, metrics)
    env = {e["name"]: e["value"] for e in spec["env"]}  # type: ignore[attr-defined]
    with imageset.running(
        "onnx-server",
        "server-after-init",
        command=spec["command"],
        args=spec["args"],
        env=env,
        mounts=[containers.Mount(env["MODEL_REPOSITORY"], models, readonly=False)],
    ) as server:
        wait_for(
            lambda: (
                pods.http_status(f"http://127.0.0.1:{http}/v2/health/ready") == 200
                or server.exit_code() is not None
            ),
            60,
            "the server to serve the fetched model",
        )
        assert server.exit_code() is None, server.output()[-3000:]
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
        tensor = httpclient.InferInput("INPUT0", [1, 64], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 64), np.float32))
        assert client.infer("mlp", [tensor]).as_numpy("OUTPUT0").shape == (1, 10)


def test_https_without_the_ca_fails_with_one_line(
    imageset: Images, https_models: HttpsModels, tmp_path: pathlib.Path
) -> None:
    """The image trusts only public CAs by default: a private store needs its CA mounted."""
    models = pods.empty_dir(tmp_path / "model-repository")
    code, output = run_init(
        imageset, "init-noca", f"{https_models.base}/mlp/model.onnx", models, {}, []
    )
    assert code == 1, output
    assert "CERTIFICATE_VERIFY_FAILED" in output or "certificate" in output.lower(), output
    assert not list(models.rglob("*.onnx"))


@pytest.fixture(scope="module")
def s3(https_models: HttpsModels) -> Iterator[str]:
    """moto's S3 server on loopback with the model in bucket `models` (any key is accepted)."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    client.create_bucket(Bucket="models")
    client.put_object(Bucket="models", Key="mlp/1/model.onnx", Body=https_models.model)
    try:
        yield endpoint
    finally:
        server.stop()


def test_s3_fetch(
    imageset: Images, s3: str, https_models: HttpsModels, tmp_path: pathlib.Path
) -> None:
    models = pods.empty_dir(tmp_path / "model-repository")
    # What the pod gets from the InferenceService's credentials Secret through envFrom.
    env = {
        "AWS_ACCESS_KEY_ID": "AKIAKUBEINFERTEST",
        "AWS_SECRET_ACCESS_KEY": "not-a-real-secret",
        "S3_ENDPOINT": s3,
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    code, output = run_init(imageset, "init-s3", "s3://models/mlp/1/", models, env, [])
    assert code == 0, output
    assert (models / "mlp" / "1" / "model.onnx").read_bytes() == https_models.model
    assert "not-a-real-secret" not in output
