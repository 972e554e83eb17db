"""MLServerRuntime against a real MLServer process from its own venv: load an sklearn model through
the repository API, serve V2 inference with the right predictions, measure its size, unload it, and
answer every failure with the right core error and MLServer's own message."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from child_process import pid_alive
from example_models import make_models_module
from slow_http import serve_dir

from kserve_mesh.core.errors import (
    Cancelled,
    CapacityExceeded,
    DeadlineExceeded,
    InternalError,
    InvalidArgument,
    ModelLoadFailed,
    ModelNotFound,
    StorageNotFound,
)
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.protocol import tensors, v2
from kserve_mesh.runtime.adapters.memory import tree_rss_bytes
from kserve_mesh.runtime.builtin.sizing import disk_size_bytes
from kserve_mesh.runtime.mlserver import MLServerConfig, MLServerRuntime
from kserve_mesh.runtime.spi import RuntimeState
from kserve_mesh.storage import ModelFetcher, StoragePolicy, make_fetcher

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]  # the first run builds the venv

MiB = 1 << 20


def local_fetcher(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> ModelFetcher:
    """A fetcher that may read the session's temporary folders (the models, each test's tmp_path)."""
    return make_fetcher(None, cache, StoragePolicy.of(allow_local_paths=[tmp_path_factory.getbasetemp()]))


@pytest.fixture
async def runtime(mlserver_venv: Path, tmp_path: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MLServerRuntime]:
    config = MLServerConfig(capacity_bytes=256 * MiB, model_loading_timeout_ms=60_000, start_timeout_s=90)
    rt = await MLServerRuntime.start(config, venv=mlserver_venv, work_dir=tmp_path / "work",
                                     fetcher=local_fetcher(tmp_path_factory, tmp_path / "cache"))
    try:
        yield rt
    finally:
        await rt.close()


def _request(model_id: str, sample: dict[str, Any], *, raw: bool = False) -> v2.ModelInferRequest:
    arrays = make_models_module().arrays_of(sample["request"]["inputs"])
    return tensors.encode_request(model_id, arrays, raw=raw)


async def test_load_infer_unload_an_sklearn_model(
    runtime: MLServerRuntime, sklearn_model: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    path, sample = sklearn_model
    status = await runtime.runtime_status()
    assert status.state == RuntimeState.READY and status.capacity_bytes == 256 * MiB
    assert status.runtime_version == "mlserver-1.7.1"
    assert runtime.formats == frozenset({"sklearn"})
    # Memory truth (issue 16): the MLServer process tree's RSS, and the baseline it had holding no models.
    assert status.resident_bytes > 10 * MiB and status.baseline_bytes == status.resident_bytes

    model_id = "iris__isvc-0123456789"
    info = ModelInfo(type="sklearn", path=str(path))
    disk = disk_size_bytes(path)
    assert await runtime.predict_model_size(model_id, info) >= 2 * disk

    # Two asks for the same model while it loads share one load.
    first, second = await asyncio.gather(runtime.load_model(model_id, info), runtime.load_model(model_id, info))
    assert first == second and first.size_bytes >= disk * 1.25
    assert await runtime.model_size(model_id) == first.size_bytes
    assert first.resident_delta_bytes >= 0
    loaded_status = await runtime.runtime_status()
    assert loaded_status.baseline_bytes == status.baseline_bytes and loaded_status.resident_bytes > 0
    settings = json.loads((tmp_path / "work" / "models" / model_id / "model-settings.json").read_text())
    assert settings["name"] == model_id and settings["implementation"] == "mlserver_sklearn.SKLearnModel"
    assert settings["parameters"]["uri"] == str(path / "model.joblib")

    want = make_models_module().arrays_of(sample["expected"]["outputs"])["output-0"]
    for raw in (False, True):
        response = await runtime.infer(_request(model_id, sample, raw=raw))
        assert response.model_name == model_id
        (got,) = tensors.decode_outputs(response).values()  # MLServer names its output "predict"
        assert got.ravel().tolist() == want.ravel().tolist() == [0, 1, 2]
    metadata = await runtime.model_metadata(model_id)
    assert metadata.name == model_id

    await runtime.unload_model(model_id)
    with pytest.raises(ModelNotFound, match="is not loaded"):
        await runtime.infer(_request(model_id, sample))
    assert not (tmp_path / "work" / "models" / model_id).exists()
    # MLServer itself no longer serves it either.
    async with httpx.AsyncClient(base_url=runtime.endpoint.http_url) as http:
        assert (await http.get(f"/v2/models/{model_id}/ready")).status_code == 404

    # Loading it again works; MLServer keeps the memory of the first copy (FACTS.md), so the
    # measured growth is small and the reported size falls back to the disk-size floor.
    again = await runtime.load_model(model_id, info)
    assert again.size_bytes >= disk * 1.25
    assert (await runtime.infer(_request(model_id, sample))).outputs

    pid = runtime.endpoint.pid
    assert pid is not None and (tree_rss_bytes(pid) or 0) > 10 * MiB
    await runtime.close()
    assert not pid_alive(pid)
    assert (await runtime.runtime_status()).state == RuntimeState.FAILING


async def test_failures_are_core_errors_with_mlservers_message(
    runtime: MLServerRuntime, sklearn_model: tuple[Path, dict[str, Any]], tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    path, sample = sklearn_model
    with pytest.raises(ModelNotFound, match="'ghost' is not loaded") as not_found:
        await runtime.infer(_request("ghost", sample))
    assert not_found.value.model_id == "ghost"
    with pytest.raises(ModelNotFound):
        await runtime.model_size("ghost")
    with pytest.raises(ModelNotFound):
        await runtime.model_metadata("ghost")

    # Files that are not there: a storage error, before MLServer is asked anything.
    missing = tmp_path / "nowhere"
    with pytest.raises(StorageNotFound, match="does not exist"):
        await runtime.load_model("missing", ModelInfo(type="sklearn", path=str(missing)))
    # A format MLServer has no runtime for here.
    with pytest.raises(ModelLoadFailed, match="cannot serve model type 'xgboost' \\(install mlserver-xgboost"):
        await runtime.load_model("xgb", ModelInfo(type="xgboost", path=str(path)))
    # A model file MLServer cannot read: its error text comes back.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.joblib").write_bytes(b"not a pickle")
    with pytest.raises(ModelLoadFailed, match="MLServer could not load model 'broken'"):
        await runtime.load_model("broken", ModelInfo(type="sklearn", path=str(broken)))
    assert not (tmp_path / "work" / "models" / "broken").exists()
    assert runtime.loaded_models() == {}

    # The ModelMesh-serving shape: rt:<runtime> type, the format in the JSON model key.
    key = json.dumps({"model_type": {"name": "sklearn"}, "storage_params": {}})
    model_id = "mm-style"
    await runtime.load_model(model_id, ModelInfo(type="rt:mlserver-1.x", path=str(path), key=key))

    # Malformed tensors are refused here (MLServer would answer INTERNAL).
    bad = _request(model_id, sample)
    del bad.inputs[0].contents.fp64_contents[1:]
    with pytest.raises(InvalidArgument, match="input-0"):
        await runtime.infer(bad)
    unknown_type = _request(model_id, sample)
    unknown_type.inputs[0].datatype = "FP99"
    with pytest.raises(InvalidArgument, match="FP99"):
        await runtime.infer(unknown_type)
    # Well-formed but wrong for the model: MLServer's own words, as an internal error of the model.
    three = tensors.encode_request(model_id, {"input-0": np.ones((2, 3))})
    with pytest.raises(InternalError, match="X has 3 features, but LogisticRegression is expecting 4"):
        await runtime.infer(three)

    # A runtime attached to the same MLServer, with a capacity too small for any model.
    tiny = MLServerConfig(capacity_bytes=1024)
    attached = await MLServerRuntime.attach(runtime.endpoint, tiny, formats=runtime.formats,
                                            fetcher=local_fetcher(tmp_path_factory, tmp_path / "attached-cache"))
    try:
        with pytest.raises(CapacityExceeded, match="more than the runtime's whole capacity of 1024 bytes"):
            await attached.load_model("too-big", ModelInfo(type="sklearn", path=str(path)))
        assert attached.loaded_models() == {}
    finally:
        await attached.close()
    assert runtime.endpoint.pid is not None and pid_alive(runtime.endpoint.pid)  # attach never stops it
    assert (await runtime.infer(_request(model_id, sample))).outputs
    await runtime.unload_model(model_id)


async def test_unload_and_timeout_stop_a_slow_load(
    runtime: MLServerRuntime, sklearn_model: tuple[Path, dict[str, Any]]
) -> None:
    path, sample = sklearn_model
    with serve_dir(path, delay_s=1.5) as base:
        info = ModelInfo(type="sklearn", path=f"{base}/model.joblib")
        # Two callers wait for one slow load (the download is delayed); an unload stops it for both.
        waiters = [asyncio.create_task(runtime.load_model("slow", info)) for _ in range(2)]
        await asyncio.sleep(0.3)
        await runtime.unload_model("slow")
        for result in await asyncio.gather(*waiters, return_exceptions=True):
            assert isinstance(result, Cancelled) and "cancelled by an unload" in str(result), result
        assert runtime.loaded_models() == {}
        assert not (runtime.endpoint.repository / "slow").exists()

        # A load that outlives the loading timeout fails with DeadlineExceeded and leaves nothing.
        hasty = await MLServerRuntime.attach(runtime.endpoint, MLServerConfig(model_loading_timeout_ms=300),
                                             formats=runtime.formats)
        try:
            with pytest.raises(DeadlineExceeded, match="timed out after 300 ms"):
                await hasty.load_model("hasty", info)
            assert hasty.loaded_models() == {}
        finally:
            await hasty.close()

        # The same slow model, given the time, loads from HTTP and serves.
        await runtime.load_model("slow", info)
        (got,) = tensors.decode_outputs(await runtime.infer(_request("slow", sample))).values()
        assert got.ravel().tolist() == [0, 1, 2]
        await runtime.unload_model("slow")
