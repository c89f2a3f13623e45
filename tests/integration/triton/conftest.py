"""The Triton tier's fixture: the real tritonserver 2.51 installation (tests/triton_server)."""

from __future__ import annotations

import pytest

from tests import triton_server


@pytest.fixture(scope="session")
def triton_install() -> triton_server.Installation:
    try:
        return triton_server.require()
    except triton_server.TritonMissing as exc:
        pytest.fail(str(exc), pytrace=False)
