"""Incremental decompression of a REST request body (``Content-Encoding: gzip | deflate``).

tritonclient.http sends ``request_compression_algorithm="gzip"`` as a gzip stream and ``"deflate"``
as a zlib stream (RFC 9110's "deflate"); some clients send raw deflate under that name, so a
``deflate`` body is read as zlib when its first two bytes are a zlib header and as raw deflate
otherwise. ``x-gzip`` is ``gzip``; ``identity`` is no coding at all.

The decoder never holds more than it was allowed: each call is given the room left under the body
limit and produces at most one byte more than that (which is how the caller learns the body is too
large), in pieces of at most ``PIECE_BYTES``. A decompression bomb therefore costs at most the limit
in memory and the time to inflate it, never its expanded size.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

PIECE_BYTES = 1 << 20
"""Largest piece of decompressed body handed on at once."""

SUPPORTED = ("gzip", "deflate")
_ALIASES = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}


class CorruptBody(ValueError):
    """The body is not a valid stream of its declared coding (or is truncated)."""


class UnsupportedEncoding(ValueError):
    """A ``Content-Encoding`` this server cannot decode."""


class TooLarge(ValueError):
    """The decompressed body passed the room it was given."""


def coding_of(value: bytes) -> str | None:
    """The one coding a ``Content-Encoding`` header value names (None: identity, nothing to do).
    Raises ``UnsupportedEncoding`` for anything else, stacked codings included."""
    names = [part.strip().lower() for part in value.decode("latin-1").split(",")]
    names = [name for name in names if name and name != "identity"]
    if not names:
        return None
    if len(names) == 1 and names[0] in _ALIASES:
        return _ALIASES[names[0]]
    shown = ", ".join(names)[:100]
    raise UnsupportedEncoding(f"Content-Encoding '{shown}' is not supported: send the body uncompressed "
                              f"or with one of {', '.join(SUPPORTED)}")


def _is_zlib_header(head: bytes) -> bool:
    cmf, flg = head[0], head[1]
    return cmf & 0x0F == 8 and cmf >> 4 <= 7 and ((cmf << 8) | flg) % 31 == 0


class BodyDecoder:
    """Decompresses one request body as it arrives (see the module docstring)."""

    def __init__(self, coding: str) -> None:
        if coding not in SUPPORTED:
            raise UnsupportedEncoding(f"no decoder for {coding!r}")
        self.coding = coding
        self.produced = 0
        """Decompressed bytes handed on so far."""
        self._inflater: zlib._Decompress | None = None
        self._head = b""  # the first byte of a deflate body, until the second tells zlib from raw

    def feed(self, data: bytes, room: int, emit: Callable[[bytes], None]) -> None:
        """Decompress ``data``, handing each piece to ``emit``. Raises ``TooLarge`` as soon as the
        body passes ``room`` decompressed bytes in all, ``CorruptBody`` if it is not valid."""
        if self._inflater is None:
            data = self._head + data
            if self.coding == "deflate" and len(data) < 2:
                self._head = data
                return
            self._head = b""
            if not data:
                return
            self._inflater = self._new(data)
        try:
            self._inflate(data, room, emit)
        except zlib.error as exc:
            raise CorruptBody(f"the request body is not valid {self.coding} data ({exc})") from None

    def _new(self, first: bytes) -> zlib._Decompress:
        if self.coding == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        return zlib.decompressobj(zlib.MAX_WBITS if _is_zlib_header(first) else -zlib.MAX_WBITS)

    def _inflate(self, data: bytes, room: int, emit: Callable[[bytes], None]) -> None:
        inflater = self._inflater
        assert inflater is not None
        while data:
            if inflater.eof:
                if self.coding != "gzip":
                    raise CorruptBody("the request body has data after the end of its deflate stream")
                inflater = self._inflater = self._new(data)  # gzip allows several members, one after another
            piece = inflater.decompress(data, min(PIECE_BYTES, room - self.produced + 1))
            if piece:
                self.produced += len(piece)
                if self.produced > room:
                    raise TooLarge(f"more than {room} bytes once decompressed")
                emit(piece)
            data = inflater.unconsumed_tail or (inflater.unused_data if inflater.eof else b"")

    def finish(self) -> None:
        """The body ended: raises ``CorruptBody`` if its stream did not (a truncated body)."""
        if self._head:
            raise CorruptBody(f"the request body ended inside its {self.coding} header")
        if self._inflater is not None and not self._inflater.eof:
            raise CorruptBody(f"the request body ended before its {self.coding} stream did (truncated)")
