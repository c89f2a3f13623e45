"""Fixtures for the storage initializer's integration tests (defined in storage_servers;
moto's S3 server is shared from tests/integration/conftest.py)."""

from storage_servers import http_pair, http_server, no_ambient_aws

__all__ = ["http_pair", "http_server", "no_ambient_aws"]
