"""The storage initializer's errors, and the exit code each maps to.

Owns: the error taxonomy callers branch on (missing object, bad credentials, checksum, transient)
and the rule that every message names the URI (in its redacted ``display`` form) and never a
credential. No I/O here.
"""

from __future__ import annotations


class StorageError(Exception):
    """A fetch failed; ``str(err)`` is the one line the init container prints."""

    exit_code = 1


class ObjectNotFound(StorageError):
    """The object, prefix or bucket does not exist (HTTP 404, NoSuchKey, NoSuchBucket)."""

    exit_code = 3


class AccessDenied(StorageError):
    """The store refused the credentials (HTTP 401/403, AccessDenied, InvalidAccessKeyId)."""

    exit_code = 4


class ChecksumMismatch(StorageError):
    """The bytes arrived but do not match the promised digest; not retried (see retrying)."""

    exit_code = 5


class TransientError(StorageError):
    """Worth another attempt: connection errors, timeouts, 5xx, 429, truncated bodies."""


class InvalidModelConfig(StorageError):
    """The config.pbtxt shipped with the model (or the generated one) cannot be read."""

    exit_code = 6
