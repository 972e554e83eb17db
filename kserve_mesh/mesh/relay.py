"""Any gRPC call that names a model, relayed to the runtime that holds it (issue 11).

ModelMesh routes *every* gRPC method that carries ``mm-model-id`` / ``mm-vmodel-id`` to the model's
runtime, not only KServe V2 (its tests use TF-Serving's ``Predict`` and TorchServe's
``Predictions``). Here such a call (``api/grpc_relay.py`` takes every method no other service
serves) becomes a ``RawStream``: the method's path, the client's messages as raw bytes, as they
come, and a way to write answers back. It is dispatched like an inference (target, deadline, local
copy / forward / load here: ``dataplane.DataPlane.relay``), and the hop:

- **here** (``StreamHop.run``): the same call is opened on the runtime's channel (a runtime reached
  over gRPC: ``--runtime process`` or ``remote``) with ``mm-model-id`` set to the concrete model,
  and every message is passed through in both directions, unary or streaming, never decoded and
  never buffered as a whole. The local copy is held (counted in flight) for the whole call, so a
  model is never evicted mid-stream.
- **to a peer** (``StreamHop.forward``): the same call on the peer's gRPC port with the forwarding
  headers of ``wire.py``; the peer serves it from its copy (or loads it) and relays it to its runtime.

Cancellation travels: a client that cancels cancels the task awaiting the relay, which cancels the
call to the runtime or the peer. A failure before any answer was written lets the router try
another instance (the messages read so far are replayed to it); after that the far end's status
is passed through as it came (``RelayedStatus``): the runtime's own code and details.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import grpc

from kserve_mesh.core.errors import MeshError

Metadata = Sequence[tuple[str, str | bytes]]

# Client metadata that is not passed on: the mesh's own routing headers (set again for the next
# hop), credentials (each hop authenticates itself) and what gRPC itself manages.
_NOT_CARRIED_PREFIXES = ("mm-", "grpc-", ":")
_NOT_CARRIED = frozenset({"authorization", "user-agent", "te", "content-type"})
KEEP_BYTES = 4 << 20
"""Most bytes of a call's messages kept for a replay to another instance; past it (a long client
stream) the call can no longer be replayed and is not kept in memory."""


class RelayedStatus(MeshError):
    """A status the far end of a relayed call answered with, passed to the client as it came."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details or code.name)
        self.code = code


def carried_metadata(metadata: Metadata | None) -> tuple[tuple[str, str | bytes], ...]:
    """The client's metadata that travels with a relayed call."""
    return tuple((k, v) for k, v in metadata or () if k not in _NOT_CARRIED and not k.startswith(_NOT_CARRIED_PREFIXES))


class RawStream:
    """One relayed call: its method, the client's messages (``source``) and answers (``sink``).

    Messages read while nothing has been answered yet are kept (up to ``KEEP_BYTES``), so the call
    can be replayed to another instance when the first one could not take it; the first answer, or
    more than ``KEEP_BYTES`` of messages, drops them (``replayable`` is then false)."""

    def __init__(self, method: str, source: AsyncIterator[bytes], sink: Callable[[bytes], Awaitable[None]],
                 metadata: Metadata = ()) -> None:
        self.method = method
        self.metadata = carried_metadata(metadata)
        self._source = source
        self._sink = sink
        self._kept: list[bytes] | None = []
        self._kept_bytes = 0
        self._ended = False
        self.answered = False

    @property
    def replayable(self) -> bool:
        """Whether the call may still be tried on another instance (nothing answered or dropped)."""
        return self._kept is not None
    async def requests(self) -> AsyncIterator[bytes]:
        """The client's messages: those kept from an earlier try first, then new ones as they come."""
        for message in list(self._kept or ()):
            yield message
        if self._ended:
            return
        async for message in self._source:
            if self._kept is not None:
                self._kept_bytes += len(message)
                if self._kept_bytes > KEEP_BYTES:
                    self._kept = None  # a long client stream: not held in memory, not replayable
                else:
                    self._kept.append(message)
            yield message
        self._ended = True

    async def send(self, message: bytes) -> None:
        self.answered = True
        self._kept = None
        await self._sink(message)


async def relay(channel: grpc.aio.Channel, stream: RawStream, metadata: Metadata, timeout_s: float,
                on_error: Callable[[grpc.aio.AioRpcError], MeshError]) -> None:
    """Pass ``stream`` through a call of the same method on ``channel``; its errors become
    ``on_error``'s mesh error (the far end's status as it came, unless the caller says otherwise)."""
    call = channel.stream_stream(stream.method)(stream.requests(), timeout=max(0.001, timeout_s),
                                                metadata=tuple(metadata))
    try:
        async for message in call:
            await stream.send(message)
    except grpc.aio.AioRpcError as err:
        raise on_error(err) from None
    except asyncio.CancelledError:
        call.cancel()  # the client went away: so does the call to the runtime or the peer
        raise


def passed_through(err: grpc.aio.AioRpcError) -> RelayedStatus:
    return RelayedStatus(err.code(), err.details() or "")
