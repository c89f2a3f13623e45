"""Fixtures for the operator's integration tests: moto's S3 server from the storage tests."""

from __future__ import annotations

import pathlib
import sys

STORAGE_TESTS = pathlib.Path(__file__).resolve().parents[1] / "storage"
if str(STORAGE_TESTS) not in sys.path:
    sys.path.insert(0, str(STORAGE_TESTS))

from storage_servers import s3_server  # noqa: E402  (a rootless test folder: by bare name)

__all__ = ["s3_server"]
