"""Fixtures shared across the integration tier.

moto's S3 server is defined once, here, for every folder that needs it (the storage
initializer's tests and the operator's failure tests): moto keeps its auth switch and its
backends process-wide, so two session fixtures would each start a server and the second would
find the first one's credentials rules already in force.
"""

from __future__ import annotations

import pathlib
import sys

STORAGE_TESTS = pathlib.Path(__file__).resolve().parent / "storage"
if str(STORAGE_TESTS) not in sys.path:
    sys.path.insert(0, str(STORAGE_TESTS))

from storage_servers import s3_server  # noqa: E402  (a rootless test folder: by bare name)

__all__ = ["s3_server"]
