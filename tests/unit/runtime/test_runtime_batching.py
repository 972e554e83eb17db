"""Adaptive batching (runtime/builtin/batching.py): stacking, splitting, what is never stacked,
failures that stay with their request, cancellation, deadlines, size and delay bounds; and how the
built-in runtime decides per loaded model (``batch_plan``, the model key's ``batching``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kserve_mesh.core.errors import DeadlineExceeded, InternalError, InvalidArgument, ModelLoadFailed, ModelNotFound
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.protocol import tensors
from kserve_mesh.runtime.builtin import BuiltinRuntime, LocalFetcher, RuntimeConfig
from kserve_mesh.runtime.builtin.batching import Batcher, BatchStats, stack_key
from kserve_mesh.runtime.builtin.models import BatchSettings, LoadedModel, TensorSpec, resolve_model_spec
from kserve_mesh.runtime.builtin.runtime import batch_plan

pytestmark = pytest.mark.timeout(30)


class RowSums(LoadedModel):
    """``y`` = each row's sum; refuses NaN (as sklearn does); records the batch sizes it saw.
    With a ``gate``, predict waits for it (a batch held in flight)."""

    model_type = "test"

    def __init__(self, *, inline: bool = True, gate: threading.Event | None = None, fail: bool = False,
                 aggregate: bool = False) -> None:
        self.inputs = (TensorSpec("x", "FP64", (-1, 2), dtype=np.dtype(np.float64)),)
        self.outputs = (TensorSpec("y", "FP64", (-1,)),)
        self.predict_inline = inline
        self.gate = gate
        self.fail = fail
        self.aggregate = aggregate
        self.calls: list[int] = []
        self.entered = threading.Event()

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        self.calls.append(x.shape[0])
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        if self.fail:
            raise RuntimeError("the model broke")
        if np.isnan(x).any():
            raise ValueError("Input contains NaN")
        if self.aggregate:
            return {"y": np.array([x.sum()])}
        return {"y": x.sum(axis=1)}


@pytest.fixture
def pool() -> Any:
    with concurrent.futures.ThreadPoolExecutor(2) as executor:
        yield executor


def batcher(model: RowSums, pool: Any, *, size: int = 32, delay_ms: float = 0, inline_max: int = 4096,
            stats: BatchStats | None = None, cheap_call_s: float = 0.0) -> Batcher:
    """A batcher of ``model``; RowSums' calls take microseconds, so by default these tests turn off
    the skip for cheap calls (``CHEAP_CALL_S``), which has tests of its own."""
    return Batcher("m", model, max_batch_size=size, max_batch_delay_ms=delay_ms, executor=pool,
                   inline_max_elements=inline_max, stats=stats, cheap_call_s=cheap_call_s)


def rows(*values: float, width: int = 2) -> dict[str, np.ndarray]:
    return {"x": np.array([[v] * width for v in values], dtype=np.float64)}


async def test_concurrent_requests_are_stacked_predicted_once_and_split(pool: Any) -> None:
    model, stats = RowSums(), BatchStats()
    b = batcher(model, pool, stats=stats)
    feeds = [rows(1), rows(2, 3), rows(4), rows(5, 6, 7)]
    outs = await asyncio.gather(*(b.infer(f) for f in feeds))
    assert model.calls == [7]
    assert [o["y"].tolist() for o in outs] == [[2], [4, 6], [8], [10, 12, 14]]
    snap = stats.snapshot()
    assert snap.calls == 1 and snap.total == 4


async def test_a_lone_request_is_predicted_at_once(pool: Any) -> None:
    model, stats = RowSums(), BatchStats()
    b = batcher(model, pool, stats=stats)
    await asyncio.sleep(0)  # let whatever the test runner scheduled run: the loop has nothing else ready
    coro = b.infer(rows(1, 2))
    with pytest.raises(StopIteration) as done:  # answered without giving up the loop even once
        coro.send(None)
    assert done.value.value["y"].tolist() == [2, 4]
    assert model.calls == [2] and stats.snapshot().calls == 1


async def test_each_answer_equals_the_unbatched_answer_off_the_loop(pool: Any) -> None:
    model = RowSums(inline=False)
    b = batcher(model, pool)
    feeds = [rows(float(i)) for i in range(12)]
    outs = await asyncio.gather(*(b.infer(f) for f in feeds))
    assert [o["y"].tolist() for o in outs] == [[2.0 * i] for i in range(12)]
    assert sum(model.calls) == 12 and len(model.calls) < 12


async def test_incompatible_inputs_are_not_stacked_together(pool: Any) -> None:
    model = RowSums()
    b = batcher(model, pool)
    wide = {"x": np.ones((1, 3))}  # other trailing dims (a model with free inputs would take it)
    as_int = {"x": np.ones((1, 2), dtype=np.int64)}
    outs = await asyncio.gather(b.infer(rows(1)), b.infer(wide), b.infer(as_int), b.infer(rows(2)))
    assert sorted(model.calls) == [1, 1, 2]  # the two compatible ones together, the others apart
    assert [o["y"].tolist() for o in outs] == [[2], [3], [2], [4]]
    assert stack_key({"x": np.array(["a"], dtype=object)}) is None  # BYTES never stacked
    assert stack_key({"x": np.array(1.0)}) is None  # no batch dimension
    assert stack_key({"a": np.ones((1, 2)), "b": np.ones((2, 2))}) is None  # first dims disagree


async def test_a_refused_request_does_not_fail_the_others(pool: Any) -> None:
    model = RowSums()
    b = batcher(model, pool)
    results = await asyncio.gather(b.infer(rows(1)), b.infer(rows(float("nan"))), b.infer(rows(3)),
                                   return_exceptions=True)
    assert results[0]["y"].tolist() == [2] and results[2]["y"].tolist() == [6]
    assert isinstance(results[1], InvalidArgument) and "NaN" in str(results[1])
    assert model.calls == [3, 1, 1, 1]  # the batch, refused; then each alone


async def test_a_broken_model_fails_every_request_of_the_batch(pool: Any) -> None:
    model = RowSums(fail=True)
    b = batcher(model, pool)
    results = await asyncio.gather(*(b.infer(rows(i)) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, InternalError) for r in results)
    assert model.calls == [3]


async def test_outputs_without_the_batch_dimension_fall_back_to_one_by_one(pool: Any) -> None:
    model = RowSums(aggregate=True)
    b = batcher(model, pool)
    outs = await asyncio.gather(b.infer(rows(1)), b.infer(rows(2, 3)))
    assert [o["y"].tolist() for o in outs] == [[2], [10]]
    assert model.calls == [3, 1, 2] and not b.enabled  # and never stacked again
    await asyncio.gather(b.infer(rows(1)), b.infer(rows(2)))
    assert model.calls[3:] == [1, 1]


async def test_requests_arriving_during_a_batch_join_the_next_one(pool: Any) -> None:
    gate = threading.Event()
    model = RowSums(inline=False, gate=gate)
    b = batcher(model, pool)
    first = asyncio.ensure_future(b.infer(rows(1)))
    await asyncio.to_thread(model.entered.wait, 5)
    later = [asyncio.ensure_future(b.infer(rows(float(i)))) for i in range(2, 6)]
    await asyncio.sleep(0.02)
    assert model.calls == [1]  # nothing starts while the model's batch predicts
    gate.set()
    outs = await asyncio.gather(first, *later)
    assert model.calls == [1, 4]
    assert [o["y"].tolist() for o in outs] == [[2], [4], [6], [8], [10]]


async def test_a_cancelled_waiting_request_leaves_the_others_alone(pool: Any) -> None:
    gate = threading.Event()
    model = RowSums(inline=False, gate=gate)
    b = batcher(model, pool)
    first = asyncio.ensure_future(b.infer(rows(1)))
    await asyncio.to_thread(model.entered.wait, 5)
    waiting = [asyncio.ensure_future(b.infer(rows(float(i)))) for i in range(2, 5)]
    await asyncio.sleep(0)
    waiting[1].cancel()
    await asyncio.sleep(0)
    gate.set()
    done = await asyncio.gather(first, *waiting, return_exceptions=True)
    assert isinstance(done[2], asyncio.CancelledError)
    assert [done[i]["y"].tolist() for i in (0, 1, 3)] == [[2], [4], [8]]
    assert model.calls == [1, 2]  # the cancelled request never reached the model


async def test_a_request_in_a_running_batch_can_be_cancelled(pool: Any) -> None:
    gate = threading.Event()
    model = RowSums(inline=False, gate=gate)
    b = batcher(model, pool)
    tasks = [asyncio.ensure_future(b.infer(rows(float(i)))) for i in range(3)]
    await asyncio.to_thread(model.entered.wait, 5)
    tasks[0].cancel()
    gate.set()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[0], asyncio.CancelledError)
    assert [d["y"].tolist() for d in done[1:]] == [[2], [4]]


async def test_deadlines_are_kept_while_waiting(pool: Any) -> None:
    gate = threading.Event()
    model = RowSums(inline=False, gate=gate)
    b = batcher(model, pool)
    first = asyncio.ensure_future(b.infer(rows(1)))
    await asyncio.to_thread(model.entered.wait, 5)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="did not answer within"):
        await b.infer(rows(2), timeout=0.05)
    assert time.monotonic() - started < 2
    other = asyncio.ensure_future(b.infer(rows(3)))
    gate.set()
    assert (await first)["y"].tolist() == [2] and (await other)["y"].tolist() == [6]
    assert model.calls == [1, 1]  # the request past its deadline was dropped from the queue


async def test_batches_hold_at_most_max_batch_size_rows(pool: Any) -> None:
    model = RowSums()
    b = batcher(model, pool, size=4)
    outs = await asyncio.gather(*(b.infer(rows(float(i))) for i in range(10)), b.infer(rows(*range(6))))
    assert sorted(model.calls) == [2, 4, 4, 6]  # the 6-row request alone: larger than a batch
    assert [o["y"].tolist() for o in outs[:10]] == [[2.0 * i] for i in range(10)]
    assert outs[10]["y"].tolist() == [2.0 * i for i in range(6)]


async def test_a_delay_gathers_requests_that_arrive_within_it(pool: Any) -> None:
    model = RowSums()
    b = batcher(model, pool, delay_ms=300)
    started = time.monotonic()
    first = asyncio.ensure_future(b.infer(rows(1)))
    await asyncio.sleep(0.02)
    second = asyncio.ensure_future(b.infer(rows(2)))
    outs = await asyncio.gather(first, second)
    waited = time.monotonic() - started
    assert model.calls == [2] and [o["y"].tolist() for o in outs] == [[2], [4]]
    assert 0.28 <= waited < 3  # the first request waited for the delay, not much longer


async def test_a_full_batch_does_not_wait_for_the_delay(pool: Any) -> None:
    model = RowSums()
    b = batcher(model, pool, size=3, delay_ms=5_000)
    started = time.monotonic()
    outs = await asyncio.gather(*(b.infer(rows(float(i))) for i in range(3)))
    assert time.monotonic() - started < 2 and model.calls == [3] and len(outs) == 3


async def test_closing_fails_what_still_waits(pool: Any) -> None:
    model = RowSums()
    b = batcher(model, pool, delay_ms=5_000)
    waiting = asyncio.ensure_future(b.infer(rows(1)))
    await asyncio.sleep(0.01)
    b.close()
    with pytest.raises(ModelNotFound, match="unloaded"):
        await waiting
    with pytest.raises(ModelNotFound):
        await b.infer(rows(1))
    assert model.calls == []


# -- the runtime's decision per model ----------------------------------------------------------------

def test_batch_plan_defaults_and_overrides() -> None:
    config = RuntimeConfig(batch_max_size=16, batch_max_delay_ms=1)
    model = RowSums()
    assert batch_plan(model, None, config) == (16, 1.0)
    assert batch_plan(model, BatchSettings(max_batch_size=4), config) == (4, 1.0)
    assert batch_plan(model, BatchSettings(max_batch_size=0), config) is None
    assert batch_plan(model, BatchSettings(max_batch_delay_ms=3), config) == (16, 3.0)
    assert batch_plan(model, None, RuntimeConfig(batch_max_size=1)) is None
    fixed = RowSums()
    fixed.inputs = (TensorSpec("x", "FP64", (1, 2), dtype=np.dtype(np.float64)),)
    assert batch_plan(fixed, None, config) is None  # no batch dimension
    text = RowSums()
    text.inputs = (TensorSpec("x", "BYTES", (-1,)),)
    assert batch_plan(text, BatchSettings(max_batch_size=8), config) is None
    vector = RowSums()
    vector.inputs = (TensorSpec("x", "FP32", (-1,), dtype=np.dtype(np.float32)),)
    assert batch_plan(vector, None, config) is None  # [-1] may be one vector, read as a whole...
    assert batch_plan(vector, BatchSettings(max_batch_size=8), config) == (8, 1.0)  # ...unless told
    custom = RowSums()
    custom.batch_by_default = False  # user code: off unless it (or the key) opts in
    assert batch_plan(custom, None, config) is None
    custom.batching = BatchSettings(max_batch_size=8, max_batch_delay_ms=2)
    assert batch_plan(custom, None, config) == (8, 2.0)
    assert batch_plan(custom, BatchSettings(max_batch_size=2), config) == (2, 2.0)


@pytest.mark.parametrize(("batching", "message"), [
    ("yes", "must be an object"),
    ({"max_batch_size": -1}, "max_batch_size must be an integer"),
    ({"max_batch_size": 2.5}, "max_batch_size must be an integer"),
    ({"max_batch_size": True}, "max_batch_size must be an integer"),
    ({"max_batch_delay_ms": "2"}, "max_batch_delay_ms must be a number"),
    ({"max_batch_delay_ms": 10**9}, "max_batch_delay_ms must be a number"),
    ({"max_batch": 2}, "unknown field"),
])
def test_malformed_batching_in_the_model_key_is_refused(batching: Any, message: str) -> None:
    key = json.dumps({"model_type": {"name": "sklearn"}, "batching": batching})
    with pytest.raises(ModelLoadFailed, match=f"model key 'batching'.*{message}|{message}"):
        resolve_model_spec("rt:mlserver", key)


def test_batching_in_the_model_key_is_read() -> None:
    key = json.dumps({"model_type": {"name": "sklearn"}, "batching": {"max_batch_size": 8, "max_batch_delay_ms": 2}})
    assert resolve_model_spec("rt:x", key).batching == BatchSettings(8, 2.0)
    assert resolve_model_spec("sklearn", "plain-key").batching is None


@pytest.fixture
async def runtime(models_dir: Path) -> AsyncIterator[BuiltinRuntime]:
    rt = BuiltinRuntime(RuntimeConfig(batch_max_size=8), LocalFetcher([models_dir]))
    yield rt
    await rt.close()


async def test_runtime_batches_sklearn_by_default_and_not_string_models(
        runtime: BuiltinRuntime, models_dir: Path) -> None:
    await runtime.load_model("sk", ModelInfo(type="sklearn", path=str(models_dir / "sklearn-iris")))
    await runtime.load_model("str", ModelInfo(type="string", path=str(models_dir / "string-1")))
    key = json.dumps({"model_type": {"name": "sklearn"}, "batching": {"max_batch_size": 0}})
    await runtime.load_model("sk-off", ModelInfo(type="rt:x", path=str(models_dir / "sklearn-iris"), key=key))
    assert runtime._models["sk"].batcher is not None
    assert runtime._models["str"].batcher is None and runtime._models["sk-off"].batcher is None
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]] * 4)
    alone = [tensors.decode_outputs(await runtime.infer(tensors.encode_request("sk-off", {"input-0": x[i:i + 1]})))
             for i in range(len(x))]
    together = await asyncio.gather(*(runtime.infer(tensors.encode_request("sk", {"input-0": x[i:i + 1]}, raw=i % 2 == 0))
                                      for i in range(len(x))))
    assert [tensors.decode_outputs(r)["output-0"].tolist() for r in together] == [a["output-0"].tolist() for a in alone]
    snap = runtime.batch_stats()
    assert snap.total == len(x) and snap.calls == 2  # 12 requests in batches of at most 8


async def test_a_malformed_batching_key_fails_the_load_clearly(runtime: BuiltinRuntime, models_dir: Path) -> None:
    key = json.dumps({"model_type": {"name": "sklearn"}, "batching": {"max_batch_size": "many"}})
    with pytest.raises(ModelLoadFailed, match="max_batch_size must be an integer"):
        await runtime.load_model("bad", ModelInfo(type="rt:x", path=str(models_dir / "sklearn-iris"), key=key))
    assert not runtime.is_loaded("bad")


async def test_unloading_a_model_fails_its_waiting_requests(models_dir: Path) -> None:
    rt = BuiltinRuntime(RuntimeConfig(batch_max_delay_ms=5_000), LocalFetcher([models_dir]))
    try:
        await rt.load_model("sk", ModelInfo(type="sklearn", path=str(models_dir / "sklearn-iris")))
        waiting = asyncio.ensure_future(rt.infer(tensors.encode_request("sk", {"input-0": np.ones((1, 4))})))
        await asyncio.sleep(0.01)
        await rt.unload_model("sk")
        with pytest.raises(ModelNotFound):
            await waiting
    finally:
        await rt.close()


# -- settings ----------------------------------------------------------------------------------------

def test_settings_reach_the_in_process_runtime_and_the_child(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    from kserve_mesh.runtime.server import _parser
    from kserve_mesh.server.runtime_setup import child_args
    from kserve_mesh.settings import MeshSettings

    monkeypatch.setenv("KSERVE_MESH_BATCH_MAX_SIZE", "8")
    monkeypatch.setenv("KSERVE_MESH_BATCH_MAX_DELAY_MS", "2.5")
    s = MeshSettings()
    assert (s.batch_max_size, s.batch_max_delay_ms) == (8, 2.5)
    args = child_args(s, tmp_path)
    parsed = _parser().parse_args(args)
    assert (parsed.batch_max_size, parsed.batch_max_delay_ms) == (8, 2.5)
    defaults = _parser().parse_args([])
    assert (defaults.batch_max_size, defaults.batch_max_delay_ms) == (32, 0.0)
    with pytest.raises(ValueError, match="batch_max_size"):
        MeshSettings(batch_max_size=-1)
    with pytest.raises(ValueError, match="must not be negative"):
        RuntimeConfig(batch_max_delay_ms=-1)


# -- the metric --------------------------------------------------------------------------------------

def test_batch_sizes_render_as_a_prometheus_histogram() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from kserve_mesh.api.metrics import MeshMetrics
    from kserve_mesh.core.batching import BATCH_SIZE_BUCKETS

    stats = BatchStats()
    for size in (1, 1, 3, 8, 300):
        stats.observe(size)
    snap = stats.snapshot()
    assert len(snap.counts) == len(BATCH_SIZE_BUCKETS) + 1 and snap.calls == 5 and snap.total == 313
    metrics = MeshMetrics()
    assert b"kserve_mesh_batch_size" not in metrics.render()[0]  # nothing batched yet: no series
    metrics.set_batches(snap.counts, snap.total)
    family = next(f for f in text_string_to_metric_families(metrics.render()[0].decode())
                  if f.name == "kserve_mesh_batch_size")
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[("kserve_mesh_batch_size_bucket", "1.0")] == 2
    assert samples[("kserve_mesh_batch_size_bucket", "4.0")] == 3
    assert samples[("kserve_mesh_batch_size_bucket", "8.0")] == 4
    assert samples[("kserve_mesh_batch_size_bucket", "256.0")] == 4
    assert samples[("kserve_mesh_batch_size_bucket", "+Inf")] == 5
    assert samples[("kserve_mesh_batch_size_count", None)] == 5
    assert samples[("kserve_mesh_batch_size_sum", None)] == 313


# -- custom models: off unless they opt in -----------------------------------------------------------

SEEN_ROWS = """
    import numpy as np
    from kserve_mesh.model import Model

    class Seen(Model):
        def predict(self, inputs):
            x = inputs["x"]
            return {"y": x * 2, "rows": np.full(len(x), len(x))}
    """


async def test_custom_models_batch_only_when_their_settings_opt_in(tmp_path: Path) -> None:
    from format_models import make_custom_source

    make_custom_source(tmp_path / "plain", SEEN_ROWS)
    make_custom_source(tmp_path / "opted", SEEN_ROWS)
    (tmp_path / "opted" / "model-settings.json").write_text('{"max_batch_size": 8, "max_batch_time": 0.02}')
    make_custom_source(tmp_path / "bad", SEEN_ROWS)
    (tmp_path / "bad" / "model-settings.json").write_text('{"max_batch_time": "soon"}')
    rt = BuiltinRuntime(RuntimeConfig(), LocalFetcher([tmp_path]))
    try:
        for name in ("plain", "opted"):
            await rt.load_model(name, ModelInfo(type="python", path=str(tmp_path / name)))
        with pytest.raises(ModelLoadFailed, match="max_batch_time in model-settings.json must be a number"):
            await rt.load_model("bad", ModelInfo(type="python", path=str(tmp_path / "bad")))

        async def rows_seen(model_id: str) -> list[int]:
            answers = await asyncio.gather(*(rt.infer(tensors.encode_request(model_id, {"x": np.full((1, 2), float(i))}))
                                             for i in range(6)))
            outs = [tensors.decode_outputs(a) for a in answers]
            assert [o["y"].tolist() for o in outs] == [[[2.0 * i] * 2] for i in range(6)]
            return [int(o["rows"][0]) for o in outs]

        assert await rows_seen("plain") == [1] * 6
        assert max(await rows_seen("opted")) > 1
    finally:
        await rt.close()


@pytest.mark.parametrize("folder", ["xgboost-iris", "lightgbm-iris", "onnx-iris"])
async def test_other_formats_with_a_batch_dimension_are_batched_by_default(
        runtime: BuiltinRuntime, models_dir: Path, folder: str) -> None:
    info = ModelInfo(type="", path=str(models_dir / folder))
    await runtime.load_model("m", info)
    key = json.dumps({"model_type": {"name": folder.split("-")[0]}, "batching": {"max_batch_size": 0}})
    await runtime.load_model("alone", ModelInfo(type="rt:x", path=info.path, key=key))
    assert runtime._models["m"].batcher is not None and runtime._models["alone"].batcher is None
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]] * 3, dtype=np.float32)
    name = (await runtime.model_metadata("m")).inputs[0].name

    def request(model_id: str, i: int) -> Any:
        return tensors.encode_request(model_id, {name: x[i:i + 1]})

    alone = [tensors.decode_outputs(await runtime.infer(request("alone", i))) for i in range(len(x))]
    before = runtime.batch_stats().calls
    together = [tensors.decode_outputs(r) for r in await asyncio.gather(*(runtime.infer(request("m", i))
                                                                             for i in range(len(x))))]
    assert runtime.batch_stats().calls - before < len(x)
    for got, want in zip(together, alone, strict=True):
        assert list(got) == list(want)
        for output in want:
            np.testing.assert_allclose(got[output], want[output], rtol=1e-5)


async def test_no_request_hangs_when_the_worker_threads_are_gone() -> None:
    executor = concurrent.futures.ThreadPoolExecutor(1)
    executor.shutdown()
    b = batcher(RowSums(inline=False), executor)
    results = await asyncio.gather(*(b.infer(rows(float(i)), timeout=5) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ModelNotFound) for r in results), results


async def test_waiting_is_given_up_while_it_forms_no_batches_then_tried_again(pool: Any) -> None:
    """A front door that hands the loop one request per turn (grpc.aio) never lets a batch form:
    after SOLO_STREAK single-request batches, requests predict at once (no wait, no queue) for
    SOLO_SKIP requests, then waiting is tried again."""
    from kserve_mesh.runtime.builtin.batching import SOLO_SKIP, SOLO_STREAK

    model, stats = RowSums(), BatchStats()
    b = batcher(model, pool, stats=stats)
    loop = asyncio.get_running_loop()
    busy = True

    def keep_busy() -> None:  # the loop always has something ready: it is never idle
        if busy:
            loop.call_soon(keep_busy)

    loop.call_soon(keep_busy)
    try:
        await asyncio.sleep(0)

        def answered_at_once(value: float) -> bool:
            coro = b.infer(rows(value))
            try:
                coro.send(None)
            except StopIteration:
                return True
            coro.close()  # it waited: its queued request is dropped
            return False

        assert not answered_at_once(0)  # the loop is busy: a request waits a turn for others
        for i in range(SOLO_STREAK):  # each waits a turn, and is predicted alone
            assert (await b.infer(rows(i)))["y"].tolist() == [2 * i]
        assert stats.snapshot().total == stats.snapshot().calls == SOLO_STREAK
        assert all(answered_at_once(i) for i in range(SOLO_SKIP))  # waiting given up
        assert not answered_at_once(0)  # tried again
        # concurrent requests still stack while waiting is tried
        outs = await asyncio.gather(*(b.infer(rows(v)) for v in (1, 2, 3)))
        assert [o["y"].tolist() for o in outs] == [[2], [4], [6]] and model.calls[-1] == 3
    finally:
        busy = False


# The skip for cheap calls, with a threshold far from both models' call times (RowSums: microseconds;
# SlowRowSums: DEAR), so the tests do not depend on this machine's speed. The default is CHEAP_CALL_S.
CHEAP = 0.0005
DEAR = 0.01


def test_the_default_threshold_is_the_documented_one(pool: Any) -> None:
    from kserve_mesh.runtime.builtin.batching import CHEAP_CALL_S

    b = Batcher("m", RowSums(), max_batch_size=4, max_batch_delay_ms=0, executor=pool, inline_max_elements=16)
    assert b._cheap_call_s == CHEAP_CALL_S == 50e-6
    b = Batcher("m", RowSums(), max_batch_size=4, max_batch_delay_ms=1, executor=pool, inline_max_elements=16)
    assert b._cheap_call_s == 0  # an explicit delay always batches


class SlowRowSums(RowSums):
    """RowSums whose calls take ``seconds`` (a model worth batching), changeable between calls."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.seconds:
            time.sleep(self.seconds)
        return super().predict(inputs)


async def test_a_model_whose_calls_are_cheap_is_not_batched_and_one_that_costs_is(pool: Any) -> None:
    cheap, stats = RowSums(), BatchStats()
    b = batcher(cheap, pool, stats=stats, cheap_call_s=CHEAP)
    first = await asyncio.gather(*(b.infer(rows(v)) for v in (1, 2, 3, 4)))
    assert cheap.calls == [4]  # nothing measured yet: stacked
    assert b.call_s is not None and b.call_s < CHEAP
    then = await asyncio.gather(*(b.infer(rows(v)) for v in (1, 2, 3, 4)))
    assert cheap.calls == [4, 1, 1, 1, 1]  # each predicted at once: a batch would cost more than it saves
    assert [o["y"].tolist() for o in then] == [o["y"].tolist() for o in first] == [[2], [4], [6], [8]]
    assert stats.snapshot().calls == 5 and stats.snapshot().total == 8

    slow = SlowRowSums(DEAR)
    b = batcher(slow, pool, cheap_call_s=CHEAP)
    for _ in range(2):
        await asyncio.gather(*(b.infer(rows(v)) for v in (1, 2, 3, 4)))
    assert slow.calls == [4, 4] and b.call_s is not None and b.call_s > CHEAP


async def test_a_model_whose_calls_grow_dear_is_batched_again(pool: Any) -> None:
    model = SlowRowSums(0.0)
    b = batcher(model, pool, cheap_call_s=CHEAP)
    await asyncio.gather(*(b.infer(rows(v)) for v in (1, 2)))
    await asyncio.gather(*(b.infer(rows(v)) for v in (1, 2)))
    assert model.calls == [2, 1, 1]
    model.seconds = DEAR  # e.g. the requests grew: every call measured so far was at once, and dear now
    await b.infer(rows(1))
    outs = await asyncio.gather(*(b.infer(rows(v)) for v in (1, 2, 3)))
    assert model.calls == [2, 1, 1, 1, 3] and [o["y"].tolist() for o in outs] == [[2], [4], [6]]


async def test_an_explicit_delay_batches_even_cheap_calls(pool: Any) -> None:
    model = RowSums()
    b = batcher(model, pool, delay_ms=5, cheap_call_s=CHEAP)
    for _ in range(3):
        await asyncio.gather(*(b.infer(rows(v)) for v in (1, 2, 3)))
    assert model.calls == [3, 3, 3]
