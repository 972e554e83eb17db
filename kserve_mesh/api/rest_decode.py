"""Large V2 REST inference bodies are decoded in a worker process, never on the event loop.

Decoding a JSON inference body is C code that holds the GIL from start to end: ``orjson.loads`` of
a 16 MiB body takes ~120 ms and building its numpy array ~100 ms more (on the 2-core build
machines). Run on the event loop, that stalls every other REST and gRPC request of the instance for
the whole time; run in a thread, it still does, one C call at a time (measured: the loop's worst
pause only fell from 262 ms to 130 ms). So bodies from ``OFFLOAD_BYTES`` up are decoded in a
separate process, which sends back the decoded ``ModelInferRequest`` (its tensors in raw form,
cheapest for the runtime) as protobuf bytes; the event loop only moves bytes through pipes, in
chunks, between other requests. Smaller bodies stay on the fast path: decoded inline, at most a few
milliseconds (``benchmarks/big_body.py`` measures both).

The workers (``python -m kserve_mesh.api.rest_decode``, one per two cores, at most four) start on
the first large body and are reused. Each takes one body at a time over its stdin and answers on
its stdout; a worker whose parent goes away sees its stdin close and exits. A request cancelled
mid-exchange, or a worker that dies, costs that worker; the next large body starts a fresh one.

Frames: request ``<q body_len, q header_length (-1: none), I name_len>`` + name + body; answer
``<B kind, I meta_len, Q data_len>`` + meta + data. Kind 0: meta is the response options as JSON,
data the ``ModelInferRequest``; kind 1: meta is an ``InvalidArgument`` message; kind 2: meta is an
unexpected error's traceback (logged here).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import sys
from typing import Any, BinaryIO

from kserve_mesh.core.errors import InternalError, InvalidArgument, Unavailable
from kserve_mesh.protocol import rest as codec
from kserve_mesh.protocol import v2

log = logging.getLogger(__name__)

OFFLOAD_BYTES = 512 * 1024
"""Bodies at least this large are decoded in a worker process (inline below: a few ms at most)."""

_REQUEST = struct.Struct("<qqI")
_ANSWER = struct.Struct("<BIQ")
_OK, _INVALID, _ERROR = 0, 1, 2


def default_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 2) // 2))


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def decode(self, body: bytes, model_id: str, header_length: int | None) -> tuple[Any, codec.ResponseOptions]:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        name = model_id.encode("utf-8", "surrogatepass")
        stdin.write(_REQUEST.pack(len(body), -1 if header_length is None else header_length, len(name)))
        stdin.write(name)
        stdin.write(body)
        await stdin.drain()
        kind, meta_len, data_len = _ANSWER.unpack(await stdout.readexactly(_ANSWER.size))
        meta = await stdout.readexactly(meta_len)
        data = await stdout.readexactly(data_len)
        if kind == _OK:
            options = json.loads(meta)
            request = v2.ModelInferRequest.FromString(data)
            return request, codec.ResponseOptions(binary_default=options["default"], binary=options["binary"])
        message = meta.decode("utf-8", "replace")
        if kind == _INVALID:
            raise InvalidArgument(message)
        log.error("the REST decoding process failed on a request for model %s:\n%s", model_id, message)
        raise InternalError("decoding the request failed; see the server log")

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


class JsonDecoder:
    """A small pool of decoding processes, started on demand, used one request at a time each."""

    offload_bytes = OFFLOAD_BYTES

    def __init__(self, workers: int | None = None) -> None:
        self._size = workers or default_workers()
        self._slots: asyncio.Semaphore | None = None
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._closed = False

    async def decode(self, body: bytes, model_id: str, header_length: int | None) -> tuple[Any, codec.ResponseOptions]:
        """``codec.parse_infer_request(body, model_id, header_length=..., raw=True)``, in a worker."""
        if self._closed:
            raise Unavailable("the server is shutting down")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._size)
        async with self._slots:
            worker = self._idle.pop() if self._idle else await self._start()
            self._busy.add(worker)
            done = False
            try:
                result = await worker.decode(body, model_id, header_length)
                done = True
                return result
            except (InvalidArgument, InternalError):
                done = True
                raise
            except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
                code = worker.proc.returncode
                raise Unavailable(f"the REST decoding process ended unexpectedly (exit code {code}): "
                                  f"{type(exc).__name__}") from None
            finally:
                self._busy.discard(worker)
                if done and not self._closed:
                    self._idle.append(worker)
                else:  # cancelled or broken mid-exchange: its pipes are in an unknown state
                    worker.kill()

    async def _start(self) -> _Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kserve_mesh.api.rest_decode",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 20)
        log.info("started a REST decoding process (pid %d)", proc.pid)
        return _Worker(proc)

    async def close(self) -> None:
        """Stop every worker (those busy are killed)."""
        self._closed = True
        workers, self._idle = [*self._idle, *self._busy], []
        for worker in workers:
            if worker.proc.stdin is not None and not worker.proc.stdin.is_closing():
                worker.proc.stdin.close()  # an idle worker exits at end of input
        for worker in workers:
            try:
                await asyncio.wait_for(worker.proc.wait(), 2.0)
            except TimeoutError:
                worker.kill()
                await worker.proc.wait()


# -- the worker process ------------------------------------------------------------------------------

def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    if data is None or len(data) < size:
        return None
    return data


def _answer(out: BinaryIO, kind: int, meta: bytes, data: bytes = b"") -> None:
    out.write(_ANSWER.pack(kind, len(meta), len(data)))
    out.write(meta)
    out.write(data)
    out.flush()


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """Decode requests from ``inp`` and answer on ``out`` until ``inp`` ends."""
    import traceback

    while True:
        head = _read_exactly(inp, _REQUEST.size)
        if head is None:
            return
        body_len, header_length, name_len = _REQUEST.unpack(head)
        name = _read_exactly(inp, name_len) if name_len else b""
        body = _read_exactly(inp, body_len) if body_len else b""
        if name is None or body is None:
            return
        try:
            request, options = codec.parse_infer_request(
                body, name.decode("utf-8", "surrogatepass"),
                header_length=None if header_length < 0 else header_length, raw=True)
            encoded = request.SerializeToString()
        except InvalidArgument as exc:
            _answer(out, _INVALID, str(exc).encode("utf-8", "replace"))
            continue
        except Exception:  # noqa: BLE001 - reported to the parent, which logs it
            _answer(out, _ERROR, traceback.format_exc().encode("utf-8", "replace"))
            continue
        del body
        meta = json.dumps({"default": options.binary_default, "binary": dict(options.binary)}).encode()
        _answer(out, _OK, meta, encoded)


def main() -> None:
    # Answers go to the real stdout only; anything printed by accident goes to stderr instead.
    out = os.fdopen(os.dup(1), "wb", buffering=1 << 20)
    os.dup2(2, 1)
    inp = os.fdopen(os.dup(0), "rb", buffering=1 << 20)
    try:
        serve(inp, out)
    except (BrokenPipeError, KeyboardInterrupt):
        pass


if __name__ == "__main__":
    main()
