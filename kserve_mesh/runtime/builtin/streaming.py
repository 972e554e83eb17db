"""The answers of a model that streams (``predict_stream``), from its worker thread to the event loop.

The model's generator runs in a worker thread and hands each answer over through the event loop's
queue, at most ``STREAM_AHEAD`` answers ahead of the reader (a slow client slows the model, never
fills memory). Closing the async iterator (the client went away, or the deadline passed) stops the
model before its next answer; its generator is then closed in its thread (its ``finally`` runs).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from kserve_mesh.core.errors import DeadlineExceeded
from kserve_mesh.runtime.builtin.models import LoadedModel
from kserve_mesh.runtime.builtin.prediction import predict_stream

STREAM_AHEAD = 8  # answers a model that streams may run ahead of its reader


async def stream_answers(model_id: str, model: LoadedModel, feed: dict[str, np.ndarray],
                         pool: concurrent.futures.Executor, timeout_s: float) -> AsyncIterator[dict[str, np.ndarray]]:
    """Each answer of ``model.predict_stream(feed)`` as it comes (module docstring); its failures as
    ``prediction.predict_stream`` converts them, ``DeadlineExceeded`` past ``timeout_s``."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    ahead, stop = threading.Semaphore(STREAM_AHEAD), threading.Event()

    def put(kind: str, item: Any) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(queue.put_nowait, (kind, item))

    def produce() -> None:
        try:
            for outputs in predict_stream(model_id, model, feed):
                while not ahead.acquire(timeout=0.1):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                put("answer", outputs)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, on its loop
            put("error", exc)
        finally:
            put("end", None)

    work = loop.run_in_executor(pool, produce)
    end = loop.time() + timeout_s
    try:
        while True:
            try:
                kind, item = await asyncio.wait_for(queue.get(), max(0.001, end - loop.time()))
            except TimeoutError:
                raise DeadlineExceeded(f"model '{model_id}' did not finish answering within {timeout_s:g} s") from None
            if kind == "end":
                return
            if kind == "error":
                raise item
            ahead.release()
            yield item
    finally:
        stop.set()  # the model stops before its next answer; its thread ends on its own
        work.add_done_callback(lambda f: f.exception())
