"""Table tests for storage URI parsing (kubeinfer.storage.uri)."""

from __future__ import annotations

import pytest

from kubeinfer.core import storage_uri as uri

DIGEST = "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pvc://models/resnet", uri.PvcUri(claim="models", path="resnet")),
        ("pvc://models/a/./b//c/", uri.PvcUri(claim="models", path="a/b/c")),
        ("pvc://models", uri.PvcUri(claim="models", path="")),
        ("pvc://my.claim-1/", uri.PvcUri(claim="my.claim-1", path="")),
        ("https://example.com/m/model.onnx", uri.HttpUri("https://example.com/m/model.onnx", None)),
        (
            f"https://example.com/model.onnx#sha256={DIGEST.upper()}",
            uri.HttpUri("https://example.com/model.onnx", DIGEST),
        ),
        (
            "HTTPS://example.com:8443/model.onnx?X-Amz-Signature=abc",
            uri.HttpUri("https://example.com:8443/model.onnx?X-Amz-Signature=abc", None),
        ),
        ("http://127.0.0.1:8080/model.onnx", uri.HttpUri("http://127.0.0.1:8080/model.onnx", None)),
        ("http://127.1.2.3/model.onnx", uri.HttpUri("http://127.1.2.3/model.onnx", None)),
        ("s3://models/resnet/model.onnx", uri.S3Uri(bucket="models", key="resnet/model.onnx")),
        ("s3://models/resnet/", uri.S3Uri(bucket="models", key="resnet/")),
        ("s3://models", uri.S3Uri(bucket="models", key="")),
        ("s3://my.bucket-1/a#b?c", uri.S3Uri(bucket="my.bucket-1", key="a#b?c")),
        ("file:///srv/models/resnet", uri.FileUri(path="/srv/models/resnet")),
        ("file://localhost/srv/my%20model", uri.FileUri(path="/srv/my model")),
    ],
)
def test_parse_accepts(text: str, expected: uri.StorageUri) -> None:
    assert uri.parse_storage_uri(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gs://bucket/model", "unsupported storage URI scheme 'gs'"),
        ("hdfs://namenode/model", "unsupported storage URI scheme 'hdfs'"),
        ("ftp://user:hunter2@host/model", "unsupported storage URI scheme 'ftp'"),
        ("/just/a/path", "has no scheme"),
        ("pvc://", "needs a claim name"),
        ("pvc://Bad_Claim/x", "not a valid Kubernetes object name"),
        ("pvc://models/../etc", "'..'"),
        ("http://example.com/model.onnx", "127.0.0.0/8"),
        ("http://localhost/model.onnx", "127.0.0.0/8"),
        ("http://10.0.0.1/model.onnx", "127.0.0.0/8"),
        ("http://[::1]/model.onnx", "127.0.0.0/8"),
        ("https:///model.onnx", "needs a host"),
        ("https://example.com/models/", "one object"),
        ("https://example.com", "one object"),
        ("https://example.com/m.onnx#md5=abc", "#sha256=<64 hex digits>"),
        ("https://example.com/m.onnx#sha256=abc", "#sha256=<64 hex digits>"),
        ("s3://", "needs a bucket"),
        ("s3://Bad_Bucket/key", "not a valid bucket name"),
        ("s3://models/a/../b", "'..'"),
        ("file://remote-host/srv/model", "must be local"),
        ("file:///srv/../etc", "'..'"),
    ],
)
def test_parse_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("?", r"\?")) as info:
        uri.parse_storage_uri(text)
    assert message in str(info.value)


def test_credentials_in_a_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(ValueError, match="must not embed credentials") as info:
        uri.parse_storage_uri("https://alice:hunter2@example.com/model.onnx")
    assert "hunter2" not in str(info.value)
    assert "alice" not in str(info.value)


def test_display_hides_query_strings() -> None:
    parsed = uri.parse_storage_uri("https://example.com/m.onnx?X-Amz-Signature=secret")
    assert parsed.display == "https://example.com/m.onnx?<redacted>"
