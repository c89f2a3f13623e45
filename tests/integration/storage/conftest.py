"""Fixtures for the storage initializer's integration tests (defined in storage_servers)."""

from storage_servers import http_pair, http_server, no_ambient_aws, s3_server

__all__ = ["http_pair", "http_server", "no_ambient_aws", "s3_server"]
