"""A relayed call's messages are kept for a replay only up to KEEP_BYTES (mesh/relay.py): a long
client stream is never held in memory, and is then no longer replayed elsewhere."""

from __future__ import annotations

from collections.abc import AsyncIterator

from kserve_mesh.mesh import relay


async def _source(messages: list[bytes]) -> AsyncIterator[bytes]:
    for m in messages:
        yield m


async def _noop(_: bytes) -> None:
    pass


async def test_messages_are_kept_for_a_replay_until_an_answer() -> None:
    stream = relay.RawStream("/x.Y/Z", _source([b"a", b"b"]), _noop)
    assert [m async for m in stream.requests()] == [b"a", b"b"]
    assert stream.replayable
    assert [m async for m in stream.requests()] == [b"a", b"b"]  # replayed to the next instance
    await stream.send(b"answer")
    assert not stream.replayable


async def test_a_long_client_stream_is_not_kept(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(relay, "KEEP_BYTES", 10)
    stream = relay.RawStream("/x.Y/Z", _source([b"x" * 6, b"y" * 6, b"z"]), _noop)
    assert [m async for m in stream.requests()] == [b"x" * 6, b"y" * 6, b"z"]  # all passed on
    assert not stream.replayable and stream._kept is None  # nothing held for a replay
