"""Adaptive batching per model (as MLServer's adaptive batching and Triton's dynamic batcher).

Concurrent requests for one model are stacked along the batch dimension (dim 0), predicted once,
and the outputs split back, row ranges to each request. One ``Batcher`` per loaded model, living on
the runtime's event loop:

- **Adaptive**: a request that finds nothing queued and no batch predicting is predicted at once
  when nothing else is ready to run on the event loop (no other request can arrive before the loop
  polls again: a lone request pays nothing), else in the next turn of the loop
  (``max_batch_delay_ms`` 0, the default), or at most ``max_batch_delay_ms`` later; requests
  arriving in the same loop turn, or while the model's previous batch predicts (in a worker
  thread), join the next batch. One batch per model predicts at a time. A batch holds at
  most ``max_batch_size`` rows; a request of that many rows or more predicts alone.
- **Compatible only**: requests are stacked only when their inputs have the same names, dtypes and
  trailing dimensions (``stack_key``); BYTES/object inputs and 0-d inputs never are. A model whose
  outputs do not have the stacked rows as dim 0 cannot be split: each request of that batch
  predicts alone, and the batcher turns itself off for that model.
- **Failures stay with their request**: when the model refuses a stacked batch (``InvalidArgument``)
  each request is predicted alone, so one bad request does not fail the others; any other error
  goes to every request of the batch.
- **Nothing hangs**: every request's future is resolved, cancelled or timed out; a waiting request
  that is cancelled or passes its deadline leaves the queue without touching the others; closing
  the batcher (unload) fails what is still queued.

- **Batching only where it pays**: a batch saves model calls, and costs each request a queue, a
  future and a turn of the loop. A model whose calls take under ``CHEAP_CALL_S`` (a moving average
  of the measured calls; scikit-learn's linear models predicted from their coefficients take a few
  microseconds) saves less than that, so with the default delay (0) its requests predict at once,
  as if batching were off, while their calls stay that cheap. An explicit ``max_batch_delay_ms``
  always batches.
- **Waiting only where it forms batches**: when ``SOLO_STREAK`` batches in a row held one request each (a
  front door that hands the loop one request per turn, as grpc.aio does), the next ``SOLO_SKIP``
  requests that find nothing queued predict at once, as if batching were off; then waiting is tried
  again. Under REST concurrency batches form and this never triggers.

Small batches predict on the event loop, as unbatched requests do (``inline_max_elements``);
larger ones in the runtime's worker threads. ``BatchStats`` counts how many requests each model
call predicted (the ``kserve_mesh_batch_size`` histogram).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from kserve_mesh.core.batching import BATCH_SIZE_BUCKETS
from kserve_mesh.core.errors import DeadlineExceeded, InternalError, InvalidArgument, MeshError, ModelNotFound
from kserve_mesh.runtime.builtin.models import LoadedModel
from kserve_mesh.runtime.builtin.prediction import predict as _predict

logger = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]
Feed = dict[str, np.ndarray]

SOLO_STREAK = 8
"""Batches in a row of a single request after which waiting is given up for a while."""
SOLO_SKIP = 64
"""Requests then predicted at once (when nothing is queued) before waiting is tried again."""
CHEAP_CALL_S = 50e-6
"""Model calls cheaper than this (moving average) are not worth batching (with the default delay)."""
CALL_EMA = 0.1
"""Weight of the newest call in the moving average of a model call's duration."""



class BatchStats:
    """A cumulative histogram of batch sizes (requests predicted by one model call), shared by the
    batchers of one runtime. Thread-safe; ``snapshot`` gives (bucket counts, sum, count)."""

    def __init__(self) -> None:
        self._counts = [0] * (len(BATCH_SIZE_BUCKETS) + 1)  # the last: above the largest bound
        self._sum = 0
        self._lock = threading.Lock()

    def observe(self, size: int) -> None:
        index = next((i for i, bound in enumerate(BATCH_SIZE_BUCKETS) if size <= bound), len(BATCH_SIZE_BUCKETS))
        with self._lock:
            self._counts[index] += 1
            self._sum += size

    def snapshot(self) -> BatchSnapshot:
        with self._lock:
            return BatchSnapshot(tuple(self._counts), self._sum)


@dataclass(frozen=True, slots=True)
class BatchSnapshot:
    """Batch sizes as counted so far: ``counts[i]`` model calls of a size in bucket i (not
    cumulative; ``BATCH_SIZE_BUCKETS`` then +Inf), ``total`` requests over all calls."""

    counts: tuple[int, ...] = ()
    total: int = 0

    @property
    def calls(self) -> int:
        return sum(self.counts)


def stack_key(feed: Feed) -> tuple[object, ...] | None:
    """What two requests must share to be stacked: input names, dtypes, trailing dimensions.
    None when this one cannot be (a BYTES/object input, an input without dimensions, inputs whose
    first dimensions differ)."""
    rows = -1
    parts: list[object] = []
    for name in sorted(feed):
        arr = feed[name]
        if arr.ndim == 0 or arr.dtype.kind in "OUSV":
            return None
        if rows < 0:
            rows = arr.shape[0]
        elif arr.shape[0] != rows:
            return None
        parts.append((name, arr.dtype.str, arr.shape[1:]))
    return tuple(parts) if parts else None


def _idle(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether nothing else is ready to run in this turn of ``loop`` (no other request can reach a
    batcher before the loop polls for I/O again). asyncio's own loop keeps its ready callbacks in
    ``_ready``; another loop (uvloop) is never taken for idle, so requests always wait one turn."""
    ready = getattr(loop, "_ready", None)
    return ready is not None and not ready


def _rows(feed: Feed) -> int:
    return next(iter(feed.values())).shape[0]


@dataclass(slots=True, eq=False)
class _Item:
    feed: Feed
    key: tuple[object, ...]
    rows: int
    future: asyncio.Future[Outputs]
    arrived: float
    queued: bool = True


@dataclass(slots=True)
class _Outcome:
    """What one batch's model calls gave each request (outputs or an error), and their sizes."""

    results: list[Outputs | MeshError] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    unsplittable: bool = False


class Batcher:
    """The adaptive batcher of one loaded model (module docstring). Use it on one event loop."""

    def __init__(self, model_id: str, model: LoadedModel, *, max_batch_size: int, max_batch_delay_ms: float,
                 executor: concurrent.futures.Executor, inline_max_elements: int,
                 stats: BatchStats | None = None,
                 predict: Callable[[str, LoadedModel, Feed], Outputs] = _predict,
                 cheap_call_s: float = CHEAP_CALL_S) -> None:
        if max_batch_size < 2:
            raise ValueError(f"a batcher needs max_batch_size >= 2, got {max_batch_size}")
        self.model_id = model_id
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_batch_delay_s = max(0.0, max_batch_delay_ms) / 1000
        self._executor = executor
        self._inline_max = inline_max_elements if model.predict_inline else -1
        self._stats = stats
        self._predict = predict
        self._queue: deque[_Item] = deque()
        self._queued_rows = 0
        self._running = False
        self._handle: asyncio.Handle | None = None
        self._handle_due = 0.0
        self._closed = False
        self._solo_streak = 0  # batches in a row that held one request
        self._skip = 0  # requests still to predict at once, waiting having not paid
        self._cheap_call_s = cheap_call_s if self.max_batch_delay_s <= 0 else 0.0
        self.call_s: float | None = None  # moving average of a model call's duration (seconds)
        self.enabled = True  # False once the model's outputs proved not splittable

    # -- the request side ----------------------------------------------------------------------

    async def infer(self, feed: Feed, timeout: float | None = None) -> Outputs:
        """The model's outputs for one request's validated inputs, predicted in a batch when others
        are compatible; raises what the model's predict would (``prediction.py``), or
        ``DeadlineExceeded`` after ``timeout`` seconds."""
        if self._closed:
            raise ModelNotFound(self.model_id, f"model '{self.model_id}' was unloaded")
        key = stack_key(feed) if self.enabled else None
        rows = _rows(feed) if key is not None else 0
        if key is None or rows >= self.max_batch_size:
            return await self._alone(feed, timeout)
        call_s = self.call_s
        if (call_s is not None and call_s < self._cheap_call_s and not self._queue and not self._running
                and sum(a.size for a in feed.values()) <= self._inline_max):
            # The model's calls cost less than a batch would save: predicted at once, on the loop.
            if self._stats is not None:
                self._stats.observe(1)
            return self._call(feed)
        loop = asyncio.get_running_loop()
        free = self.max_batch_delay_s <= 0 and not self._running and self._handle is None
        now = free and _idle(loop)
        if free and not now and self._skip > 0 and not self._queue:
            self._skip -= 1  # waiting has not formed batches lately: no wait for this one
            now = True
        if now and not self._queue and sum(a.size for a in feed.values()) <= self._inline_max:
            # Nothing else can arrive before the loop polls again, and it predicts on the loop: at once.
            if self._stats is not None:
                self._stats.observe(1)
            return self._call(feed)
        item = _Item(feed, key, rows, loop.create_future(), loop.time())
        self._queue.append(item)
        self._queued_rows += rows
        if now:
            self._flush()  # starts the model's batch in a worker thread; later arrivals queue behind it
        else:
            self._schedule(loop)
        if item.future.done():  # predicted on the loop just now
            return item.future.result()
        try:
            async with asyncio.timeout(timeout):
                return await item.future
        except TimeoutError:
            raise DeadlineExceeded(f"model '{self.model_id}' did not answer within {timeout:g} s") from None
        finally:
            if not item.future.done():
                item.future.cancel()  # its batch's answer, if one comes, is dropped
            self._left(item)

    async def _alone(self, feed: Feed, timeout: float | None) -> Outputs:
        """One request predicted by itself, as the runtime does without batching."""
        if self._stats is not None:
            self._stats.observe(1)
        if sum(a.size for a in feed.values()) <= self._inline_max:
            return self._call(feed)
        work = asyncio.get_running_loop().run_in_executor(self._executor, self._predict, self.model_id,
                                                          self.model, feed)
        try:
            return await asyncio.wait_for(work, timeout)
        except TimeoutError:  # the predict finishes in its thread; the caller is answered now
            raise DeadlineExceeded(f"model '{self.model_id}' did not answer within {timeout:g} s") from None

    def _left(self, item: _Item) -> None:
        """A request no longer waits (answered, cancelled, timed out): it leaves the queue's count
        (``_schedule`` and ``_take`` drop it from the queue itself)."""
        if item.queued:
            item.queued = False
            self._queued_rows -= item.rows

    # -- the batch side ------------------------------------------------------------------------

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        """Arrange the next flush: now when the queue holds a full batch or the oldest request has
        waited its delay, else when it will have; nothing while a batch predicts (its end flushes)."""
        if self._running or self._closed:
            return
        while self._queue and not self._queue[0].queued:
            self._queue.popleft()
        if not self._queue:
            return
        now = loop.time()
        due = now if self._queued_rows >= self.max_batch_size else self._queue[0].arrived + self.max_batch_delay_s
        due = max(due, now)
        if self._handle is not None:
            if self._handle_due <= due:
                return
            self._handle.cancel()
        self._handle_due = due
        self._handle = loop.call_soon(self._flush) if due <= now else loop.call_at(due, self._flush)

    def _take(self) -> list[_Item]:
        """The next batch: the oldest waiting request and those after it with its stack key, up to
        ``max_batch_size`` rows; the others keep their place."""
        first: _Item | None = None
        batch: list[_Item] = []
        rest: deque[_Item] = deque()
        rows = 0
        while self._queue:
            item = self._queue.popleft()
            if not item.queued:
                continue
            if first is None:
                first = item
            if item.key == first.key and rows + item.rows <= self.max_batch_size:
                batch.append(item)
                rows += item.rows
                item.queued = False
                self._queued_rows -= item.rows
                if rows >= self.max_batch_size:
                    break
            else:
                rest.append(item)
        rest.extend(self._queue)
        self._queue = rest
        return batch

    def _flush(self) -> None:
        self._handle = None
        if self._running or self._closed:
            return
        batch = self._take()
        if not batch:
            return
        if len(batch) > 1:
            self._solo_streak = 0
        else:
            self._solo_streak += 1
            if self._solo_streak >= SOLO_STREAK:
                self._solo_streak, self._skip = 0, SOLO_SKIP
        loop = asyncio.get_running_loop()
        elements = sum(a.size for item in batch for a in item.feed.values())
        if elements <= self._inline_max:
            try:
                outcome = self._run(batch)
            except Exception as exc:
                logger.error("batch predict of model %s failed", self.model_id, exc_info=exc)
                outcome = self._failed(batch, exc)
            self._deliver(batch, outcome)
            self._schedule(loop)
            return
        try:
            work = loop.run_in_executor(self._executor, self._run, batch)
        except RuntimeError as exc:  # the worker threads are shut down (the runtime is closing)
            self._deliver(batch, self._failed(batch, ModelNotFound(self.model_id, f"model '{self.model_id}' was "
                                                                   f"unloaded ({exc})")))
            return
        self._running = True
        work.add_done_callback(lambda done: self._finished(batch, done))

    def _finished(self, batch: list[_Item], done: asyncio.Future[_Outcome]) -> None:
        self._running = False
        if done.cancelled():  # the pool shut down under it
            outcome = _Outcome([ModelNotFound(self.model_id, f"model '{self.model_id}' was unloaded")] * len(batch))
        elif done.exception() is not None:
            exc = done.exception()
            logger.error("batch predict of model %s failed", self.model_id, exc_info=exc)
            outcome = self._failed(batch, exc)
        else:
            outcome = done.result()
        self._deliver(batch, outcome)
        if not self._closed:
            self._schedule(asyncio.get_running_loop())

    def _failed(self, batch: list[_Item], exc: BaseException) -> _Outcome:
        error = exc if isinstance(exc, MeshError) else InternalError(
            f"model '{self.model_id}' failed to predict a batch ({type(exc).__name__}); see the server log")
        return _Outcome([error] * len(batch))

    def _deliver(self, batch: list[_Item], outcome: _Outcome) -> None:
        if outcome.unsplittable and self.enabled:
            self.enabled = False
            logger.info("model %s: outputs do not follow the batch dimension; batching turned off for it",
                        self.model_id)
        if self._stats is not None:
            for size in outcome.calls:
                self._stats.observe(size)
        for item, result in zip(batch, outcome.results, strict=True):
            if item.future.done():
                continue  # cancelled or timed out meanwhile
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)

    def _run(self, batch: list[_Item]) -> _Outcome:
        """Predict a batch (blocking: on the loop for small ones, else in a worker thread)."""
        if len(batch) == 1:
            return _Outcome([self._one(batch[0].feed)], [1])
        feed = {name: np.concatenate([item.feed[name] for item in batch]) for name in batch[0].feed}
        total = sum(item.rows for item in batch)
        try:
            outputs = self._call(feed)
        except InvalidArgument:  # someone's rows were refused: each request on its own
            return _Outcome([self._one(item.feed) for item in batch], [1] * len(batch))
        except MeshError as err:
            return _Outcome([err] * len(batch), [len(batch)])
        if not outputs or any(a.ndim == 0 or a.shape[0] != total for a in outputs.values()):
            return _Outcome([self._one(item.feed) for item in batch], [1] * len(batch), unsplittable=True)
        results: list[Outputs | MeshError] = []
        start = 0
        for item in batch:
            end = start + item.rows
            results.append({name: arr[start:end] for name, arr in outputs.items()})
            start = end
        return _Outcome(results, [len(batch)])

    def _one(self, feed: Feed) -> Outputs | MeshError:
        try:
            return self._call(feed)
        except MeshError as err:
            return err

    def _call(self, feed: Feed) -> Outputs:
        """One model call (blocking), timed into ``call_s``."""
        start = time.perf_counter()
        try:
            return self._predict(self.model_id, self.model, feed)
        finally:
            spent = time.perf_counter() - start
            last = self.call_s
            self.call_s = spent if last is None else last + CALL_EMA * (spent - last)

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Fail every request still queued (the model is unloaded); a batch predicting finishes."""
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        while self._queue:
            item = self._queue.popleft()
            self._left(item)
            if not item.future.done():
                item.future.set_exception(ModelNotFound(self.model_id, f"model '{self.model_id}' was unloaded "
                                                        "while the request waited for its batch"))
