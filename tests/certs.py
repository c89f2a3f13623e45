"""What the gRPC TLS tests share: throw-away certificates, made with the `openssl` command line
(which `make test`'s cluster tool already needs; none is committed), and ``ready_over``, which
says whether a channel gets through.

``make(folder)`` writes, all signed by ca.pem: server.pem/server.key for 127.0.0.1 and
localhost (a client that dials a pod's 127.x address names `localhost` as the TLS target),
client.pem/client.key (client authentication); and other-ca.pem, a CA nobody is signed by.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

# What the server certificate is valid for besides 127.0.0.1: the name a client overrides the
# TLS target with when it dials another loopback address.
SERVER_NAME = "localhost"


class OpenSSLMissing(RuntimeError):
    pass


def make(folder: pathlib.Path) -> pathlib.Path:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise OpenSSLMissing("the gRPC TLS tests need the openssl command line: install openssl")
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        run("req", "-x509", *key, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
            "-subj", f"/CN=kubeinfer test {ca}")  # fmt: skip
    (folder / "server.ext").write_text(f"subjectAltName=IP:127.0.0.1,DNS:{SERVER_NAME}\n")
    (folder / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for leaf in ("server", "client"):
        run("req", *key, "-keyout", f"{leaf}.key", "-out", f"{leaf}.csr", "-subj", f"/CN={leaf}")
        sign = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2"]
        run("x509", "-req", "-in", f"{leaf}.csr", *sign, "-out", f"{leaf}.pem",
            "-extfile", f"{leaf}.ext")  # fmt: skip
    return folder


def ready_over(channel: grpc.Channel) -> str:
    """ServerReady's outcome on a channel (closed after): OK or the status code's name."""
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    try:
        stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=10)
    except grpc.RpcError as exc:
        return str(exc.code().name)
    finally:
        channel.close()
    return "OK"
