"""TLS for the gRPC listener, from Triton's own flags.

Owns `--grpc-use-ssl`, `--grpc-server-cert`, `--grpc-server-key`, `--grpc-root-cert` and
`--grpc-use-ssl-mutual` (tritonserver's names and meaning, so a runtime's arguments carry over):
checking them together once at start-up, so a bad set fails the process with one message that
names the flag or the file; and the server-side `ssl.SSLContext` ours serves with. grpcio's
frontend builds its credentials from the same `Files` (grpc_aio.py). HTTP stays plaintext, as
Triton's does.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import ssl
from collections.abc import Callable


class TlsError(Exception):
    """The TLS flags or files cannot be served with; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class Files:
    cert: pathlib.Path  # the server's certificate chain, PEM
    key: pathlib.Path  # its private key, PEM
    root: pathlib.Path | None  # the CAs client certificates must chain to, PEM
    mutual: bool  # clients must present a certificate signed by `root`

    @property
    def label(self) -> str:
        return "mutual TLS" if self.mutual else "TLS"


def add_flags(parser: argparse.ArgumentParser, to_bool: Callable[[str], bool]) -> None:
    """Triton's gRPC TLS flags; `to_bool` parses their true/false values as the others do."""
    parser.add_argument("--grpc-use-ssl", type=to_bool, default=False)
    parser.add_argument("--grpc-use-ssl-mutual", type=to_bool, default=False)
    parser.add_argument("--grpc-server-cert", type=pathlib.Path, help="PEM certificate chain")
    parser.add_argument("--grpc-server-key", type=pathlib.Path, help="PEM private key")
    parser.add_argument(
        "--grpc-root-cert", type=pathlib.Path, help="PEM CAs for client certificates (mutual)"
    )


def from_args(args: argparse.Namespace) -> Files | None:
    """The files to serve gRPC over TLS with, None for plaintext; TlsError when the flags do
    not fit together. `--grpc-use-ssl-mutual` implies `--grpc-use-ssl`, as in Triton."""
    mutual = bool(args.grpc_use_ssl_mutual)
    if not (args.grpc_use_ssl or mutual):
        given = [
            flag
            for flag, value in (
                ("--grpc-server-cert", args.grpc_server_cert),
                ("--grpc-server-key", args.grpc_server_key),
                ("--grpc-root-cert", args.grpc_root_cert),
            )
            if value is not None
        ]
        if given:
            # A certificate given without turning TLS on would silently serve plaintext.
            raise TlsError(f"{', '.join(given)} given without --grpc-use-ssl=true")
        return None
    missing = [
        flag
        for flag, value in (
            ("--grpc-server-cert", args.grpc_server_cert),
            ("--grpc-server-key", args.grpc_server_key),
            ("--grpc-root-cert", args.grpc_root_cert if mutual else True),
        )
        if value is None
    ]
    if missing:
        needs = "--grpc-use-ssl-mutual" if mutual else "--grpc-use-ssl"
        raise TlsError(f"{needs} needs {', '.join(missing)}")
    files = Files(args.grpc_server_cert, args.grpc_server_key, args.grpc_root_cert, mutual)
    server_context(files)  # every file read and checked now, not at the first connection
    return files


def server_context(files: Files) -> ssl.SSLContext:
    """A server context for HTTP/2 over TLS (gRPC): TLS 1.2 or later, ALPN "h2"; with
    `mutual`, a client without a certificate signed by the root CAs is refused in the
    handshake."""
    named = [("--grpc-server-cert", files.cert), ("--grpc-server-key", files.key)]
    if files.root is not None:
        named.append(("--grpc-root-cert", files.root))
    for flag, path in named:
        if not path.is_file():
            raise TlsError(f"{flag} {path}: no such file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    try:
        context.load_cert_chain(files.cert, files.key)
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(
            f"--grpc-server-cert {files.cert} / --grpc-server-key {files.key}: "
            f"not a PEM certificate chain and its key ({exc})"
        ) from exc
    if files.root is not None:
        try:
            context.load_verify_locations(cafile=files.root)
        except (ssl.SSLError, OSError) as exc:
            raise TlsError(f"--grpc-root-cert {files.root}: not PEM certificates ({exc})") from exc
    if files.mutual:
        context.verify_mode = ssl.CERT_REQUIRED
    return context
