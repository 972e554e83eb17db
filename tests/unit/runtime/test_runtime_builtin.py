"""BuiltinRuntime through its ModelRuntime methods: load, sizes, infer, metadata, unload, errors,
and loads that time out or are cancelled (which must leave nothing loaded)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from kserve_mesh.core.errors import (
    Cancelled,
    CapacityExceeded,
    DeadlineExceeded,
    InvalidArgument,
    ModelLoadFailed,
    ModelNotFound,
    StorageNotFound,
)
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.protocol import tensors, v2
from kserve_mesh.runtime.builtin import BuiltinRuntime, LocalFetcher, RuntimeConfig
from kserve_mesh.runtime.spi import RuntimeState


class GatedFetcher(LocalFetcher):
    """A local fetcher whose fetch waits for ``gate`` (to hold a load in flight) and that records
    releases."""

    def __init__(self, roots: list[Path]) -> None:
        super().__init__(roots)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.released: list[str] = []

    def fetch(self, model_id: str, path: str, key: str = "") -> Path:
        self.entered.set()
        assert self.gate.wait(10), "test gate never opened"
        return super().fetch(model_id, path, key)

    def release(self, model_id: str) -> None:
        self.released.append(model_id)


@pytest.fixture
async def runtime(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # Local paths anywhere under this session's temporary folders (the models, each test's tmp_path).
    rt = BuiltinRuntime(RuntimeConfig(capacity_bytes=1 << 30), LocalFetcher([tmp_path_factory.getbasetemp()]))
    yield rt
    await rt.close()


def request_for(model_id: str, sample: dict[str, Any], make_models: ModuleType, raw: bool = False) -> Any:
    return tensors.encode_request(model_id, make_models.arrays_of(sample["request"]["inputs"]), raw=raw)


def assert_outputs(response: Any, sample: dict[str, Any], make_models: ModuleType) -> None:
    got = tensors.decode_outputs(response)
    expected = make_models.arrays_of(sample["expected"]["outputs"])
    assert list(got) == list(expected)
    for name, want in expected.items():
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6)
        else:
            assert got[name].tolist() == want.tolist()


@pytest.mark.parametrize("raw", [False, True])
async def test_load_infer_unload_every_example_model(
    runtime: BuiltinRuntime, models_dir: Path, samples: dict[str, Any], make_models: ModuleType, raw: bool
) -> None:
    for model_id, sample in samples.items():
        result = await runtime.load_model(model_id, ModelInfo(type=sample["type"], path=str(models_dir / model_id)))
        assert result.size_bytes > 0
        assert await runtime.model_size(model_id) == result.size_bytes
        response = await runtime.infer(request_for(model_id, sample, make_models, raw=raw))
        assert response.model_name == model_id
        assert bool(response.raw_output_contents) == raw
        assert_outputs(response, sample, make_models)
    assert set(runtime.loaded_models()) == set(samples)
    for model_id, sample in samples.items():
        await runtime.unload_model(model_id)
        with pytest.raises(ModelNotFound, match=f"'{model_id}' is not loaded"):
            await runtime.infer(request_for(model_id, sample, make_models))
    assert runtime.loaded_models() == {}


async def test_sizes_are_measured_with_a_disk_floor_and_predicted_conservatively(
    runtime: BuiltinRuntime, models_dir: Path
) -> None:
    path = models_dir / "lightgbm-iris"
    disk = (path / "model.txt").stat().st_size
    info = ModelInfo(type="lightgbm", path=str(path))
    predicted = await runtime.predict_model_size("m", info)
    assert predicted == disk * 2 + 256 * 1024
    result = await runtime.load_model("m", info)
    assert result.size_bytes >= disk * 1.25
    string_info = ModelInfo(type="string", path=str(models_dir / "string-1"))
    assert (await runtime.load_model("s", string_info)).size_bytes == 2048 + len(b"string-1:")
    assert await runtime.predict_model_size("s", string_info) == 2048 + len(b"string-1:")
    remote = ModelInfo(type="sklearn", path="s3://bucket/model")
    assert await runtime.predict_model_size("r", remote) == runtime.config.default_model_size_bytes
    hinted = ModelInfo(type="rt:mlserver", path="s3://b/m", key='{"model_type": {"name": "onnx"}, "disk_size_bytes": 1000}')
    assert await runtime.predict_model_size("h", hinted) == 2000 + 256 * 1024


async def test_status_metadata_and_modelmesh_serving_style_load(
    runtime: BuiltinRuntime, models_dir: Path
) -> None:
    status = await runtime.runtime_status()
    assert status.state == RuntimeState.READY
    assert (status.capacity_bytes, status.max_loading_concurrency) == (1 << 30, 1)
    assert (status.model_loading_timeout_ms, status.default_model_size_bytes) == (90_000, 1 << 20)
    key = '{"model_type": {"name": "onnx"}, "storage_key": ""}'
    await runtime.load_model("onnx__isvc-1", ModelInfo(type="rt:kserve-mesh", path=str(models_dir / "onnx-iris"), key=key))
    meta = await runtime.model_metadata("onnx__isvc-1")
    assert meta.name == "onnx__isvc-1" and meta.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("input-0", "FP32", [-1, 4])]
    assert [t.name for t in meta.outputs] == ["label", "probabilities"]
    # an empty type is detected from the file; a second load of a loaded id is a no-op
    first = await runtime.load_model("auto", ModelInfo(type="", path=str(models_dir / "xgboost-iris")))
    assert await runtime.load_model("auto", ModelInfo(type="", path=str(models_dir / "xgboost-iris"))) == first
    with pytest.raises(ModelNotFound):
        await runtime.model_metadata("absent")
    with pytest.raises(ModelNotFound):
        await runtime.model_size("absent")
    await runtime.unload_model("absent")  # unknown ids are fine


async def test_requested_outputs_select_what_comes_back(
    runtime: BuiltinRuntime, models_dir: Path, samples: dict[str, Any], make_models: ModuleType
) -> None:
    await runtime.load_model("onnx", ModelInfo(type="onnx", path=str(models_dir / "onnx-iris")))
    request = request_for("onnx", samples["onnx-iris"], make_models)
    request.outputs.add(name="label")
    response = await runtime.infer(request)
    assert [o.name for o in response.outputs] == ["label"]
    assert tensors.decode_outputs(response)["label"].tolist() == [0, 1, 2]


async def test_bad_inputs_are_invalid_arguments_naming_the_input(
    runtime: BuiltinRuntime, models_dir: Path
) -> None:
    await runtime.load_model("sk", ModelInfo(type="sklearn", path=str(models_dir / "sklearn-iris")))
    await runtime.load_model("str", ModelInfo(type="string", path=str(models_dir / "string-1")))
    cases = [
        (v2.ModelInferRequest(model_name="sk"), r"missing input 'input-0' \(FP64 \[-1, 4\]\)"),
        (tensors.encode_request("sk", {"input-0": np.ones((2, 3))}), "'input-0' of model 'sk' has 3 features; the model expects 4"),
        (tensors.encode_request("sk", {"input-0": np.ones(4)}), r"'input-0' of model 'sk' has shape \[4\]; the model expects \[-1, 4\]"),
        (tensors.encode_request("sk", {"x": np.ones((1, 4))}), "model 'sk' has no input 'x': its input is 'input-0'"),
        (tensors.encode_request("sk", {"input-0": np.array([b"a", b"b"], dtype=object)}), "datatype BYTES; the model expects FP64"),
        (tensors.encode_request("str", {"input-0": np.ones(2, dtype=np.float32)}), "'input-0' of model 'str' has datatype FP32; the model expects BYTES"),
        (tensors.encode_request("sk", {"a": np.ones((1, 4)), "b": np.ones((1, 4))}), "model 'sk' has no input 'a'"),
    ]
    for request, message in cases:
        with pytest.raises(InvalidArgument, match=message):
            await runtime.infer(request)
    # the input under a name ModelMesh's examples use is accepted, ints cast
    response = await runtime.infer(tensors.encode_request("sk", {"predict": np.ones((1, 4), dtype=np.int32)}))
    assert tensors.decode_outputs(response)["output-0"].shape == (1,)


async def test_large_requests_predict_off_the_loop(models_dir: Path) -> None:
    rt = BuiltinRuntime(RuntimeConfig(inline_infer_max_elements=8), LocalFetcher([models_dir]))
    try:
        await rt.load_model("sk", ModelInfo(type="sklearn", path=str(models_dir / "sklearn-iris")))
        response = await rt.infer(tensors.encode_request("sk", {"input-0": np.tile([5.1, 3.5, 1.4, 0.2], (100, 1))}))
        assert tensors.decode_outputs(response)["output-0"].tolist() == [0] * 100
    finally:
        await rt.close()


async def test_load_failures_are_clear_and_leave_nothing(runtime: BuiltinRuntime, tmp_path: Path) -> None:
    with pytest.raises(StorageNotFound, match="does not exist"):
        await runtime.load_model("gone", ModelInfo(type="sklearn", path=str(tmp_path / "gone")))
    (tmp_path / "model.onnx").write_bytes(b"garbage")
    with pytest.raises(ModelLoadFailed, match="cannot load onnx model 'model.onnx'"):
        await runtime.load_model("bad", ModelInfo(type="onnx", path=str(tmp_path)))
    with pytest.raises(ModelLoadFailed, match="unsupported model type 'pmml'"):
        await runtime.load_model("pmml", ModelInfo(type="pmml", path=str(tmp_path)))
    with pytest.raises(ModelLoadFailed, match=r"no tensorflow model file \(a saved_model.pb directory"):
        await runtime.load_model("tf", ModelInfo(type="tensorflow", path=str(tmp_path)))
    assert runtime.loaded_models() == {}


async def test_a_model_larger_than_the_capacity_is_refused(models_dir: Path) -> None:
    rt = BuiltinRuntime(RuntimeConfig(capacity_bytes=1000), LocalFetcher([models_dir]))
    try:
        with pytest.raises(CapacityExceeded, match="more than the runtime's whole capacity of 1000 bytes"):
            await rt.load_model("big", ModelInfo(type="xgboost", path=str(models_dir / "xgboost-iris")))
        assert not rt.is_loaded("big")
    finally:
        await rt.close()


async def test_a_cancelled_load_leaves_nothing_loaded(models_dir: Path) -> None:
    fetcher = GatedFetcher([models_dir])
    rt = BuiltinRuntime(RuntimeConfig(), fetcher)
    try:
        task = asyncio.create_task(rt.load_model("m", ModelInfo(type="sklearn", path=str(models_dir / "sklearn-iris"))))
        assert await asyncio.to_thread(fetcher.entered.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        fetcher.gate.set()
        # the slot frees once the abandoned thread ends; the next load then proceeds normally
        await asyncio.wait_for(rt.load_model("n", ModelInfo(type="string", path=str(models_dir / "string-1"))), 10)
        await asyncio.wait_for(rt.unload_model("m"), 10)  # the mesh always unloads after a cancel
        assert rt.loaded_models().keys() == {"n"}
        assert "m" in fetcher.released
    finally:
        await rt.close()


async def test_a_load_past_its_timeout_fails_and_is_dropped(models_dir: Path) -> None:
    fetcher = GatedFetcher([models_dir])
    rt = BuiltinRuntime(RuntimeConfig(model_loading_timeout_ms=100), fetcher)
    try:
        with pytest.raises(DeadlineExceeded, match="loading model 'm' timed out after 100 ms"):
            await rt.load_model("m", ModelInfo(type="string", path=str(models_dir / "string-1")))
        fetcher.gate.set()
        await asyncio.wait_for(rt.unload_model("m"), 10)
        assert not rt.is_loaded("m")
        assert fetcher.released == ["m"]
    finally:
        await rt.close()


async def test_an_unload_during_a_load_wins_and_shared_loads_see_it(models_dir: Path) -> None:
    fetcher = GatedFetcher([models_dir])
    rt = BuiltinRuntime(RuntimeConfig(), fetcher)
    info = ModelInfo(type="string", path=str(models_dir / "string-1"))
    try:
        first = asyncio.create_task(rt.load_model("m", info))
        second = asyncio.create_task(rt.load_model("m", info))  # shares the first load
        assert await asyncio.to_thread(fetcher.entered.wait, 5)
        unload = asyncio.create_task(rt.unload_model("m"))
        await asyncio.sleep(0.05)
        fetcher.gate.set()
        await asyncio.wait_for(unload, 10)
        for task in (first, second):
            with pytest.raises(Cancelled, match="load of model 'm' was cancelled"):
                await task
        assert not rt.is_loaded("m")
        assert fetcher.released == ["m"]
    finally:
        await rt.close()


async def test_shared_load_returns_the_same_result(models_dir: Path) -> None:
    rt = BuiltinRuntime(RuntimeConfig(), LocalFetcher([models_dir]))
    info = ModelInfo(type="string", path=str(models_dir / "string-2"))
    try:
        a, b = await asyncio.gather(rt.load_model("m", info), rt.load_model("m", info))
        assert a == b and rt.is_loaded("m")
    finally:
        await rt.close()


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="capacity_bytes must be positive"):
        RuntimeConfig(capacity_bytes=0)
    with pytest.raises(ValueError, match="size factors"):
        RuntimeConfig(floor_size_factor=0.5)
