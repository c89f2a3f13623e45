"""storage-init over HTTP against a loopback server: checksums, retries, errors, redirects."""

from __future__ import annotations

import hashlib
import pathlib

import pytest
from storage_servers import MODEL, TOKEN, HttpServer

from kubeinfer.storage import credentials, errors, fetch, layout, retrying

NO_CREDENTIALS = credentials.Credentials()
FAST = retrying.RetryPolicy(attempts=3, base_delay=0.01)


def _fetch(url: str, dest: pathlib.Path, **kwargs: object) -> fetch.FetchResult:
    kwargs.setdefault("credentials", NO_CREDENTIALS)
    kwargs.setdefault("retry", FAST)
    return fetch.fetch(url, dest, model_name="resnet", **kwargs)  # type: ignore[arg-type]


def _bearer(token: str | None) -> credentials.Credentials:
    return credentials.Credentials(http_authorization=f"Bearer {token}" if token else None)


def _assert_clean(dest: pathlib.Path) -> None:
    """No half-written model and no staging directory left for the runtime to trip on."""
    assert not list(dest.rglob("model.onnx"))
    assert not list(dest.glob(".storage-init-*"))


def test_download_with_sidecar_checksum(http_server: HttpServer, tmp_path: pathlib.Path) -> None:
    result = _fetch(f"{http_server.base}/models/model.onnx", tmp_path)
    target = tmp_path / "resnet" / "1" / "model.onnx"
    assert target.read_bytes() == MODEL
    assert result.layout == layout.Layout(layout.LayoutKind.SINGLE_FILE, "resnet/1")
    assert result.installed == (target,)
    assert http_server.hits["/models/model.onnx.sha256"] == 1
    assert not list(tmp_path.glob(".storage-init-*"))


def test_fragment_checksum_wins_and_skips_the_sidecar(
    http_server: HttpServer, tmp_path: pathlib.Path
) -> None:
    digest = hashlib.sha256(MODEL).hexdigest()
    _fetch(f"{http_server.base}/plain/model.onnx#sha256={digest}", tmp_path)
    assert (tmp_path / "resnet/1/model.onnx").read_bytes() == MODEL
    assert http_server.hits["/plain/model.onnx.sha256"] == 0


def test_no_checksum_published_still_downloads(
    http_server: HttpServer, tmp_path: pathlib.Path
) -> None:
    _fetch(f"{http_server.base}/plain/model.onnx", tmp_path)
    assert (tmp_path / "resnet/1/model.onnx").read_bytes() == MODEL
    assert http_server.hits["/plain/model.onnx.sha256"] == 1  # looked, found 404, moved on


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/corrupt/model.onnx", "sha256 mismatch"),
        (f"/plain/model.onnx#sha256={'0' * 64}", "sha256 mismatch"),
        ("/bad-md5/model.onnx", "Content-MD5 mismatch"),
    ],
)
def test_checksum_mismatch_fails_and_installs_nothing(
    http_server: HttpServer, tmp_path: pathlib.Path, path: str, message: str
) -> None:
    with pytest.raises(errors.ChecksumMismatch, match=message):
        _fetch(f"{http_server.base}{path}", tmp_path)
    _assert_clean(tmp_path)


def test_content_md5_is_verified(http_server: HttpServer, tmp_path: pathlib.Path) -> None:
    _fetch(f"{http_server.base}/md5/model.onnx", tmp_path)
    assert (tmp_path / "resnet/1/model.onnx").read_bytes() == MODEL


def test_missing_object_names_the_uri(http_server: HttpServer, tmp_path: pathlib.Path) -> None:
    url = f"{http_server.base}/nope/model.onnx"
    with pytest.raises(errors.ObjectNotFound, match="object not found") as info:
        _fetch(url, tmp_path)
    assert url in str(info.value)
    assert http_server.hits["/nope/model.onnx"] == 1  # a 404 is never retried
    _assert_clean(tmp_path)


@pytest.mark.parametrize(("token", "status"), [(None, 401), ("wrong-token-abc", 403)])
def test_bad_credentials(
    http_server: HttpServer, tmp_path: pathlib.Path, token: str | None, status: int
) -> None:
    url = f"{http_server.base}/private/model.onnx"
    with pytest.raises(errors.AccessDenied, match=f"HTTP {status}") as info:
        _fetch(url, tmp_path, credentials=_bearer(token))
    assert url in str(info.value)
    assert "HTTP_AUTHORIZATION" in str(info.value)
    if token:
        assert token not in str(info.value)
    assert http_server.hits["/private/model.onnx"] == 1  # credentials errors are not retried
    _assert_clean(tmp_path)


def test_good_token(http_server: HttpServer, tmp_path: pathlib.Path) -> None:
    _fetch(
        f"{http_server.base}/private/model.onnx",
        tmp_path,
        credentials=_bearer(TOKEN),
    )
    assert (tmp_path / "resnet/1/model.onnx").read_bytes() == MODEL


def test_flaky_endpoint_is_retried_with_backoff(
    http_server: HttpServer, tmp_path: pathlib.Path
) -> None:
    slept: list[float] = []
    _fetch(f"{http_server.base}/flaky/model.onnx", tmp_path, sleep=slept.append)
    assert (tmp_path / "resnet/1/model.onnx").read_bytes() == MODEL
    assert http_server.hits["/flaky/model.onnx"] == 3
    assert slept == [0.01, 0.02]


@pytest.mark.parametrize(
    ("path", "message"), [("/down/model.onnx", "HTTP 503"), ("/truncated/model.onnx", "truncated")]
)
def test_retries_are_bounded(
    http_server: HttpServer, tmp_path: pathlib.Path, path: str, message: str
) -> None:
    with pytest.raises(errors.TransientError, match=f"gave up after 3 attempts.*{message}"):
        _fetch(f"{http_server.base}{path}", tmp_path, sleep=lambda _: None)
    assert http_server.hits[path] == 3
    _assert_clean(tmp_path)


def test_connection_refused_is_transient(tmp_path: pathlib.Path) -> None:
    # Port 9 (discard) on loopback: nothing listens in the test environment.
    with pytest.raises(errors.TransientError, match="cannot connect"):
        _fetch("http://127.0.0.1:9/model.onnx", tmp_path, sleep=lambda _: None)


def test_token_follows_same_host_redirects_only(
    http_pair: tuple[HttpServer, HttpServer], tmp_path: pathlib.Path
) -> None:
    first, second = http_pair
    with_token = _bearer(TOKEN)
    _fetch(f"{first.base}/redirect-same-host/model.onnx", tmp_path, credentials=with_token)
    assert first.headers["/private/model.onnx"]["Authorization"] == f"Bearer {TOKEN}"
    # Another host (here: another port) never sees the token, so its private object is 401.
    with pytest.raises(errors.AccessDenied, match="HTTP 401"):
        _fetch(f"{first.base}/redirect/model.onnx", tmp_path / "x", credentials=with_token)
    assert "Authorization" not in second.headers["/private/model.onnx"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/redirect-plain-http/model.onnx", "refusing redirect.*127.0.0.0/8"),
        ("/redirect-file/model.onnx", "not allowed"),
    ],
)
def test_redirects_off_policy_are_refused(
    http_server: HttpServer, tmp_path: pathlib.Path, path: str, message: str
) -> None:
    with pytest.raises(errors.StorageError, match=message):
        _fetch(f"{http_server.base}{path}", tmp_path)
    _assert_clean(tmp_path)


def test_refetch_replaces_the_file_in_place(
    http_server: HttpServer, tmp_path: pathlib.Path
) -> None:
    target = tmp_path / "resnet/1/model.onnx"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"stale")
    (tmp_path / ".storage-init-crashed").mkdir()  # left by a killed attempt
    _fetch(f"{http_server.base}/models/model.onnx", tmp_path)
    assert target.read_bytes() == MODEL
    assert not list(tmp_path.glob(".storage-init-*"))
