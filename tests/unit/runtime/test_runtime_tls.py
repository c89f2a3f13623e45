"""tls.from_args: which combinations of Triton's gRPC TLS flags serve plaintext, which TLS, and
which stop the server (the flag named). Real certificates and handshakes are the integration
tests' (tests/integration/runtime/test_runtime_grpc_tls.py)."""

from __future__ import annotations

import pytest

from kubeinfer_onnx import server, tls


def parse(*flags: str) -> tls.Files | None:
    args = server.parse_args(["--model-repository", "/m", *flags])
    files: tls.Files | None = args.grpc_tls
    return files


def test_no_flags_serve_plaintext() -> None:
    assert parse() is None


def test_grpc_off_ignores_the_tls_flags() -> None:
    assert parse("--allow-grpc", "false", "--grpc-use-ssl", "true") is None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--grpc-use-ssl", "true"], "--grpc-use-ssl needs --grpc-server-cert, --grpc-server-key"),
        (["--grpc-use-ssl-mutual", "true"], "--grpc-server-key, --grpc-root-cert"),
        (["--grpc-root-cert", "/ca.pem"], "--grpc-root-cert given without --grpc-use-ssl=true"),
        (
            ["--grpc-use-ssl", "1", "--grpc-server-cert", "/nope.pem", "--grpc-server-key", "/k"],
            "--grpc-server-cert /nope.pem: no such file",
        ),
    ],
)
def test_bad_sets_exit_2_naming_the_flag(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        parse(*flags)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err
