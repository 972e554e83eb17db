"""Fixtures for the storage integration tests (defined in storage_servers.py)."""

from storage_servers import http_files, moto, nanio  # noqa: F401 - re-exported fixtures
