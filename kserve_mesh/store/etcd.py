"""``EtcdStore``: the Store port on etcd v3, for meshes of more than one instance.

The port was shaped after etcd's API (``store/base.py``), so this adapter is a translation:

- ``root`` is prepended to every key on the wire and cut off every key read back, so two meshes
  (or two tests) can share one etcd; ranges and watches never leave the root;
- compare-and-set is an etcd Txn: "absent" compares ``create_revision == 0``, "unchanged"
  compares ``mod_revision``, ``delete_if`` also requires ``version > 0`` (the key exists); the
  success branch reads the key back, so ``CasResult.current`` needs no second round trip;
- ``transaction`` maps ``Compare``/``Put``/``Delete``/``Get`` one to one onto a Txn; every write
  of a Txn lands at one revision (the answer's header revision);
- leases are etcd leases; TTLs are whole seconds (rounded up; etcd may raise them to its minimum),
  and their expiry deletes the attached keys, which watchers see as DELETE events;
- watches are ``EtcdWatch`` streams that re-establish themselves after an etcd restart.

Every call has a deadline (``timeout_s``); writes are never retried here (a retried Txn could
apply twice). An unreachable etcd, a missed deadline or a closed store raise ``Unavailable`` naming
the endpoint and the call; no gRPC exception leaves this package (``etcd_grpc.translate``). A write
that failed with ``Unavailable`` may still have been applied: re-read (or compare-and-set) before
trying again.

A process should hold one ``EtcdStore`` per etcd cluster (all of its watches share one channel),
created and used in one event loop (the gRPC channel binds to the loop of the first call).
``async with EtcdStore(...)`` checks that etcd answers before the body runs; without it the store
connects on its first call.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc.aio

from kserve_mesh.core.errors import InvalidArgument, Unavailable
from kserve_mesh.store.base import (
    CasResult,
    Compare,
    Delete,
    Get,
    KeyValue,
    LeaseId,
    LeaseNotFound,
    Op,
    Put,
    RangeResult,
    TxnResult,
)
from kserve_mesh.store.etcd_grpc import (
    channel_target,
    kv_from_pb,
    open_channel,
    pb,
    prefix_range_end,
    translate,
)
from kserve_mesh.store.etcd_watch import EtcdWatch

log = logging.getLogger(__name__)

R = TypeVar("R")

DEFAULT_TIMEOUT_S = 5.0


class EtcdStore:
    """etcd implementation of ``kserve_mesh.store.base.Store``."""

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        root: str = "",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        watch_backoff_s: tuple[float, float] = (0.05, 2.0),
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        self._target = channel_target(endpoints)
        self.endpoints = tuple(endpoints)
        self._where = ",".join(self.endpoints)
        if not isinstance(root, str):
            raise InvalidArgument(f"store root must be str, got {type(root).__name__}")
        self.root = root
        self._root_len = len(root)
        if not timeout_s > 0:
            raise InvalidArgument(f"store timeout must be positive, got {timeout_s}")
        self._timeout_s = timeout_s
        self._watch_backoff_s = watch_backoff_s
        self._channel: grpc.aio.Channel | None = None
        self._kv: pb.KVStub | None = None
        self._leases: pb.LeaseStub | None = None
        self._watch_stub: pb.WatchStub | None = None
        self._watches: set[EtcdWatch] = set()
        self._seen_revision = 0  # newest store revision any answer reported
        self._closed = False

    # ---- lifecycle ----

    async def connect(self) -> int:
        """Check that etcd answers (within the timeout); returns the current revision."""
        return await self.revision()

    async def __aenter__(self) -> Self:
        try:
            await self.connect()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the store: later calls raise ``Unavailable``; open watches fail with it."""
        if self._closed:
            return
        self._closed = True
        error = Unavailable(f"the etcd store for {self._where} is closed")
        for watch in list(self._watches):
            await watch.fail(error)
        self._watches.clear()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    def _stubs(self) -> tuple[pb.KVStub, pb.LeaseStub]:
        if self._closed:
            raise Unavailable(f"the etcd store for {self._where} is closed")
        if self._kv is None or self._leases is None:
            self._channel = open_channel(self._target)  # in the running loop: grpc.aio binds to it
            self._kv = pb.KVStub(self._channel)
            self._leases = pb.LeaseStub(self._channel)
            self._watch_stub = pb.WatchStub(self._channel)
        return self._kv, self._leases

    async def _call(
        self,
        method: Callable[..., Awaitable[R]],
        request: Any,
        what: str,
        *,
        lease: LeaseId | None = None,
    ) -> R:
        try:
            answer: Any = await method(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise translate(
                exc,
                what=what,
                where=self._where,
                timeout_s=self._timeout_s,
                lease=lease,
            ) from exc
        header = getattr(answer, "header", None)
        if header is not None and header.revision > self._seen_revision:
            self._seen_revision = header.revision
        return answer  # type: ignore[no-any-return]

    # ---- keys ----

    def _key(self, key: str) -> bytes:
        if not isinstance(key, str) or not key:
            raise InvalidArgument(f"store keys are non-empty str, got {key!r}")
        return (self.root + key).encode()

    def _prefix_range(self, prefix: str) -> tuple[bytes, bytes]:
        if not isinstance(prefix, str):
            raise InvalidArgument(f"a key prefix is a str, got {prefix!r}")
        full = (self.root + prefix).encode()
        if not full:
            return b"\x00", b"\x00"  # the whole keyspace
        return full, prefix_range_end(full)

    @staticmethod
    def _check_value(key: str, value: bytes) -> None:
        if not isinstance(value, bytes):
            raise InvalidArgument(f"store values are bytes, got {type(value).__name__} for {key!r}")

    def _kv_or_none(self, kvs: Sequence[pb.kv_pb2.KeyValue]) -> KeyValue | None:
        return kv_from_pb(kvs[0], self._root_len) if kvs else None

    # ---- reads ----

    async def get(self, key: str) -> KeyValue | None:
        kv, _ = self._stubs()
        request = pb.RangeRequest(key=self._key(key))
        answer = await self._call(kv.Range, request, f"get {key!r}")
        return self._kv_or_none(answer.kvs)

    async def range(self, prefix: str, *, limit: int | None = None) -> RangeResult:
        kv, _ = self._stubs()
        if limit is not None and limit < 1:
            raise InvalidArgument(f"range limit must be at least 1, got {limit}")
        start, end = self._prefix_range(prefix)
        request = pb.RangeRequest(key=start, range_end=end, limit=limit or 0)
        answer = await self._call(kv.Range, request, f"range {prefix!r}")
        kvs = [kv_from_pb(item, self._root_len) for item in answer.kvs]
        return RangeResult(kvs, answer.header.revision, more=answer.more)

    async def revision(self) -> int:
        kv, _ = self._stubs()
        request = pb.RangeRequest(key=b"\x00", count_only=True)
        answer = await self._call(kv.Range, request, "read the revision")
        return int(answer.header.revision)

    # ---- writes ----

    async def put(self, key: str, value: bytes, *, lease: LeaseId | None = None) -> int:
        kv, _ = self._stubs()
        self._check_value(key, value)
        request = pb.PutRequest(key=self._key(key), value=value, lease=lease or 0)
        answer = await self._call(kv.Put, request, f"put {key!r}", lease=lease)
        return int(answer.header.revision)

    async def delete(self, key: str) -> bool:
        kv, _ = self._stubs()
        request = pb.DeleteRangeRequest(key=self._key(key))
        answer = await self._call(kv.DeleteRange, request, f"delete {key!r}")
        return answer.deleted > 0

    async def put_if(
        self,
        key: str,
        value: bytes,
        *,
        expected_mod_revision: int | None,
        lease: LeaseId | None = None,
    ) -> CasResult:
        kv, _ = self._stubs()
        self._check_value(key, value)
        raw = self._key(key)
        compare = self._compare(Compare(key, mod_revision=expected_mod_revision or 0))
        read = pb.RequestOp(request_range=pb.RangeRequest(key=raw))
        write = pb.RequestOp(request_put=pb.PutRequest(key=raw, value=value, lease=lease or 0))
        request = pb.TxnRequest(compare=[compare], success=[write, read], failure=[read])
        answer = await self._call(kv.Txn, request, f"put_if {key!r}", lease=lease)
        current = self._kv_or_none(answer.responses[-1].response_range.kvs)
        return CasResult(answer.succeeded, int(answer.header.revision), current)

    async def delete_if(self, key: str, expected_mod_revision: int) -> CasResult:
        kv, _ = self._stubs()
        raw = self._key(key)
        compares = [
            pb.Compare(key=raw, target=pb.Compare.MOD, result=pb.Compare.EQUAL,
                       mod_revision=expected_mod_revision),
            pb.Compare(key=raw, target=pb.Compare.VERSION, result=pb.Compare.GREATER, version=0),
        ]  # fmt: skip
        delete = pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=raw))
        read = pb.RequestOp(request_range=pb.RangeRequest(key=raw))
        request = pb.TxnRequest(compare=compares, success=[delete], failure=[read])
        answer = await self._call(kv.Txn, request, f"delete_if {key!r}")
        if answer.succeeded:
            return CasResult(True, int(answer.header.revision), None)
        current = self._kv_or_none(answer.responses[0].response_range.kvs)
        return CasResult(False, int(answer.header.revision), current)

    async def transaction(
        self,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
    ) -> TxnResult:
        kv, _ = self._stubs()
        for ops in (success, failure):
            written = [op.key for op in ops if not isinstance(op, Get)]
            if len(written) != len(set(written)):
                raise InvalidArgument("a transaction may write each key at most once per branch")
        request = pb.TxnRequest(
            compare=[self._compare(c) for c in compares],
            success=[self._op(op) for op in success],
            failure=[self._op(op) for op in failure],
        )
        leases = [op.lease for op in (*success, *failure) if isinstance(op, Put) and op.lease]
        answer = await self._call(
            kv.Txn, request, "transaction", lease=leases[0] if leases else None
        )
        revision = int(answer.header.revision)
        ops = success if answer.succeeded else failure
        responses: list[int | bool | KeyValue | None] = []
        for op, response in zip(ops, answer.responses, strict=True):
            if isinstance(op, Put):
                responses.append(revision)
            elif isinstance(op, Delete):
                responses.append(response.response_delete_range.deleted > 0)
            else:
                responses.append(self._kv_or_none(response.response_range.kvs))
        return TxnResult(answer.succeeded, revision, tuple(responses))

    def _compare(self, compare: Compare) -> pb.Compare:
        raw = self._key(compare.key)
        if compare.value is not None:
            return pb.Compare(
                key=raw,
                target=pb.Compare.VALUE,
                result=pb.Compare.EQUAL,
                value=compare.value,
            )
        if compare.mod_revision == 0:  # absent
            return pb.Compare(
                key=raw,
                target=pb.Compare.CREATE,
                result=pb.Compare.EQUAL,
                create_revision=0,
            )
        return pb.Compare(
            key=raw,
            target=pb.Compare.MOD,
            result=pb.Compare.EQUAL,
            mod_revision=compare.mod_revision,
        )

    def _op(self, op: Op) -> pb.RequestOp:
        raw = self._key(op.key)
        if isinstance(op, Put):
            self._check_value(op.key, op.value)
            return pb.RequestOp(
                request_put=pb.PutRequest(key=raw, value=op.value, lease=op.lease or 0)
            )
        if isinstance(op, Delete):
            return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=raw))
        if isinstance(op, Get):
            return pb.RequestOp(request_range=pb.RangeRequest(key=raw))
        raise InvalidArgument(f"not a transaction op: {op!r}")

    # ---- watch ----

    def watch(self, prefix: str, *, start_revision: int | None = None) -> EtcdWatch:
        self._stubs()
        if start_revision is not None and start_revision < 1:
            raise InvalidArgument(f"watch start_revision must be at least 1, got {start_revision}")
        key, end = self._prefix_range(prefix)
        assert self._watch_stub is not None
        implicit = self._seen_revision + 1 if self._seen_revision else 0
        watch = EtcdWatch(
            self._watch_stub,
            key=key,
            range_end=end,
            root_len=self._root_len,
            start_revision=start_revision if start_revision is not None else implicit,
            strict=start_revision is not None,
            describe=f"{(self.root + prefix)!r} at {self._where}",
            on_close=self._watches.discard,
            backoff_s=self._watch_backoff_s,
        )
        self._watches.add(watch)
        return watch

    # ---- leases ----

    async def grant_lease(self, ttl_s: float) -> LeaseId:
        _, leases = self._stubs()
        if not ttl_s > 0:
            raise InvalidArgument(f"lease TTL must be positive, got {ttl_s}")
        request = pb.LeaseGrantRequest(TTL=max(1, math.ceil(ttl_s)))
        answer = await self._call(leases.LeaseGrant, request, f"grant a {ttl_s:g} s lease")
        if answer.error:
            raise Unavailable(f"etcd at {self._where} could not grant a lease: {answer.error}")
        return LeaseId(answer.ID)

    async def keepalive(self, lease: LeaseId) -> float:
        _, leases = self._stubs()

        call = leases.LeaseKeepAlive(timeout=self._timeout_s)
        try:
            await call.write(pb.LeaseKeepAliveRequest(ID=lease))
            await call.done_writing()
            answer = await call.read()
        except grpc.aio.AioRpcError as exc:
            raise translate(
                exc,
                what=f"keep lease {lease:#x} alive",
                where=self._where,
                timeout_s=self._timeout_s,
                lease=lease,
            ) from exc
        finally:
            call.cancel()
        if answer is grpc.aio.EOF:
            raise Unavailable(f"etcd at {self._where} closed the keepalive of lease {lease:#x}")
        if answer.TTL <= 0:
            raise LeaseNotFound(lease)
        return float(answer.TTL)

    async def revoke(self, lease: LeaseId) -> bool:
        _, leases = self._stubs()
        request = pb.LeaseRevokeRequest(ID=lease)
        try:
            await self._call(leases.LeaseRevoke, request, f"revoke lease {lease:#x}", lease=lease)
        except LeaseNotFound:
            return False
        return True
