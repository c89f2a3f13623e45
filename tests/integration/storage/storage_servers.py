"""Loopback servers for the storage initializer: an HTTP file server and moto's S3 server.

A module of its own (not conftest.py) so tests can import its constants and types by a name
that no other conftest shadows; conftest.py re-exports the fixtures.

Both bind 127.0.0.1 on a free port; nothing here dials anywhere else.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import http.server
import json
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

MODEL = b"\x08\x07onnx-model-bytes" * 4096  # ~74 KiB, several read chunks
TOKEN = "http-token-Zm9vYmFy"


@dataclasses.dataclass
class HttpServer:
    base: str
    hits: collections.Counter[str]
    headers: dict[str, dict[str, str]]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    # Set per server (see _serve): request counters and the redirect partner's base URL.
    hits: collections.Counter[str]
    headers_seen: dict[str, dict[str, str]]
    partner: str

    def log_message(self, *args: Any) -> None:  # keep pytest output quiet
        pass

    def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        headers.setdefault("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path
        self.hits[path] += 1
        self.headers_seen[path] = dict(self.headers.items())
        good_md5 = base64.b64encode(hashlib.md5(MODEL).digest()).decode()
        if path in ("/models/model.onnx", "/plain/model.onnx", "/corrupt/model.onnx"):
            self._send(200, MODEL)
        elif path == "/models/model.onnx.sha256":
            self._send(200, f"{_digest(MODEL)}  model.onnx\n".encode())
        elif path == "/corrupt/model.onnx.sha256":
            self._send(200, f"{_digest(b'other')}  model.onnx\n".encode())
        elif path == "/md5/model.onnx":
            self._send(200, MODEL, Content_MD5=good_md5)
        elif path == "/bad-md5/model.onnx":
            self._send(200, MODEL, Content_MD5=base64.b64encode(b"0" * 16).decode())
        elif path == "/private/model.onnx":
            auth = self.headers.get("Authorization")
            if auth is None:
                self._send(401, b"login", WWW_Authenticate="Bearer")
            elif auth != f"Bearer {TOKEN}":
                self._send(403, b"forbidden")
            else:
                self._send(200, MODEL)
        elif path == "/flaky/model.onnx":
            # Fails twice, then serves: the retry loop must ride it out.
            self._send(503, b"busy") if self.hits[path] <= 2 else self._send(200, MODEL)
        elif path == "/down/model.onnx":
            self._send(503, b"busy")
        elif path == "/truncated/model.onnx":
            self._send(200, MODEL[:1000], Content_Length=str(len(MODEL)))
        elif path == "/redirect/model.onnx":
            self._send(302, Location=f"{self.partner}/private/model.onnx")
        elif path == "/redirect-same-host/model.onnx":
            self._send(302, Location="/private/model.onnx")
        elif path == "/redirect-file/model.onnx":
            self._send(302, Location="file:///etc/hostname")
        elif path == "/redirect-plain-http/model.onnx":
            # Never dialled: the redirect policy refuses http:// off loopback first.
            self._send(302, Location="http://example.com/model.onnx")
        else:
            self._send(404, b"not found")


def _serve(partner: str = "") -> tuple[http.server.ThreadingHTTPServer, HttpServer]:
    hits: collections.Counter[str] = collections.Counter()
    seen: dict[str, dict[str, str]] = {}
    handler = type("Handler", (_Handler,), {"hits": hits, "headers_seen": seen, "partner": partner})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # A short poll keeps shutdown() (once per test) from costing half a second.
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    host, port = server.server_address[:2]
    return server, HttpServer(base=f"http://{host!s}:{port}", hits=hits, headers=seen)


@pytest.fixture
def http_pair() -> Iterator[tuple[HttpServer, HttpServer]]:
    """Two servers on different ports (different hosts, as far as URLs go); the first one
    redirects /redirect/ to the second."""
    second_server, second = _serve()
    first_server, first = _serve(partner=second.base)
    yield first, second
    for server in (first_server, second_server):
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_server(http_pair: tuple[HttpServer, HttpServer]) -> HttpServer:
    return http_pair[0]


# --- S3 -------------------------------------------------------------------------------------

BUCKET = "models"
OBJECTS = {
    "single/resnet.onnx": MODEL,
    "version-dir/model.onnx": MODEL,
    "version-dir/vocab.txt": b"a\nb\n",
    "model-dir/config.pbtxt": b'name: "resnet"\n',
    "model-dir/1/model.onnx": MODEL,
    "repo/resnet/1/model.onnx": MODEL,
    "repo/bert/config.pbtxt": b'name: "bert"\n',
    "repo/bert/2/model.onnx": MODEL,
    "repo/": b"",  # a console-made "folder" marker: must be skipped
}
READER_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:ListBucket"],
            # Every bucket, so a missing bucket reads NoSuchBucket rather than AccessDenied.
            "Resource": ["arn:aws:s3:::*"],
        }
    ],
}


@dataclasses.dataclass(frozen=True)
class S3Server:
    endpoint: str
    reader: tuple[str, str]  # (access key id, secret): may read the bucket
    stranger: tuple[str, str]  # a valid key with no permissions


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3+IAM server with a bucket, two IAM users, and signature checks turned on.

    moto accepts any credentials by default; POST /moto-api/reset-auth with 0 makes every
    later request authenticate against its IAM (unknown key -> InvalidAccessKeyId, no
    permission -> AccessDenied). Setup runs before that, with dummy admin keys.
    """
    # Dev dependencies (requirements-dev.txt): missing, the test fails naming them.
    import boto3
    import moto.server as moto_server

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    admin = {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "admin",
        "aws_secret_access_key": "admin",
    }
    s3 = boto3.client("s3", **admin)
    s3.create_bucket(Bucket=BUCKET)
    for key, body in OBJECTS.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    iam = boto3.client("iam", **admin)
    keys = {}
    for user in ("reader", "stranger"):
        iam.create_user(UserName=user)
        created = iam.create_access_key(UserName=user)["AccessKey"]
        keys[user] = (created["AccessKeyId"], created["SecretAccessKey"])
    iam.put_user_policy(
        UserName="reader", PolicyName="read-models", PolicyDocument=json.dumps(READER_POLICY)
    )
    previous = _reset_auth(endpoint, "0")
    try:
        _check_listing_is_authorized_as_on_aws(endpoint, keys["reader"])
        yield S3Server(endpoint=endpoint, reader=keys["reader"], stranger=keys["stranger"])
    finally:
        _reset_auth(endpoint, previous)
        server.stop()


def _check_listing_is_authorized_as_on_aws(endpoint: str, reader: tuple[str, str]) -> None:
    """Fail at set-up, naming the cause, when this moto denies the reader a listing.

    AWS authorizes ListObjectsV2 as s3:ListBucket, which READER_POLICY allows; moto 5.2.6
    checks it as s3:ListObjectsV2 and denies it, which would fail every prefix test with an
    AccessDenied that reads like a bug in the storage initializer.
    """
    import boto3
    import botocore.exceptions
    import moto

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=reader[0],
        aws_secret_access_key=reader[1],
    )
    try:
        s3.list_objects_v2(Bucket=BUCKET, MaxKeys=1)
    except botocore.exceptions.ClientError as err:
        raise RuntimeError(
            f"moto {moto.__version__} denies ListObjectsV2 to a policy that allows "
            "s3:ListBucket (the action AWS checks for it): install the moto that "
            "requirements-dev.txt pins (`make venv`)"
        ) from err


def _reset_auth(endpoint: str, count: str) -> str:
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=count.encode(),
        method="POST",
        # Not urllib's default form type: werkzeug would parse the body away as a form.
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.load(response)["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"])


@pytest.fixture(autouse=True)
def no_ambient_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Keep boto3 off the developer's ~/.aws and off the instance-metadata address."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "S3_ENDPOINT",
        "STORAGE_HTTP_TOKEN",
        "HTTP_AUTHORIZATION",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
