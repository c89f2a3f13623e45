"""storage-init over S3 against moto's server, with IAM signature checks enforced."""

from __future__ import annotations

import pathlib

import pytest
from storage_servers import MODEL, S3Server

from kubeinfer.storage import credentials, errors, fetch, layout, retrying

FAST = retrying.RetryPolicy(attempts=3, base_delay=0.01)
K = layout.LayoutKind


def _creds(s3: S3Server, key: tuple[str, str]) -> credentials.Credentials:
    return credentials.Credentials(
        aws_access_key_id=key[0], aws_secret_access_key=key[1], s3_endpoint_url=s3.endpoint
    )


def _fetch(s3: S3Server, uri: str, dest: pathlib.Path, **kwargs: object) -> fetch.FetchResult:
    kwargs.setdefault("credentials", _creds(s3, s3.reader))
    kwargs.setdefault("retry", FAST)
    return fetch.fetch(uri, dest, model_name="resnet", **kwargs)  # type: ignore[arg-type]


def _files(root: pathlib.Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_single_object(s3_server: S3Server, tmp_path: pathlib.Path) -> None:
    result = _fetch(s3_server, "s3://models/single/resnet.onnx", tmp_path)
    assert result.layout == layout.Layout(K.SINGLE_FILE, "resnet/1")
    assert (tmp_path / "resnet/1/resnet.onnx").read_bytes() == MODEL
    assert _files(tmp_path) == {"resnet/1/resnet.onnx"}


@pytest.mark.parametrize(
    ("uri", "kind", "files"),
    [
        (
            "s3://models/version-dir",  # no such object: read as the prefix version-dir/
            K.VERSION_DIRECTORY,
            {"resnet/1/model.onnx", "resnet/1/vocab.txt"},
        ),
        (
            "s3://models/model-dir/",
            K.MODEL_DIRECTORY,
            {"resnet/config.pbtxt", "resnet/1/model.onnx"},
        ),
        (
            "s3://models/repo/",
            K.REPOSITORY,
            {"resnet/1/model.onnx", "bert/config.pbtxt", "bert/2/model.onnx"},
        ),
    ],
)
def test_prefix(
    s3_server: S3Server, tmp_path: pathlib.Path, uri: str, kind: layout.LayoutKind, files: set[str]
) -> None:
    result = _fetch(s3_server, uri, tmp_path)
    assert result.layout is not None and result.layout.kind == kind
    assert _files(tmp_path) == files
    assert not list(tmp_path.glob(".storage-init-*"))


def test_prefix_refetch_replaces_the_old_version(
    s3_server: S3Server, tmp_path: pathlib.Path
) -> None:
    stale = tmp_path / "resnet/1/stale.bin"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    _fetch(s3_server, "s3://models/version-dir/", tmp_path)
    assert _files(tmp_path) == {"resnet/1/model.onnx", "resnet/1/vocab.txt"}


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://models/single/missing.onnx", "s3://models/single/missing.onnx: no object or prefix"),
        ("s3://models/nothing-here/", "s3://models/nothing-here/: no object or prefix"),
        ("s3://no-such-bucket/model.onnx", "bucket 'no-such-bucket' does not exist"),
    ],
)
def test_missing(s3_server: S3Server, tmp_path: pathlib.Path, uri: str, message: str) -> None:
    with pytest.raises(errors.ObjectNotFound, match=message):
        _fetch(s3_server, uri, tmp_path)
    assert _files(tmp_path) == set()


def test_unknown_access_key(s3_server: S3Server, tmp_path: pathlib.Path) -> None:
    bad = ("AKIAUNKNOWNKEY000000", "not-the-secret-Qx9v")
    with pytest.raises(errors.AccessDenied, match="InvalidAccessKeyId") as info:
        _fetch(
            s3_server,
            "s3://models/single/resnet.onnx",
            tmp_path,
            credentials=_creds(s3_server, bad),
        )
    assert "s3://models/single/resnet.onnx" in str(info.value)
    _assert_no_secret(info.value, bad[1])


def test_wrong_secret_for_a_real_key(s3_server: S3Server, tmp_path: pathlib.Path) -> None:
    bad = (s3_server.reader[0], "wrong-secret-for-reader")
    with pytest.raises(errors.AccessDenied, match="SignatureDoesNotMatch") as info:
        _fetch(
            s3_server,
            "s3://models/single/resnet.onnx",
            tmp_path,
            credentials=_creds(s3_server, bad),
        )
    _assert_no_secret(info.value, bad[1])


def test_valid_key_without_permission(s3_server: S3Server, tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.AccessDenied, match="AccessDenied") as info:
        _fetch(
            s3_server,
            "s3://models/repo/",
            tmp_path,
            credentials=_creds(s3_server, s3_server.stranger),
        )
    _assert_no_secret(info.value, s3_server.stranger[1])


def test_unreachable_endpoint_is_retried_then_fails(tmp_path: pathlib.Path) -> None:
    creds = credentials.Credentials(
        aws_access_key_id="a", aws_secret_access_key="b", s3_endpoint_url="http://127.0.0.1:9"
    )
    slept: list[float] = []
    with pytest.raises(errors.TransientError, match="gave up after 3 attempts"):
        fetch.fetch(
            "s3://models/single/resnet.onnx",
            tmp_path,
            credentials=creds,
            retry=FAST,
            sleep=slept.append,
        )
    assert slept == [0.01, 0.02]


def _assert_no_secret(error: BaseException, secret: str) -> None:
    """Not in the message, and not anywhere down the exception chain either."""
    seen: BaseException | None = error
    while seen is not None:
        assert secret not in str(seen)
        assert secret not in repr(seen)
        seen = seen.__cause__ or seen.__context__
