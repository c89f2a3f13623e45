"""gRPC over TLS with Triton's flags (`--grpc-use-ssl`, `--grpc-use-ssl-mutual`), on both
frontends, as tritonclient and grpcio see it: a trusted client infers, a plaintext or untrusted
one gets nothing, mutual TLS refuses a client without a certificate, and a bad set of flags
stops the server before it loads anything, naming the flag or the file.

Certificates come from tests/certs.py (the `openssl` command line), made fresh for the
module."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from test_runtime_http import mlp_input, reference
from tritonclient.utils import InferenceServerException

from conftest import RUNTIME_SRC, Server, start_server
from tests import certs as tls_certs
from tests.waiting import wait_for

FRONTENDS = ["fast", "grpcio"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    try:
        return tls_certs.make(tmp_path_factory.mktemp("certs"))
    except tls_certs.OpenSSLMissing as exc:
        pytest.fail(str(exc), pytrace=False)


def serving(
    request: pytest.FixtureRequest,
    repo: pathlib.Path,
    certs: pathlib.Path,
    factory: pytest.TempPathFactory,
    *flags: str,
) -> Iterator[Server]:
    """A server on the frontend the fixture is parametrized with, its certificate given; stopped
    (exit 0) after the module."""
    server = start_server(
        repo,
        factory.mktemp("logs") / f"grpc-tls-{request.param}.log",
        "--grpc-frontend",
        request.param,
        "--grpc-server-cert",
        str(certs / "server.pem"),
        "--grpc-server-key",
        str(certs / "server.key"),
        *flags,
    )
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture(scope="module", params=FRONTENDS)
def tls(
    request: pytest.FixtureRequest,
    model_repo: pathlib.Path,
    certs: pathlib.Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    yield from serving(request, model_repo, certs, tmp_path_factory, "--grpc-use-ssl", "true")


@pytest.fixture(scope="module", params=FRONTENDS)
def mutual(
    request: pytest.FixtureRequest,
    model_repo: pathlib.Path,
    certs: pathlib.Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    root = ["--grpc-root-cert", str(certs / "ca.pem")]
    yield from serving(
        request, model_repo, certs, tmp_path_factory, "--grpc-use-ssl-mutual", "true", *root
    )


def infer(client: grpcclient.InferenceServerClient, repo: pathlib.Path) -> None:
    data = mlp_input(3, seed=4)
    tensor = grpcclient.InferInput("INPUT0", [3, 64], "FP32")
    tensor.set_data_from_numpy(data)
    result = client.infer("mlp", [tensor], model_version="1")
    (want,) = reference(repo, "mlp", 1, {"INPUT0": data})
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), want, rtol=1e-5, atol=1e-5)


def test_a_trusting_client_infers_over_tls(
    tls: Server, certs: pathlib.Path, model_repo: pathlib.Path
) -> None:
    client = grpcclient.InferenceServerClient(
        tls.grpc_url, ssl=True, root_certificates=str(certs / "ca.pem")
    )
    assert client.is_server_ready()
    infer(client, model_repo)
    client.close()
    assert "TLS)" in tls.log()  # the serving line says the listener is encrypted


def test_plaintext_and_untrusting_clients_get_nothing(tls: Server, certs: pathlib.Path) -> None:
    assert tls_certs.ready_over(grpc.insecure_channel(tls.grpc_url)) == "UNAVAILABLE"
    other = grpc.ssl_channel_credentials((certs / "other-ca.pem").read_bytes())
    assert tls_certs.ready_over(grpc.secure_channel(tls.grpc_url, other)) == "UNAVAILABLE"
    # HTTP stays plaintext, as Triton's does, and the server is still whole.
    assert tls.get("/v2/health/ready")[0] == 200


def test_mutual_tls_needs_a_client_certificate(
    mutual: Server, certs: pathlib.Path, model_repo: pathlib.Path
) -> None:
    ca = (certs / "ca.pem").read_bytes()
    anonymous = grpc.ssl_channel_credentials(ca)
    assert tls_certs.ready_over(grpc.secure_channel(mutual.grpc_url, anonymous)) == "UNAVAILABLE"
    client = grpcclient.InferenceServerClient(
        mutual.grpc_url,
        ssl=True,
        root_certificates=str(certs / "ca.pem"),
        private_key=str(certs / "client.key"),
        certificate_chain=str(certs / "client.pem"),
    )
    infer(client, model_repo)
    client.close()
    with pytest.raises(InferenceServerException):
        plain = grpcclient.InferenceServerClient(mutual.grpc_url)
        plain.is_server_ready(client_timeout=10)


# The flag combinations are the unit tests' (tests/unit/runtime/test_runtime_tls.py); here what
# needs real files, through the whole process: a key that is not the certificate's, and a
# mutual set without its CAs.
@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (
            ["--grpc-use-ssl-mutual", "true", "--grpc-server-cert", "{certs}/server.pem",
             "--grpc-server-key", "{certs}/server.key"],
            "--grpc-use-ssl-mutual needs --grpc-root-cert",
        ),
        (
            ["--grpc-use-ssl", "true", "--grpc-server-cert", "{certs}/server.pem",
             "--grpc-server-key", "{certs}/client.key"],
            "not a PEM certificate chain and its key",
        ),
    ],
)  # fmt: skip
def test_bad_tls_flags_stop_the_server_naming_the_flag(
    flags: list[str], named: str, certs: pathlib.Path, model_repo: pathlib.Path
) -> None:
    argv = [flag.format(certs=certs) for flag in flags]
    done = subprocess.run(
        [sys.executable, "-m", "kubeinfer_onnx.server", "--model-repository", str(model_repo),
         "--workers", "1", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(RUNTIME_SRC)},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert named.format(certs=certs) in done.stderr
    assert "loading" not in done.stderr  # refused before any model was read


WORKERS = 2
LOADED = "new certificate files loaded"
KEPT = "keeping the files loaded before"


def _swap_in(folder: pathlib.Path, name: str, source: pathlib.Path) -> None:
    """Replace a served file at once, as the kubelet swaps a renewed Secret in."""
    staged = folder / f".{name}.new"
    shutil.copyfile(source, staged)
    os.replace(staged, folder / name)


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_a_renewed_certificate_is_served_without_a_restart(
    frontend: str,
    certs: pathlib.Path,
    model_repo: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    """cert-manager renews the Secret and the kubelet swaps the files: new connections get the
    new certificate (a client trusting only the new CA gets in, one trusting only the old is
    refused), the connection already open keeps serving, and a swap to a key that is not the
    certificate's is refused with a log line while the last good pair is served, until the
    next good one. Two workers: each reads the files and swaps on its own."""
    served = tmp_path / "served"
    served.mkdir()
    for name in ("server.pem", "server.key"):
        shutil.copyfile(certs / name, served / name)
    renewed = tls_certs.make(tmp_path / "renewed")  # another CA, and a server pair it signed
    server = start_server(
        model_repo,
        tmp_path / "server.log",
        "--grpc-frontend", frontend,
        "--grpc-use-ssl", "true",
        "--grpc-server-cert", str(served / "server.pem"),
        "--grpc-server-key", str(served / "server.key"),
        "--grpc-tls-reload-secs", "0.2",
        "--workers", str(WORKERS),  # each reads the files itself
    )  # fmt: skip
    try:
        open_before = grpcclient.InferenceServerClient(
            server.grpc_url, ssl=True, root_certificates=str(certs / "ca.pem")
        )
        infer(open_before, model_repo)

        def trusting(ca: pathlib.Path) -> str:
            credentials = grpc.ssl_channel_credentials(ca.read_bytes())
            return tls_certs.ready_over(grpc.secure_channel(server.grpc_url, credentials))

        assert trusting(renewed / "ca.pem") == "UNAVAILABLE"
        _swap_in(served, "server.key", renewed / "server.key")
        _swap_in(served, "server.pem", renewed / "server.pem")
        wait_for(
            lambda: server.log().count(LOADED) == WORKERS, 30, "every worker loading the new pair"
        )
        assert trusting(renewed / "ca.pem") == "OK"
        assert trusting(certs / "ca.pem") == "UNAVAILABLE"
        infer(open_before, model_repo)  # the open connection keeps its session
        open_before.close()

        # A key that is not the certificate's: refused, said, and the renewed pair kept.
        _swap_in(served, "server.key", certs / "client.key")
        wait_for(lambda: server.log().count(KEPT) == WORKERS, 30, "every worker refusing it")
        assert trusting(renewed / "ca.pem") == "OK"
        # The next good pair is taken as before (here the first one again).
        _swap_in(served, "server.key", certs / "server.key")
        _swap_in(served, "server.pem", certs / "server.pem")
        wait_for(lambda: server.log().count(LOADED) == 2 * WORKERS, 30, "the next good pair")
        assert trusting(certs / "ca.pem") == "OK"
        assert server.log().count(KEPT) == WORKERS  # said once per worker, not every check
    finally:
        assert server.stop() == 0, server.log()
