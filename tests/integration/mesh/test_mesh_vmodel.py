"""vmodel: switching a vmodel to a new target under continuous traffic loses zero requests, and the
active model changes only once the target is LOADED."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from mesh_process import MeshProcess
from slow_http import serve_dir

pytestmark = pytest.mark.integration


def test_vmodel_switch_under_traffic_loses_nothing(mesh: MeshProcess, example_models: tuple[Path, dict[str, Any]],
                                                    tmp_path: Path) -> None:
    models_dir, inputs = example_models
    request = inputs["sklearn-iris"]["request"]
    # The new target is the same model served over HTTP with a 1.5 s delay: a load long enough for
    # traffic to run through the whole transition.
    shutil.copy(models_dir / "sklearn-iris" / "model.joblib", tmp_path / "model.joblib")
    with serve_dir(tmp_path, delay_s=1.5) as base:
        status, body = mesh.call("PUT", "/mesh/v1/models/iris-v1",
                                 {"modelInfo": {"type": "sklearn", "path": str(models_dir / "sklearn-iris")},
                                  "loadNow": True, "sync": True})
        assert status == 200 and body["status"] == "LOADED", body
        status, body = mesh.call("PUT", "/mesh/v1/models/iris-v2",
                                 {"modelInfo": {"type": "sklearn", "path": f"{base}/model.joblib"}})
        assert status == 200 and body["status"] == "NOT_LOADED", body
        status, body = mesh.call("PUT", "/mesh/v1/vmodels/iris", {"targetModelId": "iris-v1", "owner": "test"})
        assert status == 200 and body["status"] == "DEFINED" and body["activeModelId"] == "iris-v1", body

        stop = threading.Event()
        errors: list[str] = []
        served: list[list[str]] = [[] for _ in range(3)]
        statuses: list[dict[str, Any]] = []

        def traffic(i: int) -> None:
            while not stop.is_set():
                code, resp = mesh.call("POST", "/v2/models/iris/infer", request)
                if code != 200:
                    errors.append(f"{code} {resp}")
                else:
                    served[i].append(resp["model_name"])
                    assert resp["outputs"][0]["data"] == inputs["sklearn-iris"]["expected"]["outputs"][0]["data"]

        def watch() -> None:
            while not stop.is_set():
                statuses.append(mesh.call("GET", "/mesh/v1/vmodels/iris")[1])
                time.sleep(0.01)

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(traffic, i) for i in range(3)] + [pool.submit(watch)]
            time.sleep(0.3)
            status, body = mesh.call("PUT", "/mesh/v1/vmodels/iris", {"targetModelId": "iris-v2", "owner": "test"})
            assert status == 200 and body["status"] == "TRANSITIONING", body
            assert body["activeModelId"] == "iris-v1" and body["targetModelId"] == "iris-v2"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and mesh.call("GET", "/mesh/v1/vmodels/iris")[1]["status"] != "DEFINED":
                time.sleep(0.05)
            time.sleep(0.3)
            stop.set()
            for f in futures:
                f.result(timeout=30)

    assert not errors, errors[:5]
    final = mesh.call("GET", "/mesh/v1/vmodels/iris")[1]
    assert final["status"] == "DEFINED" and final["activeModelId"] == "iris-v2", final
    # Traffic saw the transition: the old model while the target loaded, then only the new one.
    assert any(s["status"] == "TRANSITIONING" for s in statuses)
    for names in served:
        assert names and names[0] == "iris-v1" and names[-1] == "iris-v2"
        switch = names.index("iris-v2")
        assert set(names[switch:]) == {"iris-v2"}, "a request went back to the old model after the switch"
    # The active model became iris-v2 only when iris-v2 was LOADED.
    for s in statuses:
        if s["activeModelId"] == "iris-v2":
            assert s["activeModelStatus"]["status"] == "LOADED", s
        else:
            assert s["activeModelId"] == "iris-v1"
    # Cleanup: the vmodel holds its models; delete it, then the models unregister.
    assert mesh.call("DELETE", "/mesh/v1/models/iris-v2")[0] == 409
    assert mesh.call("DELETE", "/mesh/v1/vmodels/iris")[0] == 200
    assert mesh.call("DELETE", "/mesh/v1/models/iris-v2")[0] == 200
    assert mesh.call("DELETE", "/mesh/v1/models/iris-v1")[0] == 200
