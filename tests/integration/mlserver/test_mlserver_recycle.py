"""Memory truth for the MLServer adapter (issue 16): MLServer keeps the memory of models it unloaded;
past ``recycle_bytes`` the adapter restarts the MLServer it started, loads its models again, and no
call fails meanwhile (calls wait at the gate). Against a real MLServer from its own venv."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from child_process import pid_alive
from example_models import make_models_module

from kserve_mesh.core.errors import Unavailable
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.protocol import tensors
from kserve_mesh.runtime.adapters.recycle import Gate, recycle_due, unaccounted
from kserve_mesh.runtime.mlserver import MLServerConfig, MLServerRuntime
from kserve_mesh.runtime.spi import RuntimeState
from kserve_mesh.storage import StoragePolicy, make_fetcher

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MiB = 1 << 20


def _forests(out: Path, count: int) -> list[Path]:
    import joblib
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(1)
    x = rng.normal(size=(10_000, 8))
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(int)
    model = RandomForestClassifier(n_estimators=80, random_state=0, n_jobs=1).fit(x, y)
    folders = []
    for n in range(count):
        folder = out / f"forest-{n}"
        folder.mkdir(parents=True)
        joblib.dump(model, folder / "model.joblib")
        folders.append(folder)
    return folders


async def test_the_gate_holds_calls_while_closed_and_bounds_their_wait() -> None:
    gate = Gate("MLServer")
    inside = asyncio.Event()
    release = asyncio.Event()

    async def call() -> None:
        async with gate.enter(5.0):
            inside.set()
            await release.wait()

    first = asyncio.create_task(call())
    await inside.wait()
    closing = asyncio.create_task(gate.close(5.0))
    await asyncio.sleep(0.05)
    assert not closing.done() and not gate.is_open  # waits for the call inside
    with pytest.raises(Unavailable, match="being recycled and was not back within 0.05 s"):
        async with gate.enter(0.05):
            pass
    release.set()
    assert await closing == 0
    await first
    waiting = asyncio.create_task(call())
    await asyncio.sleep(0.05)
    assert not inside.is_set() or not waiting.done()
    gate.reopen()
    await asyncio.wait_for(waiting, 5.0)
    assert unaccounted(300, 100, 150) == 50 and unaccounted(300, 0, 150) == 0
    assert recycle_due(60, 50, 61, 60) and not recycle_due(60, 50, 10, 60) and not recycle_due(60, 0, 61, 60)
    assert not recycle_due(40, 50, 61, 60)


async def test_recycling_mlserver_frees_what_unloads_left_and_fails_no_call(
        mlserver_venv: Path, sklearn_model: tuple[Path, dict[str, Any]], tmp_path: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    path, sample = sklearn_model
    forests = _forests(tmp_path / "forests", 3)
    threshold = 12 * MiB
    config = MLServerConfig(capacity_bytes=1024 * MiB, start_timeout_s=90, recycle_bytes=threshold,
                            recycle_min_interval_s=0)
    fetcher = make_fetcher(None, tmp_path / "cache", StoragePolicy.of(allow_local_paths=[tmp_path_factory.getbasetemp()]))
    runtime = await MLServerRuntime.start(config, venv=mlserver_venv, work_dir=tmp_path / "work", fetcher=fetcher)
    try:
        first = await runtime.runtime_status()  # sets the baseline (nothing loaded)
        await runtime.load_model("iris", ModelInfo(type="sklearn", path=str(path)))
        for n, folder in enumerate(forests):
            await runtime.load_model(f"forest-{n}", ModelInfo(type="sklearn", path=str(folder)))
        iris_size = (await runtime.model_size("iris"))
        for n in range(len(forests)):
            await runtime.unload_model(f"forest-{n}")
        old_pid = runtime.endpoint.pid
        assert old_pid is not None
        want = make_models_module().arrays_of(sample["expected"]["outputs"])["output-0"].ravel().tolist()
        arrays = make_models_module().arrays_of(sample["request"]["inputs"])

        answers: list[Any] = []
        stop = asyncio.Event()

        async def steady() -> None:  # a client of the model that stays, all along
            while not stop.is_set():
                try:
                    response = await runtime.infer(tensors.encode_request("iris", arrays), timeout=30)
                    (got,) = tensors.decode_outputs(response).values()
                    answers.append(got.ravel().tolist())
                except Exception as exc:  # noqa: BLE001 - collected and asserted below
                    answers.append(exc)
                await asyncio.sleep(0.01)

        client = asyncio.create_task(steady())
        await asyncio.sleep(0.2)
        before = await runtime.runtime_status()  # the reading that starts the recycle
        held = before.resident_bytes - first.baseline_bytes - iris_size
        assert held > threshold, f"MLServer gave the forests' memory back ({held / MiB:.1f} MiB held)"
        assert runtime.recycling
        mid = await runtime.runtime_status()
        assert mid.state is RuntimeState.READY and mid.resident_bytes == 0  # planned: ready, memory unknown
        async with asyncio.timeout(120):
            while runtime.recycling:
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        stop.set()
        await client
        after = await runtime.runtime_status()
        new_pid = runtime.endpoint.pid
        print(f"held {held / MiB:.1f} MiB beyond baseline + iris; resident {before.resident_bytes / MiB:.0f} -> "
              f"{after.resident_bytes / MiB:.0f} MiB; {len(answers)} calls, none failed")
        assert runtime.loaded_models() == {"iris": iris_size}  # loaded again, same size: the ledger stays true
        # The fresh process holds its baseline and iris again: what the unloads left is gone.
        assert after.baseline_bytes > 0 and after.resident_bytes - after.baseline_bytes - iris_size < threshold
        assert after.resident_bytes < before.resident_bytes - threshold // 2, (after, before)
    finally:
        await runtime.close()  # stops the new MLServer too

    failures = [a for a in answers if isinstance(a, Exception)]
    assert not failures, failures[:3]
    assert len(answers) > 10 and all(a == want for a in answers)
    assert runtime.recycles == 1 and new_pid != old_pid and not pid_alive(old_pid)
