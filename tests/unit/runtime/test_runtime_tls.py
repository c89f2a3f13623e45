"""tls.from_args: which combinations of Triton's gRPC TLS flags serve plaintext, which TLS, and
which stop the server (the flag named); and `Rotation`, on real certificates (tests/certs.py):
which changed files it takes, which it refuses, and that a handshake gets the newest. Serving
over sockets is the integration tests' (tests/integration/runtime/test_runtime_grpc_tls.py)."""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import shutil
import ssl

import pytest

from kubeinfer_onnx import server, tls
from tests import certs


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


@pytest.fixture(scope="module")
def two_cas(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    """Two independent sets (CA, server pair, client pair) from tests/certs.py."""
    try:
        return (
            certs.make(tmp_path_factory.mktemp("first")),
            certs.make(tmp_path_factory.mktemp("second")),
        )
    except certs.OpenSSLMissing as exc:
        pytest.fail(str(exc), pytrace=False)


def _serve_copies(folder: pathlib.Path, source: pathlib.Path) -> tls.Files:
    folder.mkdir()
    for name in ("server.pem", "server.key", "ca.pem"):
        shutil.copyfile(source / name, folder / name)
    return tls.Files(folder / "server.pem", folder / "server.key", folder / "ca.pem", True)


def test_rotation_takes_a_changed_set_that_loads_and_keeps_the_last_good_one(
    two_cas: tuple[pathlib.Path, pathlib.Path],
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = two_cas
    files = _serve_copies(tmp_path / "served", first)
    rotation = tls.Rotation(files)
    listening = rotation.context
    assert listening.verify_mode == ssl.CERT_REQUIRED  # mutual
    assert not rotation.check()  # nothing changed
    assert rotation.version == 0

    # Half a swap (the key is new, the certificate not yet): refused once, the old set kept.
    shutil.copyfile(second / "server.key", files.key)
    with caplog.at_level(logging.WARNING, "kubeinfer_onnx.tls"):
        assert not rotation.check()
        assert not rotation.check()
    [said] = [r.getMessage() for r in caplog.records if "keeping" in r.getMessage()]
    assert f"--grpc-server-key {files.key}: not a PEM certificate chain and its key" in said
    assert rotation.current.cert == (first / "server.pem").read_bytes()

    # The rest of the swap, the CA too: the new set is served, on the same listening context.
    shutil.copyfile(second / "server.pem", files.cert)
    shutil.copyfile(second / "ca.pem", tmp_path / "served" / "ca.pem")
    assert rotation.check()
    assert rotation.version == 1
    assert rotation.current.pems == tuple(
        (second / n).read_bytes() for n in ("server.pem", "server.key", "ca.pem")
    )
    assert rotation.context is listening
    assert rotation.current.context.verify_mode == ssl.CERT_REQUIRED
    # Client CAs are replaced, not added to: the old CA's clients are no longer trusted.
    subjects = [dict(x[0] for x in c["subject"]) for c in rotation.current.context.get_ca_certs()]
    assert [s["commonName"] for s in subjects] == ["kubeinfer test ca"]

    # A file gone for a moment (a swap in progress) keeps the set as well.
    files.key.unlink()
    assert not rotation.check()
    assert rotation.version == 1


def test_each_handshake_is_handed_the_newest_context(
    two_cas: tuple[pathlib.Path, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    """A client that trusts only the second CA completes a handshake with the listening
    context only once the rotation has taken the second set (in-memory TLS, no sockets)."""
    first, second = two_cas
    files = _serve_copies(tmp_path / "served", first)
    files = dataclasses.replace(files, root=None, mutual=False)
    rotation = tls.Rotation(files)

    def handshake_trusting(ca: pathlib.Path) -> bool:
        client_context = ssl.create_default_context(cafile=ca)
        client_context.check_hostname = False
        to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = client_context.wrap_bio(to_client, to_server)
        server_side = rotation.context.wrap_bio(to_server, to_client, server_side=True)
        # Flights back and forth until both sides are done (TLS 1.3: two round trips).
        for _ in range(4):
            for side in (client, server_side):
                try:
                    side.do_handshake()
                except ssl.SSLWantReadError:
                    continue
                except ssl.SSLError:
                    return False
            if client.version() and server_side.version():
                return True
        return False

    assert handshake_trusting(first / "ca.pem")
    assert not handshake_trusting(second / "ca.pem")
    shutil.copyfile(second / "server.key", files.key)
    shutil.copyfile(second / "server.pem", files.cert)
    assert rotation.check()
    assert handshake_trusting(second / "ca.pem")
    assert not handshake_trusting(first / "ca.pem")
