"""TLS for the gRPC listener, from Triton's own flags.

Owns `--grpc-use-ssl`, `--grpc-server-cert`, `--grpc-server-key`, `--grpc-root-cert` and
`--grpc-use-ssl-mutual` (tritonserver's names and meaning, so a runtime's arguments carry over):
checking them together once at start-up, so a bad set fails the process with one message that
names the flag or the file; the server-side `ssl.SSLContext` ours serves with; and rotation
(`Rotation`): the files are read again every few seconds, and a changed certificate, key or CA
that loads is served to every new connection (grpcio's frontend takes the same snapshots,
grpc_aio.py), so a Secret that cert-manager renews needs no restart. A changed set that does
not load (a key that is not the new certificate's, half of a swap) is logged and the last good
one kept. HTTP stays plaintext, as Triton's does.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import pathlib
import ssl
import tempfile
from collections.abc import Callable

log = logging.getLogger("kubeinfer_onnx.tls")

# How often the files are read again: the kubelet updates a mounted Secret within about a
# minute of its change, so a few seconds more is nothing, and four small reads are free.
RELOAD_INTERVAL_S = 10.0


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
    parser.add_argument(
        "--grpc-tls-reload-secs",
        type=float,
        default=RELOAD_INTERVAL_S,
        help="read the TLS files again this often, and serve a renewed set to new "
        "connections (0: never)",
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
    load(files)  # every file read and checked now, not at the first connection
    return files


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One reading of the files (cert, key and CAs read together, so a pair is one reading)
    and the server context built from exactly those bytes."""

    pems: tuple[bytes, bytes, bytes | None]
    context: ssl.SSLContext

    @property
    def cert(self) -> bytes:
        return self.pems[0]

    @property
    def key(self) -> bytes:
        return self.pems[1]

    @property
    def root(self) -> bytes | None:
        return self.pems[2]


def _read(files: Files) -> tuple[bytes, bytes, bytes | None]:
    named = [("--grpc-server-cert", files.cert), ("--grpc-server-key", files.key)]
    if files.root is not None:
        named.append(("--grpc-root-cert", files.root))
    pems: list[bytes] = []
    for flag, path in named:
        try:
            pems.append(path.read_bytes())
        except FileNotFoundError:
            raise TlsError(f"{flag} {path}: no such file") from None
        except OSError as exc:
            raise TlsError(f"{flag} {path}: cannot be read ({exc.strerror})") from None
    return pems[0], pems[1], pems[2] if files.root is not None else None


def load(files: Files, pems: tuple[bytes, bytes, bytes | None] | None = None) -> Snapshot:
    """The files read once (or `pems`, already read) and a server context for HTTP/2 over TLS
    (gRPC) built from those bytes: TLS 1.2 or later, ALPN "h2"; with `mutual`, a client without
    a certificate signed by the root CAs is refused in the handshake. Errors name the flag and
    the file as given."""
    pems = pems or _read(files)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    # ssl loads only from files: the bytes just read go to a private folder for as long as
    # the load takes, so the key and the certificate checked against it are one reading.
    try:
        staging = tempfile.TemporaryDirectory(prefix="kubeinfer-tls-")
    except OSError as exc:
        raise TlsError(
            f"no writable temporary folder to load the TLS files from (set TMPDIR): {exc}"
        ) from exc
    with staging as folder:
        cert, key, root = (pathlib.Path(folder) / name for name in ("cert", "key", "root"))
        for path, pem in ((cert, pems[0]), (key, pems[1]), (root, pems[2])):
            if pem is not None:
                path.touch(0o600)
                path.write_bytes(pem)
        try:
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise TlsError(
                f"--grpc-server-cert {files.cert} / --grpc-server-key {files.key}: "
                f"not a PEM certificate chain and its key ({exc})"
            ) from exc
        if pems[2] is not None:
            try:
                context.load_verify_locations(cafile=root)
            except (ssl.SSLError, OSError) as exc:
                raise TlsError(
                    f"--grpc-root-cert {files.root}: not PEM certificates ({exc})"
                ) from exc
    if files.mutual:
        context.verify_mode = ssl.CERT_REQUIRED
    return Snapshot(pems, context)


class Rotation:
    """The files served, read again by `check`; `context` is what the listener serves with.

    Each handshake on `context` is handed the newest good snapshot's context (the SNI callback
    runs for every ClientHello, with or without a server name), so new connections get a
    renewed certificate, key or CA at once and open ones keep theirs. `version` counts the
    snapshots taken, for grpcio's fetcher."""

    def __init__(self, files: Files) -> None:
        self.files = files
        self.current = load(files)
        self.version = 0
        self._rejected: object = None
        self.context = self.current.context
        self.context.sni_callback = self._hand_newest

    def _hand_newest(
        self, connection: ssl.SSLObject, _server_name: str | None, context: ssl.SSLContext
    ) -> None:
        newest = self.current.context
        if newest is not context:
            connection.context = newest

    def check(self) -> bool:
        """Read the files; True when a changed set loaded and is now served. A set that does
        not load is logged once and the last good one kept (a swap read halfway loads on the
        next check)."""
        try:
            pems = _read(self.files)
        except TlsError as exc:
            self._reject(str(exc), exc)
            return False
        if pems == self.current.pems or pems == self._rejected:
            return False
        try:
            snapshot = load(self.files, pems)
        except TlsError as exc:
            self._reject(pems, exc)
            return False
        self.current = snapshot  # before the version: a fetcher that sees it sees this
        self.version += 1
        self._rejected = None
        log.info("gRPC TLS: new certificate files loaded; new connections are served with them")
        return True

    def _reject(self, what: object, exc: TlsError) -> None:
        if what != self._rejected:
            log.warning("gRPC TLS: keeping the files loaded before: %s", exc)
        self._rejected = what
