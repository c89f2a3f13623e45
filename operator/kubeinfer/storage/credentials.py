"""Credentials for the object stores, read from the environment the storage Secret fills.

Owns: which environment variables carry secrets and endpoints, and ``redact``, which every
message that may quote a server or library goes through before it is printed. The values are
kept out of ``repr`` so a stray log of the object cannot leak them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"
SESSION_TOKEN = "AWS_SESSION_TOKEN"
# AWS_ENDPOINT_URL is what the AWS SDKs read; S3_ENDPOINT is what KServe users already set.
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "S3_ENDPOINT")
REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")
# HTTP_AUTHORIZATION is the whole header value ("Bearer x", "Basic y"), as the
# InferenceService API documents; STORAGE_HTTP_TOKEN is a bare bearer token, for convenience.
HTTP_AUTHORIZATION = "HTTP_AUTHORIZATION"
HTTP_TOKEN = "STORAGE_HTTP_TOKEN"

_REDACTED = "<redacted>"


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What the fetchers may use; every field is optional (public objects need none)."""

    aws_access_key_id: str | None = dataclasses.field(default=None, repr=False)
    aws_secret_access_key: str | None = dataclasses.field(default=None, repr=False)
    aws_session_token: str | None = dataclasses.field(default=None, repr=False)
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    # The Authorization header for the https:// origin (never sent across a redirect to
    # another host).
    http_authorization: str | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Credentials:
        def first(names: tuple[str, ...]) -> str | None:
            return next((environ[n] for n in names if environ.get(n)), None)

        return cls(
            aws_access_key_id=environ.get(ACCESS_KEY_ID) or None,
            aws_secret_access_key=environ.get(SECRET_ACCESS_KEY) or None,
            aws_session_token=environ.get(SESSION_TOKEN) or None,
            s3_endpoint_url=first(ENDPOINT_VARIABLES),
            s3_region=first(REGION_VARIABLES),
            http_authorization=_authorization(environ),
        )

    def secrets(self) -> tuple[str, ...]:
        """Every value that must never be printed (the access key id too, to be safe)."""
        values = [self.aws_access_key_id, self.aws_secret_access_key, self.aws_session_token]
        if self.http_authorization:
            values.append(self.http_authorization)
            # The credential alone too ("Bearer <this>"): a message may quote it bare.
            values.append(self.http_authorization.partition(" ")[2].strip())
        return tuple(v for v in values if v)

    def redact(self, text: str) -> str:
        """``text`` with every credential value replaced: for messages quoting servers."""
        # Longest first, so a secret containing another is not left half-visible.
        for secret in sorted(self.secrets(), key=len, reverse=True):
            text = text.replace(secret, _REDACTED)
        return text


def _authorization(environ: Mapping[str, str]) -> str | None:
    if environ.get(HTTP_AUTHORIZATION):
        return environ[HTTP_AUTHORIZATION]
    if environ.get(HTTP_TOKEN):
        return f"Bearer {environ[HTTP_TOKEN]}"
    return None
