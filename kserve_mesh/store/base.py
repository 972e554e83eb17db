"""The Store port: the one place where mesh instances share state.

Everything an instance must be able to re-read after a restart lives behind this interface: the
model registry, vmodels, leased instance records, the leader key and config. Two adapters implement
it: ``MemoryStore`` (one instance, the embedded default and every unit test) and an etcd adapter
(any mesh of more than one instance). The shape follows etcd's v3 API so the etcd adapter is a thin
translation:

- keys are ``str``, values ``bytes``;
- every write bumps one store-global, monotonically increasing ``revision``; each entry carries the
  revision that created it (``create_revision``) and last modified it (``mod_revision``), and how
  many times it was written since creation (``version``);
- an entry may be attached to a lease; when the lease is revoked or expires (not refreshed within
  its TTL) the entry is deleted, and watchers see a DELETE event;
- compare-and-set never raises on a lost race: it answers ``CasResult(succeeded=False, ...)``;
- a closed or unreachable store raises ``kserve_mesh.core.errors.Unavailable``.

Compare-and-set uses ``expected_mod_revision``: ``0`` (or ``None``) means "the key must be absent"
(create only), a positive number means "the key must still be at this revision" (update only if
unchanged). ``transaction`` is a small etcd Txn: all compares hold -> run ``success`` ops, else run
``failure`` ops, atomically and at one revision (enough to swap two keys in one step).

Watches stream ``WatchEvent``s for a key prefix, in revision order, optionally replaying history
from ``start_revision``. A watch is an async iterator and an async context manager; ``aclose()``
ends it cleanly. Buffering per watch is bounded: a consumer that falls behind is resynced from the
store's history, or fails with ``Compacted`` when that history is gone (then re-list and re-watch).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import NewType, Protocol, Self

from kserve_mesh.core.errors import FailedPrecondition, InvalidArgument, NotFound

LeaseId = NewType("LeaseId", int)


class LeaseNotFound(NotFound):
    """The lease is unknown: never granted, revoked, or expired (then re-grant and re-publish)."""

    def __init__(self, lease: LeaseId) -> None:
        super().__init__(f"lease {lease:#x} not found (revoked or expired)")
        self.lease = lease


class Compacted(FailedPrecondition):
    """A watch asked for history the store no longer keeps: re-list, then watch from there."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(
            f"store history from revision {requested} is compacted; oldest kept is {oldest}"
        )
        self.requested = requested
        self.oldest = oldest


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One entry as read from the store."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int = 1
    lease: LeaseId | None = None


class EventType(enum.Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A change seen by a watch. For DELETE, ``kv`` has an empty value and ``kv.mod_revision`` is
    the revision of the delete (as etcd reports it); ``prev_kv`` is the entry before the change."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@dataclass(frozen=True, slots=True)
class CasResult:
    """Answer of a compare-and-set. ``revision`` is the store revision after the call; ``current``
    is the entry as it now is (the new one on success, the one that won the race on failure)."""

    succeeded: bool
    revision: int
    current: KeyValue | None = None

    def __bool__(self) -> bool:
        return self.succeeded


class RangeResult(list[KeyValue]):
    """Entries under a prefix, sorted by key, read at store revision ``revision``.

    ``more`` is True when a ``limit`` cut the answer short. Watch from ``revision + 1`` to follow
    the range without missing or repeating a change.
    """

    def __init__(self, kvs: Sequence[KeyValue], revision: int, more: bool = False) -> None:
        super().__init__(kvs)
        self.revision = revision
        self.more = more


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction; build with the class methods.

    ``mod_revision`` 0 means the key must be absent; ``value`` compares the current bytes (an absent
    key never equals a value).
    """

    key: str
    mod_revision: int | None = None
    value: bytes | None = None

    def __post_init__(self) -> None:
        if (self.mod_revision is None) == (self.value is None):
            raise InvalidArgument(
                f"compare on key {self.key!r} needs exactly one of mod_revision or value"
            )

    @classmethod
    def absent(cls, key: str) -> Compare:
        return cls(key, mod_revision=0)

    @classmethod
    def unchanged(cls, key: str, mod_revision: int) -> Compare:
        return cls(key, mod_revision=mod_revision)

    @classmethod
    def equals(cls, key: str, value: bytes) -> Compare:
        return cls(key, value=value)


@dataclass(frozen=True, slots=True)
class Put:
    """Transaction op: write ``value`` (response: the revision of the write)."""

    key: str
    value: bytes
    lease: LeaseId | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    """Transaction op: delete ``key`` (response: whether it existed)."""

    key: str


@dataclass(frozen=True, slots=True)
class Get:
    """Transaction op: read ``key`` (response: ``KeyValue | None``, as of before this txn's writes
    that follow it in the op list)."""

    key: str


Op = Put | Delete | Get


@dataclass(frozen=True, slots=True)
class TxnResult:
    """``succeeded``: whether all compares held (so ``success`` ops ran, else ``failure`` ops).
    ``responses``: one per op that ran, in order: ``int`` for Put, ``bool`` for Delete,
    ``KeyValue | None`` for Get. ``revision``: the store revision after the transaction."""

    succeeded: bool
    revision: int
    responses: tuple[int | bool | KeyValue | None, ...] = ()

    def __bool__(self) -> bool:
        return self.succeeded


class Watch(Protocol):
    """A live watch: iterate for events; ``aclose`` (or leaving ``async with``) ends it."""

    def __aiter__(self) -> AsyncIterator[WatchEvent]: ...

    async def __anext__(self) -> WatchEvent: ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Store(Protocol):
    """The port every store adapter implements. All I/O methods are coroutines."""

    async def get(self, key: str) -> KeyValue | None: ...

    async def put(self, key: str, value: bytes, *, lease: LeaseId | None = None) -> int:
        """Write unconditionally; returns the new store revision."""
        ...

    async def delete(self, key: str) -> bool:
        """Delete unconditionally; returns whether the key existed."""
        ...

    async def put_if(
        self,
        key: str,
        value: bytes,
        *,
        expected_mod_revision: int | None,
        lease: LeaseId | None = None,
    ) -> CasResult:
        """Write only if the key is at ``expected_mod_revision`` (0/None: only if absent)."""
        ...

    async def delete_if(self, key: str, expected_mod_revision: int) -> CasResult:
        """Delete only if the key exists at ``expected_mod_revision``."""
        ...

    async def transaction(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult: ...

    async def range(self, prefix: str, *, limit: int | None = None) -> RangeResult:
        """Entries whose key starts with ``prefix``, sorted by key, at most ``limit`` of them."""
        ...

    async def revision(self) -> int:
        """The current store revision."""
        ...

    def watch(self, prefix: str, *, start_revision: int | None = None) -> Watch:
        """Events for keys under ``prefix``, from ``start_revision`` (inclusive) if given.

        Without ``start_revision`` the watch sees changes after it is established; an adapter may
        establish it only at ``__aenter__``/the first ``__anext__`` (MemoryStore does it at once).
        To follow a ``range`` without a gap, watch from ``range(...).revision + 1``. Raises
        ``Compacted`` (here or while iterating) when that history is gone."""
        ...

    async def grant_lease(self, ttl_s: float) -> LeaseId: ...

    async def keepalive(self, lease: LeaseId) -> float:
        """Refresh a lease; returns its TTL. Raises ``LeaseNotFound`` if it is gone."""
        ...

    async def revoke(self, lease: LeaseId) -> bool:
        """Delete a lease and its keys; returns whether the lease existed."""
        ...

    async def close(self) -> None: ...
