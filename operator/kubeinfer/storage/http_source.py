"""Download one object over https:// (or http:// on loopback) into a staging file.

Owns: the HTTP status -> error mapping, retries of transient failures, checksum verification
(``#sha256=`` fragment, else a ``<url>.sha256`` sidecar, plus ``Content-MD5`` when the server
sends it), and the redirect policy. It writes only the file it is given; ``fetch`` decides
where that file finally lands.

Why the standard library and not aiohttp: the init container does one sequential download and
exits, so an event loop buys nothing, and urllib is always there.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import logging
import os
import pathlib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import IO

from kubeinfer.core import storage_uri as uri
from kubeinfer.storage import credentials as credentials_
from kubeinfer.storage import errors, retrying

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
TIMEOUT_SECONDS = 30.0
USER_AGENT = "kubeinfer-storage-init"
# A sidecar holds one digest and maybe a file name; anything longer is not a sidecar.
SIDECAR_MAX_BYTES = 4096


def download(
    source: uri.HttpUri,
    target: pathlib.Path,
    *,
    credentials: credentials_.Credentials,
    policy: retrying.RetryPolicy,
    sleep: Callable[[float], None],
) -> int:
    """Download ``source`` into ``target`` (a new file), verify it, return its size in bytes."""
    expected = source.sha256
    if expected is None:
        expected = retrying.call_with_retries(
            lambda: _read_sidecar(source, credentials),
            policy=policy,
            what=f"{source.display}.sha256",
            sleep=sleep,
        )
    size, actual = retrying.call_with_retries(
        lambda: _download_once(source, target, credentials),
        policy=policy,
        what=source.display,
        sleep=sleep,
    )
    if expected is not None:
        if actual != expected:
            raise errors.ChecksumMismatch(
                f"{source.display}: sha256 mismatch: expected {expected}, got {actual}"
            )
        logger.info("%s: sha256 verified (%s)", source.display, actual)
    else:
        logger.info("%s: no checksum published; sha256 is %s", source.display, actual)
    return size


def _read_sidecar(source: uri.HttpUri, credentials: credentials_.Credentials) -> str | None:
    """The digest in ``<url>.sha256``, or None when there is none to read."""
    parts = urllib.parse.urlsplit(source.url)
    if parts.query:
        # A signed URL's signature covers the path: the sidecar would need its own.
        return None
    sidecar = urllib.parse.urlunsplit(parts._replace(path=parts.path + ".sha256"))
    try:
        with _open(sidecar, credentials) as response:
            text = response.read(SIDECAR_MAX_BYTES).decode("ascii", errors="replace")
    except (errors.ObjectNotFound, errors.AccessDenied):
        # Many stores answer 403 for a missing key; either way there is no sidecar to trust.
        return None
    digest = text.split()[0].lower() if text.split() else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise errors.StorageError(f"{source.display}.sha256 is not a sha256 digest")
    return digest


def _download_once(
    source: uri.HttpUri, target: pathlib.Path, credentials: credentials_.Credentials
) -> tuple[int, str]:
    """One attempt: stream into ``target`` (truncating), return (size, sha256 hex)."""
    sha256 = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    with _open(source.url, credentials, display=source.display) as response:
        declared = response.headers.get("Content-Length")
        content_md5 = response.headers.get("Content-MD5")
        try:
            with open(target, "wb") as out:
                while chunk := response.read(CHUNK_SIZE):
                    out.write(chunk)
                    sha256.update(chunk)
                    md5.update(chunk)
                    size += len(chunk)
                out.flush()
                # Durable before fetch renames it into place: a crash must not leave a
                # renamed-but-empty model file behind.
                os.fsync(out.fileno())
        except (http.client.HTTPException, ConnectionError, TimeoutError) as err:
            raise errors.TransientError(
                f"{source.display}: connection broke mid-download: {type(err).__name__}"
            ) from err
    if declared is not None and declared.isdigit() and int(declared) != size:
        raise errors.TransientError(f"{source.display}: truncated: got {size} of {declared} bytes")
    # Content-MD5 is an explicit digest of the body. ETag is not checked over plain HTTP:
    # servers mint it as an opaque validator (nginx: mtime-size), so it is no checksum.
    if content_md5 is not None:
        actual_md5 = base64.b64encode(md5.digest()).decode("ascii")
        if actual_md5 != content_md5.strip():
            raise errors.ChecksumMismatch(
                f"{source.display}: Content-MD5 mismatch: header {content_md5.strip()}, "
                f"body {actual_md5}"
            )
    return size, sha256.hexdigest()


def _open(
    url: str, credentials: credentials_.Credentials, *, display: str | None = None
) -> http.client.HTTPResponse:
    """GET ``url``; map failures onto the storage errors, naming ``display`` (never secrets)."""
    display = display or uri.HttpUri(url=url, sha256=None).display
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if credentials.http_authorization:
        request.add_header("Authorization", credentials.http_authorization)
    opener = urllib.request.build_opener(_RedirectPolicy())
    try:
        response: http.client.HTTPResponse = opener.open(request, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as err:
        err.close()
        raise _http_error(display, err.code, err.reason) from None
    except urllib.error.URLError as err:
        # Connection refused, DNS failure, TLS handshake: the network may come back.
        raise errors.TransientError(f"{display}: cannot connect: {err.reason}") from None
    except (http.client.HTTPException, ConnectionError, TimeoutError) as err:
        raise errors.TransientError(f"{display}: {type(err).__name__}: {err}") from None
    return response


def _http_error(display: str, status: int, reason: object) -> errors.StorageError:
    if status in (404, 410):
        return errors.ObjectNotFound(f"{display}: object not found (HTTP {status})")
    if status in (401, 403):
        return errors.AccessDenied(
            f"{display}: access denied (HTTP {status} {reason}): check "
            f"{credentials_.HTTP_AUTHORIZATION} in the storage Secret"
        )
    if status in (408, 425, 429) or status >= 500:
        return errors.TransientError(f"{display}: HTTP {status} {reason}")
    return errors.StorageError(f"{display}: HTTP {status} {reason}")


class _RedirectPolicy(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to URIs we would accept, and never carry the token to a new host.

    Object stores redirect to signed URLs on another host; an Authorization header sent
    there would leak the token and break the signature.
    """

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        try:
            target = uri.parse_storage_uri(newurl.split("#", 1)[0])
        except ValueError as err:
            raise errors.StorageError(f"refusing redirect (HTTP {code}): {err}") from None
        if not isinstance(target, uri.HttpUri):
            # urllib would happily follow to file:// and read local files; we never do.
            raise errors.StorageError(f"refusing redirect (HTTP {code}) to a non-HTTP URI")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and (
            urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc
        ):
            new.remove_header("Authorization")
        return new
