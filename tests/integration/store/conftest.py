"""Fixtures of the store integration tests: a real etcd per module and a store per test."""

from etcd_fixture import etcd_server, etcd_store

__all__ = ["etcd_server", "etcd_store"]
