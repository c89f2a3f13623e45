"""What a ``storageUri`` means: a typed value, and the storage plan the pod builder follows.

Owns: the accepted schemes and their syntax (``pvc://``, ``https://``, ``http://`` on loopback
only, ``s3://``, ``file://``), and the pod-level consequences of each (a read-only claim mount,
or an init container that runs ``storage-init``), as ``StoragePlan``.

Pure: no I/O here, no boto3, no network. The pod builder, the API's validation (a storageUri
the initializer would refuse is refused at admission) and the storage initializer all read
this one grammar.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import re
import urllib.parse
from typing import Any

# The default repository path (InferenceRuntime.modelRepositoryPath can override it).
MODEL_REPOSITORY_PATH = "/mnt/models"
# Names shared with kubeinfer.core.builders (MODELS_VOLUME, the init container's name).
MODEL_VOLUME_NAME = "model-repository"  # the repository root, an emptyDir
CLAIM_VOLUME_NAME = "model-pvc"  # the user's claim, for pvc:// only
INIT_CONTAINER_NAME = "storage-initializer"

_SHA256_FRAGMENT = re.compile(r"^sha256=([0-9a-fA-F]{64})$")
# A PersistentVolumeClaim name is a DNS-1123 subdomain.
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")
# S3 bucket naming rules (the subset every S3-compatible store accepts).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class Scheme(enum.StrEnum):
    PVC = "pvc"
    HTTPS = "https"
    HTTP = "http"
    S3 = "s3"
    FILE = "file"


@dataclasses.dataclass(frozen=True)
class PvcUri:
    """``pvc://CLAIM/path``: the claim is mounted read-only; ``path`` becomes the subPath."""

    claim: str
    path: str  # relative, no leading slash; "" mounts the claim's root

    @property
    def display(self) -> str:
        return f"pvc://{self.claim}/{self.path}"


@dataclasses.dataclass(frozen=True)
class HttpUri:
    """``https://host/path`` (or ``http://`` on 127.0.0.0/8), one object, no fragment in ``url``."""

    url: str
    sha256: str | None  # from a ``#sha256=<hex>`` fragment, lower-case

    @property
    def display(self) -> str:
        # Query strings often carry signatures (presigned URLs): never echo them in logs.
        parts = urllib.parse.urlsplit(self.url)
        query = "?<redacted>" if parts.query else ""
        return f"{parts.scheme}://{parts.netloc}{parts.path}{query}"


@dataclasses.dataclass(frozen=True)
class S3Uri:
    """``s3://bucket/key-or-prefix``; an empty key means the whole bucket."""

    bucket: str
    key: str

    @property
    def display(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclasses.dataclass(frozen=True)
class FileUri:
    """``file:///abs/path``, a file or a directory tree on the fetching machine (development)."""

    path: str  # absolute

    @property
    def display(self) -> str:
        return f"file://{urllib.parse.quote(self.path)}"


StorageUri = PvcUri | HttpUri | S3Uri | FileUri


def parse_storage_uri(uri: str) -> StorageUri:
    """Parse ``uri`` or raise ``ValueError`` with a message that names the problem."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise ValueError(
            "storage URI has no scheme: use pvc://, https://, s3:// or file:// "
            "(http:// is accepted for 127.0.0.0/8 hosts only)"
        )
    scheme = scheme.lower()
    if scheme == Scheme.PVC:
        return _parse_pvc(rest)
    if scheme in (Scheme.HTTPS, Scheme.HTTP):
        return _parse_http(uri)
    if scheme == Scheme.S3:
        return _parse_s3(rest)
    if scheme == Scheme.FILE:
        return _parse_file(uri)
    # Name only the scheme: the rest of an unknown URI may carry credentials.
    raise ValueError(
        f"unsupported storage URI scheme {scheme!r}: use pvc://, https://, s3:// or file://"
    )


def _relative_path(path: str, *, what: str) -> str:
    """Normalise a relative path; refuse ``..`` so a URI can never escape its root."""
    segments = [s for s in path.split("/") if s not in ("", ".")]
    if ".." in segments:
        raise ValueError(f"{what} must not contain '..' segments")
    return "/".join(segments)


def _parse_pvc(rest: str) -> PvcUri:
    claim, _, path = rest.partition("/")
    if not claim:
        raise ValueError("pvc:// URI needs a claim name: pvc://CLAIM/path")
    if len(claim) > 253 or not _DNS1123_SUBDOMAIN.match(claim):
        raise ValueError(f"pvc:// claim name {claim!r} is not a valid Kubernetes object name")
    return PvcUri(claim=claim, path=_relative_path(path, what="pvc:// path"))


def _parse_http(uri: str) -> HttpUri:
    parts = urllib.parse.urlsplit(uri)
    scheme = parts.scheme.lower()
    if parts.username is not None or parts.password is not None:
        # Never echo the URI here: it holds the credentials we are refusing.
        raise ValueError(
            f"{scheme}:// URI must not embed credentials; put them in the storage Secret"
        )
    host = parts.hostname
    if not host:
        raise ValueError(f"{scheme}:// URI needs a host")
    if scheme == Scheme.HTTP and not _is_loopback_ipv4(host):
        raise ValueError(
            f"http:// is accepted only for 127.0.0.0/8 hosts (tests and development), "
            f"not {host!r}: use https://"
        )
    if not parts.path or parts.path.endswith("/"):
        raise ValueError(f"{scheme}:// URI must name one object, not a directory")
    sha256 = None
    if parts.fragment:
        match = _SHA256_FRAGMENT.match(parts.fragment)
        if match is None:
            raise ValueError(f"{scheme}:// URI fragment must be '#sha256=<64 hex digits>'")
        sha256 = match.group(1).lower()
    url = urllib.parse.urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
    return HttpUri(url=url, sha256=sha256)


def _is_loopback_ipv4(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        # Names are refused even if they resolve to loopback: resolution is I/O, and a name
        # could resolve elsewhere at fetch time.
        return False
    return address.version == 4 and address in ipaddress.ip_network("127.0.0.0/8")


def _parse_s3(rest: str) -> S3Uri:
    # Not urlsplit: S3 keys may legally contain '#' and '?', which it would cut off.
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError("s3:// URI needs a bucket: s3://bucket/key-or-prefix")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"s3:// bucket name {bucket!r} is not a valid bucket name")
    if ".." in key.split("/"):
        raise ValueError("s3:// key must not contain '..' segments")
    return S3Uri(bucket=bucket, key=key)


def _parse_file(uri: str) -> FileUri:
    parts = urllib.parse.urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise ValueError("file:// URI must be local: file:///absolute/path")
    path = urllib.parse.unquote(parts.path)
    if not path.startswith("/"):
        raise ValueError("file:// URI needs an absolute path: file:///absolute/path")
    relative = _relative_path(path, what="file:// path")
    return FileUri(path="/" + relative)


class PlanMode(enum.StrEnum):
    MOUNT_CLAIM = "MountClaim"
    INIT_CONTAINER = "InitContainer"


@dataclasses.dataclass(frozen=True)
class StoragePlan:
    """How a pod gets its model; manifest fragments the pod builder splices in as they are.

    The repository root is always an emptyDir (so the operator can mount generated files such
    as config.pbtxt beside the model). Then either:

    - ``MountClaim`` (pvc://): the claim is mounted read-only at
      ``<repository>/<model>/<version>`` with ``subPath`` = the URI's path, which must hold
      that version's files (``model.onnx``...). No init container, no copy.
    - ``InitContainer`` (https://, s3://, file://): ``init_container`` is a partial container
      (name, args, envFrom, volumeMounts, terminationMessagePolicy); the pod builder adds
      ``image`` (the operator image, entrypoint ``kubeinfer``), ``securityContext``,
      ``resources`` and any scratch mounts.

    ``volumes`` go to ``spec.volumes``; ``runtime_volume_mounts`` to the runtime container.
    """

    mode: PlanMode
    repository_path: str
    volumes: tuple[dict[str, Any], ...]
    runtime_volume_mounts: tuple[dict[str, Any], ...]
    init_container: dict[str, Any] | None


def build_storage_plan(
    uri: str | StorageUri,
    *,
    model_name: str = "model",
    version: int | str = 1,
    repository_path: str = MODEL_REPOSITORY_PATH,
    credentials_secret: str | None = None,
) -> StoragePlan:
    """The storage plan for ``uri``: a read-only claim mount, or a ``storage-init`` container.

    ``model_name`` and ``version`` place the model at ``<repository>/<model>/<version>/`` (the
    CLI's ``--model-name`` / ``--version``). ``credentials_secret`` names the Secret whose keys
    (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
    ``AWS_ENDPOINT_URL`` or ``S3_ENDPOINT``, ``HTTP_AUTHORIZATION``...) become the init
    container's environment; the runtime container never sees them.
    """
    parsed = parse_storage_uri(uri) if isinstance(uri, str) else uri
    repository_volume = {"name": MODEL_VOLUME_NAME, "emptyDir": {}}
    repository_mount = {"name": MODEL_VOLUME_NAME, "mountPath": repository_path}
    if isinstance(parsed, PvcUri):
        # Read-only: a bad runtime must not damage a model other services may share.
        claim_mount: dict[str, Any] = {
            "name": CLAIM_VOLUME_NAME,
            "mountPath": f"{repository_path}/{model_name}/{version}",
            "readOnly": True,
        }
        if parsed.path:
            claim_mount["subPath"] = parsed.path
        return StoragePlan(
            mode=PlanMode.MOUNT_CLAIM,
            repository_path=repository_path,
            volumes=(
                repository_volume,
                {
                    "name": CLAIM_VOLUME_NAME,
                    "persistentVolumeClaim": {"claimName": parsed.claim, "readOnly": True},
                },
            ),
            runtime_volume_mounts=(repository_mount, claim_mount),
            init_container=None,
        )

    init: dict[str, Any] = {
        "name": INIT_CONTAINER_NAME,
        "args": [
            "storage-init",
            _unparse(parsed),
            repository_path,
            f"--model-name={model_name}",
            f"--version={version}",
        ],
        "volumeMounts": [dict(repository_mount)],
        # The one-line error storage-init prints becomes the container's termination message,
        # which the status reconciler can quote in the init-failure condition.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if credentials_secret is not None:
        # envFrom, not per-key refs: the Secret's keys are the env names, and a missing
        # Secret stops the pod visibly (CreateContainerConfigError) instead of fetching
        # anonymously.
        init["envFrom"] = [{"secretRef": {"name": credentials_secret}}]
    return StoragePlan(
        mode=PlanMode.INIT_CONTAINER,
        repository_path=repository_path,
        volumes=(repository_volume,),
        runtime_volume_mounts=(repository_mount,),
        init_container=init,
    )


def _unparse(parsed: HttpUri | S3Uri | FileUri) -> str:
    """The canonical URI string (with its full query: the pod needs it, logs never see it)."""
    if isinstance(parsed, HttpUri):
        return parsed.url + (f"#sha256={parsed.sha256}" if parsed.sha256 else "")
    return parsed.display
