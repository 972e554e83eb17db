"""TritonRuntime against a real Triton Inference Server (nvidia-pytriton's 2.51 binary, CPU): models
laid out and loaded through Triton's repository API, V2 inference forwarded, unloads that Triton's
own index confirms, load failures in Triton's words, a killed Triton restarted with its models, and
a recycle that gives back memory a model grew (issue 16) without failing a call."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from child_process import pid_alive
from triton_models import (
    COUNT_CONFIG,
    COUNT_MODEL,
    GROW_MODEL,
    RAISING_MODEL,
    make_onnx_model,
    make_python_model,
)

from kserve_mesh.core.errors import InvalidArgument, ModelLoadFailed, ModelNotFound
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.protocol import tensors
from kserve_mesh.runtime.adapters.memory import descendants
from kserve_mesh.runtime.spi import RuntimeState
from kserve_mesh.runtime.triton import TritonConfig, TritonRuntime
from kserve_mesh.storage import StoragePolicy, make_fetcher

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MiB = 1 << 20


@pytest.fixture
async def models(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "models"
    return {"add": make_python_model(root, "add"), "affine": make_onnx_model(root),
            "grow": make_python_model(root, "grow", GROW_MODEL)}


async def _start(triton_venv: Path, tmp_path: Path, **config: Any) -> TritonRuntime:
    fetcher = make_fetcher(None, tmp_path / "cache", StoragePolicy.of(allow_local_paths=[tmp_path]))
    return await TritonRuntime.start(TritonConfig(**config), venv=triton_venv, work_dir=tmp_path / "work",
                                     fetcher=fetcher)


@pytest.fixture
async def runtime(triton_venv: Path, tmp_path: Path) -> AsyncIterator[TritonRuntime]:
    rt = await _start(triton_venv, tmp_path)
    pid = rt.endpoint.pid
    try:
        yield rt
    finally:
        await rt.close()
    assert pid is not None and not pid_alive(pid)


async def _add_one(rt: TritonRuntime, model_id: str, values: list[float]) -> list[float]:
    response = await rt.infer(tensors.encode_request(model_id, {"INPUT0": np.asarray(values, np.float32)}))
    assert response.model_name == model_id
    (out,) = tensors.decode_outputs(response).values()
    return out.ravel().tolist()


async def test_python_onnx_and_decoupled_models_load_serve_stream_and_unload(runtime: TritonRuntime, models: dict[str, Path]) -> None:
    status = await runtime.runtime_status()
    assert status.state is RuntimeState.READY and runtime.version == "triton-2.51.0"
    assert status.resident_bytes > 0 and status.baseline_bytes == status.resident_bytes
    assert {"onnx", "python"} <= set(runtime.formats())

    # A Python-backend model with its own config.pbtxt, under an id Triton could not use as a name.
    result = await runtime.load_model("py/add", ModelInfo(type="python", path=str(models["add"])))
    assert result.size_bytes >= 10 * MiB  # its stub process: a Python with numpy
    assert await _add_one(runtime, "py/add", [1, 2, 3]) == [2, 3, 4]
    name = runtime._models["py/add"].name
    config = (runtime.endpoint.repository / name / "config.pbtxt").read_text()
    assert config.startswith(f'name: "{name}"\n') and "whatever-it-was-called" not in config

    # A bare model.onnx: served through the Python backend, inputs and outputs from the graph.
    await runtime.load_model("affine", ModelInfo(type="onnx", path=str(models["affine"])))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    response = await runtime.infer(tensors.encode_request("affine", {"x": x}))
    assert response.model_name == "affine"
    np.testing.assert_array_equal(tensors.decode_outputs(response)["y"], 2 * x + 1)
    meta = await runtime.model_metadata("affine")
    assert meta.name == "affine" and [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("x", "FP32", [-1, 3])]
    assert [t.name for t in meta.outputs] == ["y"]

    # Bad input: Triton's clear INVALID_ARGUMENT, naming the tensor.
    with pytest.raises(InvalidArgument, match="'z'"):
        await runtime.infer(tensors.encode_request("affine", {"z": x}))

    # Unload: Triton's own index says so, the stub process is gone, the folder too.
    stubs = set(descendants(runtime.endpoint.pid or 0))
    await runtime.unload_model("affine")
    index = await runtime._client.index()
    assert index.get("affine", ("UNAVAILABLE", ""))[0] == "UNAVAILABLE", index
    assert index[name][0] == "READY"
    assert len(set(descendants(runtime.endpoint.pid or 0))) == len(stubs) - 1
    assert not (runtime.endpoint.repository / "affine").exists()
    with pytest.raises(ModelNotFound):
        await runtime.infer(tensors.encode_request("affine", {"x": x}))
    assert runtime.loaded_models().keys() == {"py/add"}

    # Streaming (ModelStreamInfer): a decoupled model's every response, any other model's one.
    count = make_python_model(models["add"].parent, "count", COUNT_MODEL, COUNT_CONFIG)
    await runtime.load_model("count", ModelInfo(type="python", path=str(count)))
    request = tensors.encode_request("count", {"INPUT0": np.asarray([4], np.float32)})
    got = [r async for r in runtime.infer_stream(request)]
    assert [r.model_name for r in got] == ["count"] * 4
    assert [tensors.decode_outputs(r)["OUTPUT0"].tolist() for r in got] == [[0], [1], [2], [3]]
    assert all("triton_final_response" not in r.parameters for r in got)
    assert request.model_name == "count" and not request.parameters  # the caller's request as it was
    one = [r async for r in runtime.infer_stream(tensors.encode_request("py/add", {"INPUT0": np.ones(2, np.float32)}))]
    assert [tensors.decode_outputs(r)["OUTPUT0"].tolist() for r in one] == [[2, 2]]
    with pytest.raises(ModelNotFound):
        [r async for r in runtime.infer_stream(tensors.encode_request("nope", {"INPUT0": np.ones(1, np.float32)}))]


async def test_load_failures_are_clear_and_leave_nothing_behind(runtime: TritonRuntime, models: dict[str, Path],
                                                                tmp_path: Path) -> None:
    root = tmp_path / "bad"
    broken = make_python_model(root, "broken", config='backend: "python"\ninput [ { name: "INPUT0" '
                                                      'data_type: TYPE_NO_SUCH dims: [ -1 ] } ]\n')
    raising = make_python_model(root, "raising", RAISING_MODEL)
    cases = [
        ("broken", ModelInfo(type="triton", path=str(broken)), "failed to read text proto from"),
        ("raising", ModelInfo(type="python", path=str(raising)), "the weights are corrupt (raised on purpose)"),
        ("torch", ModelInfo(type="pytorch", path=str(models["affine"])), "needs Triton's 'pytorch' backend"),
        ("caffe", ModelInfo(type="caffe", path=str(models["affine"])), "unsupported model type 'caffe'"),
    ]
    for model_id, info, words in cases:
        with pytest.raises(ModelLoadFailed) as failed:
            await runtime.load_model(model_id, info)
        message = str(failed.value)
        assert words in message and "Traceback" not in message, message
        assert model_id in message, message
    await asyncio.sleep(0)
    for _ in range(50):  # cleanups run in the background of the failed load
        if not runtime._cleanups:
            break
        await asyncio.sleep(0.1)
    assert sorted(p.name for p in runtime.endpoint.repository.iterdir()) == []
    assert runtime.loaded_models() == {}
    await runtime.load_model("add", ModelInfo(type="python", path=str(models["add"])))
    assert await _add_one(runtime, "add", [0.5]) == [1.5]


async def test_a_killed_triton_is_reported_restarted_and_its_models_load_again(
        runtime: TritonRuntime, models: dict[str, Path]) -> None:
    await runtime.load_model("add", ModelInfo(type="python", path=str(models["add"])))
    old = runtime.endpoint.pid
    assert old is not None
    stubs = descendants(old)
    os.kill(old, signal.SIGKILL)
    async with asyncio.timeout(5):
        while pid_alive(old):  # the kernel takes a moment to end it
            await asyncio.sleep(0.01)
    status = await runtime.runtime_status()
    assert status.state is RuntimeState.FAILING  # at once: restarting takes seconds
    async with asyncio.timeout(60):
        while (await runtime.runtime_status()).state is not RuntimeState.READY:
            await asyncio.sleep(0.1)
    assert runtime.endpoint.pid != old and runtime.restarts == 1
    assert await _add_one(runtime, "add", [41]) == [42]  # loaded again: the mesh's ledger stays true
    assert (await runtime._client.index())["add"][0] == "READY"
    async with asyncio.timeout(10):  # the old stubs notice their server is gone and exit
        while any(pid_alive(p) for p in stubs):
            await asyncio.sleep(0.1)


async def test_recycling_triton_frees_memory_a_model_grew_and_fails_no_call(
        triton_venv: Path, models: dict[str, Path], tmp_path: Path) -> None:
    threshold = 48 * MiB
    rt = await _start(triton_venv, tmp_path, recycle_bytes=threshold, recycle_min_interval_s=0)
    try:
        first = await rt.runtime_status()  # the baseline: nothing loaded
        await rt.load_model("add", ModelInfo(type="python", path=str(models["add"])))
        await rt.load_model("grow", ModelInfo(type="python", path=str(models["grow"])))
        sizes = rt.loaded_models()
        response = await rt.infer(tensors.encode_request("grow", {"INPUT0": np.ones(2, np.float32)}))
        assert response.model_name == "grow"  # it holds 96 MiB more from now on
        old_pid = rt.endpoint.pid
        answers: list[Any] = []
        stop = asyncio.Event()

        async def steady() -> None:  # a client of another model, all along
            while not stop.is_set():
                try:
                    answers.append(await _add_one(rt, "add", [1]))
                except Exception as exc:  # noqa: BLE001 - collected and asserted below
                    answers.append(exc)
                await asyncio.sleep(0.01)

        client = asyncio.create_task(steady())
        await asyncio.sleep(0.2)
        before = await rt.runtime_status()  # the reading that starts the recycle
        held = before.resident_bytes - first.baseline_bytes - sum(sizes.values())
        assert held > threshold, f"only {held / MiB:.1f} MiB unaccounted"
        assert rt.recycling
        mid = await rt.runtime_status()
        assert mid.state is RuntimeState.READY  # planned: ready, calls wait at the gate
        async with asyncio.timeout(120):
            while rt.restarting:
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        stop.set()
        await client
        after = await rt.runtime_status()
        print(f"held {held / MiB:.1f} MiB unaccounted; resident {before.resident_bytes / MiB:.0f} -> "
              f"{after.resident_bytes / MiB:.0f} MiB; {len(answers)} calls")
        assert rt.loaded_models() == sizes and rt.recycles == 1 and rt.endpoint.pid != old_pid
        assert after.resident_bytes < before.resident_bytes - threshold, (before, after)
        assert after.resident_bytes - after.baseline_bytes - sum(sizes.values()) < threshold
    finally:
        await rt.close()
    failures = [a for a in answers if isinstance(a, Exception)]
    assert not failures, failures[:3]
    assert len(answers) > 10 and all(a == [2] for a in answers)


async def test_attached_to_a_running_triton_it_loads_serves_and_leaves_it_as_found(
        triton_venv: Path, models: dict[str, Path], tmp_path: Path) -> None:
    from kserve_mesh.runtime.triton import TritonEndpoint, TritonProcess, find_triton
    from kserve_mesh.runtime.triton.config import probe_python

    dist, python = find_triton(venv=triton_venv)
    triton = await TritonProcess.start(dist, probe_python(python, dist), tmp_path / "theirs")
    try:
        fetcher = make_fetcher(None, tmp_path / "cache", StoragePolicy.of(allow_local_paths=[tmp_path]))
        endpoint = TritonEndpoint(triton.endpoint.grpc_target, triton.endpoint.repository, triton.pid)
        rt = await TritonRuntime.attach(endpoint, fetcher=fetcher, onnxruntime_in_python=True)
        try:
            await rt.load_model("add", ModelInfo(type="python", path=str(models["add"])))
            await rt.load_model("affine", ModelInfo(type="onnx", path=str(models["affine"])))
            assert await _add_one(rt, "add", [1]) == [2]
            assert (await rt.runtime_status()).state is RuntimeState.READY
        finally:
            await rt.close()  # not its Triton: it unloads what it loaded and leaves Triton running
        assert triton.alive()
        from kserve_mesh.runtime.triton.client import TritonClient

        client = TritonClient(triton.endpoint.grpc_target, TritonConfig())
        try:
            index = await client.index()
        finally:
            await client.close()
        assert all(state == "UNAVAILABLE" for state, _reason in index.values()), index
    finally:
        await triton.stop()
    assert not pid_alive(triton.pid)
