"""The incremental request-body decoder (gzip / deflate) behind the REST server's body limit."""

from __future__ import annotations

import gzip
import os
import zlib

import pytest

from kserve_mesh.api.http_decompress import (
    PIECE_BYTES,
    BodyDecoder,
    CorruptBody,
    TooLarge,
    UnsupportedEncoding,
    coding_of,
)

BODY = b'{"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}' * 50


def decode(coding: str, data: bytes, room: int = 1 << 30, step: int = 0) -> bytes:
    out: list[bytes] = []
    decoder = BodyDecoder(coding)
    for i in range(0, len(data), step or max(1, len(data))):
        decoder.feed(data[i:i + (step or len(data))], room, out.append)
    decoder.finish()
    return b"".join(out)


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def test_codings_named_by_the_header() -> None:
    assert coding_of(b"gzip") == "gzip" and coding_of(b"X-GZIP") == "gzip" and coding_of(b" deflate ") == "deflate"
    assert coding_of(b"identity") is None and coding_of(b"") is None and coding_of(b"identity, gzip") == "gzip"
    for value in (b"br", b"zstd", b"gzip, gzip", b"gzip, deflate", b"compress"):
        with pytest.raises(UnsupportedEncoding, match="not supported"):
            coding_of(value)


@pytest.mark.parametrize("step", [0, 1, 7, 4096])
def test_gzip_zlib_and_raw_deflate_in_any_pieces(step: int) -> None:
    assert decode("gzip", gzip.compress(BODY), step=step) == BODY
    assert decode("deflate", zlib.compress(BODY), step=step) == BODY  # what tritonclient sends
    assert decode("deflate", raw_deflate(BODY), step=step) == BODY  # what some other clients send
    assert decode("gzip", gzip.compress(BODY[:100]) + gzip.compress(BODY[100:]), step=step) == BODY  # two members


def test_an_empty_body_is_empty() -> None:
    assert decode("gzip", b"") == b"" and decode("deflate", b"") == b""


def test_a_bomb_never_expands_beyond_the_room() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)  # 64 MiB of zeros in ~64 KiB
    assert len(bomb) < 100_000
    room = 3 * PIECE_BYTES // 2
    got: list[int] = []
    decoder = BodyDecoder("gzip")
    with pytest.raises(TooLarge):
        decoder.feed(bomb, room, lambda piece: got.append(len(piece)))
    assert sum(got) <= room and max(got) <= PIECE_BYTES and decoder.produced == room + 1


def test_exactly_the_room_is_allowed() -> None:
    data = os.urandom(1000)
    assert decode("gzip", gzip.compress(data), room=1000) == data
    with pytest.raises(TooLarge):
        decode("gzip", gzip.compress(data), room=999)


def test_corrupt_and_truncated_bodies() -> None:
    with pytest.raises(CorruptBody, match="not valid gzip"):
        decode("gzip", b"this is not gzip at all")
    with pytest.raises(CorruptBody, match="truncated"):
        decode("gzip", gzip.compress(BODY)[:-6])
    with pytest.raises(CorruptBody, match="after the end"):
        decode("deflate", zlib.compress(BODY) + b"more")
    with pytest.raises(CorruptBody, match="header"):
        decode("deflate", b"x")
    bad = bytearray(gzip.compress(BODY))
    bad[len(bad) // 2] ^= 0xFF
    with pytest.raises(CorruptBody):
        decode("gzip", bytes(bad))
