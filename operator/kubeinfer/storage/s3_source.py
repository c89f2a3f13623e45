"""Download one S3 object, or every object under a prefix, into a staging directory.

Owns: the boto3 client (endpoint, region, credentials, timeouts), the S3 error code -> storage
error mapping, per-object retries, and the ETag check. It writes only under the staging
directory it is given, and refuses keys that would escape it.

Why boto3: it is the reference S3 client (SigV4 signing, S3-compatible endpoints such as
MinIO and moto, the AWS credential chain for IRSA), and botocore validates the flexible
``x-amz-checksum-*`` digests on its own when the store sends them.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import pathlib
import re
from collections.abc import Callable
from typing import Any

import boto3
import botocore
import botocore.config
import botocore.exceptions

from kubeinfer.core import storage_uri as uri
from kubeinfer.storage import credentials as credentials_
from kubeinfer.storage import errors, layout, retrying

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
DEFAULT_REGION = "us-east-1"
# A single-part upload's ETag is the hex MD5 of the body; multipart ones end in "-N".
_MD5_ETAG = re.compile(r'^"?([0-9a-f]{32})"?$')

_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
    "AccountProblem",
    "401",
    "403",
}
_TRANSIENT = {
    "SlowDown",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "Throttling",
    "ThrottlingException",
    "503",
    "500",
}
_TRANSIENT_EXCEPTIONS = (
    botocore.exceptions.HTTPClientError,  # connection closed, read/connect timeouts
    botocore.exceptions.ConnectionError,  # endpoint unreachable
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.IncompleteReadError,
)


@dataclasses.dataclass(frozen=True)
class Downloaded:
    single_file: bool
    files: tuple[str, ...]  # relative to the staging directory
    size: int


class _NoSuchKey(errors.ObjectNotFound):
    """The exact key is missing: ``download`` then tries it as a prefix."""


def download(
    source: uri.S3Uri,
    staging: pathlib.Path,
    *,
    credentials: credentials_.Credentials,
    policy: retrying.RetryPolicy,
    sleep: Callable[[float], None],
) -> Downloaded:
    """Fetch ``source`` as one object if the key exists, else as a prefix, into ``staging``."""
    client = _client(credentials)
    if source.key and not source.key.endswith("/"):
        name = layout.safe_relative_path(source.key.rsplit("/", 1)[-1])
        try:
            size = retrying.call_with_retries(
                lambda: _get_object(client, source, source.key, staging / name),
                policy=policy,
                what=source.display,
                sleep=sleep,
            )
            return Downloaded(single_file=True, files=(name,), size=size)
        except _NoSuchKey:
            # No object by that name: "s3://b/models/resnet" may mean the prefix ".../resnet/".
            pass
    prefix = f"{source.key}/" if source.key and not source.key.endswith("/") else source.key
    keys = retrying.call_with_retries(
        lambda: _list_prefix(client, source, prefix),
        policy=policy,
        what=source.display,
        sleep=sleep,
    )
    if not keys:
        raise errors.ObjectNotFound(f"{source.display}: no object or prefix by that name")
    files: list[str] = []
    total = 0
    for key in keys:
        relative = _relative_key(source, key, prefix)
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        total += retrying.call_with_retries(
            functools.partial(_get_object, client, source, key, target),
            policy=policy,
            what=f"s3://{source.bucket}/{key}",
            sleep=sleep,
        )
        files.append(relative)
    return Downloaded(single_file=False, files=tuple(files), size=total)


def _client(credentials: credentials_.Credentials) -> Any:
    session = boto3.session.Session(
        aws_access_key_id=credentials.aws_access_key_id,
        aws_secret_access_key=credentials.aws_secret_access_key,
        aws_session_token=credentials.aws_session_token,
        region_name=credentials.s3_region or DEFAULT_REGION,
    )
    options: dict[str, Any] = {
        # One attempt per call: retrying.call_with_retries owns the schedule, so --retries
        # means the same for every scheme and attempts do not multiply.
        "retries": {"total_max_attempts": 1},
        "connect_timeout": 10,
        "read_timeout": 60,
    }
    if credentials.s3_endpoint_url:
        # S3-compatible stores (MinIO, moto, Ceph) rarely serve virtual-host buckets.
        options["s3"] = {"addressing_style": "path"}
    if credentials.aws_access_key_id is None and session.get_credentials() is None:
        # Nothing in the Secret or the pod's identity: try a public bucket anonymously.
        logger.info("no S3 credentials found; sending unsigned requests")
        options["signature_version"] = botocore.UNSIGNED
    return session.client(
        "s3",
        endpoint_url=credentials.s3_endpoint_url,
        config=botocore.config.Config(**options),
    )


def _relative_key(source: uri.S3Uri, key: str, prefix: str) -> str:
    try:
        return layout.safe_relative_path(key[len(prefix) :])
    except ValueError as err:
        raise errors.StorageError(f"{source.display}: {err}") from None


def _list_prefix(client: Any, source: uri.S3Uri, prefix: str) -> list[str]:
    keys: list[str] = []
    try:
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=source.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = str(item["Key"])
                # "folder/" placeholder objects that consoles create carry no model bytes.
                if not key.endswith("/"):
                    keys.append(key)
    except (botocore.exceptions.ClientError, *_TRANSIENT_EXCEPTIONS) as err:
        raise _error(source, err) from None
    return keys


def _get_object(client: Any, source: uri.S3Uri, key: str, target: pathlib.Path) -> int:
    """One attempt at one object: stream into ``target`` and check its ETag; return size."""
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    try:
        response = client.get_object(Bucket=source.bucket, Key=key)
        body = response["Body"]
        with open(target, "wb") as out:
            for chunk in body.iter_chunks(CHUNK_SIZE):
                out.write(chunk)
                md5.update(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
    except (botocore.exceptions.ClientError, *_TRANSIENT_EXCEPTIONS) as err:
        raise _error(source, err, key=key) from None
    except botocore.exceptions.FlexibleChecksumError as err:
        raise errors.ChecksumMismatch(f"s3://{source.bucket}/{key}: {err}") from None
    declared = response.get("ContentLength")
    if isinstance(declared, int) and declared != size:
        raise errors.TransientError(
            f"s3://{source.bucket}/{key}: truncated: got {size} of {declared} bytes"
        )
    _check_etag(source, key, response, md5.hexdigest())
    return size


def _check_etag(source: uri.S3Uri, key: str, response: dict[str, Any], md5: str) -> None:
    # Only where the ETag is an MD5: single-part uploads without SSE-KMS/SSE-C encryption.
    match = _MD5_ETAG.match(str(response.get("ETag", "")))
    encrypted = response.get("ServerSideEncryption") == "aws:kms" or bool(
        response.get("SSECustomerAlgorithm")
    )
    if match is None or encrypted:
        return
    if match.group(1) != md5:
        raise errors.ChecksumMismatch(
            f"s3://{source.bucket}/{key}: ETag MD5 mismatch: expected {match.group(1)}, got {md5}"
        )


def _error(source: uri.S3Uri, err: Exception, *, key: str | None = None) -> errors.StorageError:
    where = f"s3://{source.bucket}/{key}" if key is not None else source.display
    if isinstance(err, _TRANSIENT_EXCEPTIONS):
        return errors.TransientError(f"{where}: {type(err).__name__}")
    assert isinstance(err, botocore.exceptions.ClientError)
    code = str(err.response.get("Error", {}).get("Code", ""))
    status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    if code == "NoSuchBucket":
        return errors.ObjectNotFound(f"{where}: bucket {source.bucket!r} does not exist")
    if code in ("NoSuchKey", "404", "NotFound"):
        return _NoSuchKey(f"{where}: object not found ({code})")
    if code in _DENIED:
        return errors.AccessDenied(
            f"{where}: access denied ({code}): check {credentials_.ACCESS_KEY_ID} and "
            f"{credentials_.SECRET_ACCESS_KEY} in the storage Secret"
        )
    if code in _TRANSIENT or status >= 500 or status == 429:
        return errors.TransientError(f"{where}: {code or status}")
    return errors.StorageError(f"{where}: S3 error {code or status}")
