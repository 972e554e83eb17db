"""The gRPC edge of the etcd adapter: the channel, the generated etcd v3 stubs, error translation.

``etcd3aio`` is used only for its generated etcd v3 protobuf messages and stubs: its service
wrappers retry writes on DEADLINE_EXCEEDED (a compare-and-set could then apply twice and report a
lost race) and its watch silently skips compacted history, so ``EtcdStore`` calls the stubs
itself. Only one etcd client library may be imported per process (duplicate proto symbols), and
this module is the only importer.

Channel: one ``grpc.aio`` channel per store, with keepalive pings (a dead etcd is noticed within
seconds even on an idle connection) and short reconnect backoff (at most 1 s), so calls succeed
again soon after etcd returns. Calls do not wait for a connection: while etcd is down they fail at
once with ``Unavailable`` instead of hanging until their deadline.

Every ``grpc.aio.AioRpcError`` is translated by ``translate`` into the mesh's error tree.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import grpc
import grpc.aio
from etcd3aio import _protobuf as pb  # generated etcd v3 messages and stubs

from kserve_mesh.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    MeshError,
    NotFound,
    Unavailable,
)
from kserve_mesh.store.base import KeyValue, LeaseId, LeaseNotFound

__all__ = [
    "CHANNEL_OPTIONS",
    "channel_target",
    "is_transient",
    "kv_from_pb",
    "open_channel",
    "pb",
    "prefix_range_end",
    "translate",
]

_MAX_MESSAGE_BYTES = 512 * 1024 * 1024  # a range over 100k records must fit in one answer

CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.lb_policy_name", "round_robin"),
]


def _host_port(endpoint: str) -> tuple[str, str]:
    raw = endpoint.strip()
    for scheme in ("http://", "https://"):
        if raw.startswith(scheme):
            if scheme == "https://":
                raise InvalidArgument(f"etcd endpoint {endpoint!r}: TLS is not supported yet")
            raw = raw[len(scheme) :]
    raw = raw.rstrip("/")
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in raw:
        raise InvalidArgument(f"etcd endpoint {endpoint!r} is not host:port (e.g. 127.0.0.1:2379)")
    return host.strip("[]"), port


def channel_target(endpoints: Sequence[str]) -> str:
    """gRPC target for one endpoint (any host name) or several (IP literals, round robin)."""
    if not endpoints:
        raise InvalidArgument("at least one etcd endpoint is needed")
    parsed = [_host_port(e) for e in endpoints]
    if len(parsed) == 1:
        host, port = parsed[0]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    addrs = []
    for (host, port), endpoint in zip(parsed, endpoints, strict=True):
        if host == "localhost":
            host = "127.0.0.1"
        try:
            ip = ipaddress.ip_address(host)
        except ValueError as exc:
            raise InvalidArgument(
                f"etcd endpoint {endpoint!r}: with several endpoints each must be an IP address "
                "(or give one DNS name that resolves to all members)"
            ) from exc
        addrs.append((ip.version, f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"))
    versions = {v for v, _ in addrs}
    if len(versions) > 1:
        raise InvalidArgument("etcd endpoints mix IPv4 and IPv6 addresses")
    return f"ipv{versions.pop()}:" + ",".join(a for _, a in addrs)


def open_channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


def kv_from_pb(kv: pb.kv_pb2.KeyValue, root_len: int) -> KeyValue:
    """A store ``KeyValue`` from etcd's, with the store's root prefix cut off the key."""
    return KeyValue(
        key=kv.key.decode()[root_len:],
        value=kv.value,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        lease=LeaseId(kv.lease) if kv.lease else None,
    )


def prefix_range_end(prefix: bytes) -> bytes:
    """The exclusive end of the key range of every key starting with ``prefix``."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"  # all bytes 0xff: to the end of the keyspace


_UNREACHABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
}


def translate(
    exc: grpc.aio.AioRpcError,
    *,
    what: str,
    where: str,
    timeout_s: float,
    lease: LeaseId | None = None,
) -> MeshError:
    """The mesh error for a failed etcd call (``what``: e.g. "put 'k'", ``where``: endpoints)."""
    code = exc.code()
    details = (exc.details() or "").removeprefix("etcdserver: ")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Unavailable(f"etcd at {where} did not answer {what} within {timeout_s:g} s")
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(
            f"etcd at {where} is unreachable ({what} failed: {details or 'no connection'})"
        )
    if code == grpc.StatusCode.NOT_FOUND and "lease not found" in details:
        return LeaseNotFound(lease) if lease is not None else NotFound(f"{what}: {details}")
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
        return InvalidArgument(f"etcd rejected {what}: {details}")
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return FailedPrecondition(f"etcd at {where} refused {what}: {details or code.name}")
    if code in _UNREACHABLE:
        return Unavailable(
            f"etcd at {where} could not serve {what}: {code.name} {details}".rstrip()
        )
    return Unavailable(f"etcd at {where} failed {what}: {code.name} {details}".rstrip())


def is_transient(exc: grpc.aio.AioRpcError) -> bool:
    """Whether a watch stream that ended with ``exc`` should be re-established."""
    return exc.code() not in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    )
