"""The notebook panel without a browser, against a real mesh process: its state after a refresh,
button clicks (register, example input, run), the background refresh (only while a view is shown,
stopped by close()), and every error as one line in the panel — never a traceback."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mesh_process import MeshProcess

from kserve_mesh.client import connect
from kserve_mesh.jupyter_ext import MODEL_FORMATS, MeshPanel

Models = tuple[Path, dict[str, Any]]
ISVC_YAML = """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: iris
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
spec:
  predictor:
    model:
      modelFormat: {name: sklearn}
      storageUri: s3://models/iris
"""


@pytest.fixture
def make_panel() -> Iterator[Callable[..., MeshPanel]]:
    panels: list[MeshPanel] = []

    def make(url: str, **kwargs: Any) -> MeshPanel:
        panel = MeshPanel(url, **kwargs)
        panels.append(panel)
        return panel

    yield make
    for panel in panels:
        panel.close()
        assert not panel.refresher.running


def _row_state(panel: MeshPanel, model_id: str) -> str | None:
    m = re.search(rf'data-model-id="{re.escape(model_id)}" data-state="([A-Z_]+)"', panel.table.value)
    return m.group(1) if m else None


def _until(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _error_line(panel: MeshPanel) -> str:
    assert 'class="kserve-mesh-error"' in panel.message.value, panel.message.value
    assert "Traceback" not in panel.message.value
    return panel.error


def test_first_state_shows_models_summary_and_formats(make_panel: Callable[..., MeshPanel], panel_mesh: MeshProcess,
                                                       panel_models: Models) -> None:
    panel = make_panel(panel_mesh.rest)
    assert panel.error == "" and panel.message.value == ""
    for model_id in panel_models[1]:
        assert _row_state(panel, model_id) in {"NOT_LOADED", "LOADING", "LOADED"}
    assert re.search(r"\d+ models, \d+ loaded, .* used", panel.summary.value)
    assert tuple(panel.model_format.options) == MODEL_FORMATS
    assert set(panel_models[1]) <= set(panel.test_model.options)
    assert panel.tabs.titles == ("Models", "Register", "Test")


def test_register_click_loads_and_run_shows_the_prediction(make_panel: Callable[..., MeshPanel],
                                                            panel_mesh: MeshProcess, panel_models: Models) -> None:
    panel = make_panel(panel_mesh.rest)
    panel.name.value = "panel-iris"
    panel.model_format.value = "sklearn"
    panel.storage_uri.value = str(panel_models[0] / "sklearn-iris")
    panel.register_button.click()
    assert panel.error == "", panel.error
    assert "registered 'panel-iris' (sklearn)" in panel.message.value
    assert panel.test_model.value == "panel-iris"

    def loaded() -> bool:
        panel.refresh_button.click()
        return _row_state(panel, "panel-iris") == "LOADED"

    _until(loaded, what="panel-iris LOADED in the table")
    panel.test_input.value = json.dumps(panel_models[1]["sklearn-iris"]["request"])
    panel.run_button.click()
    assert panel.error == ""
    assert panel.last_outputs["output-0"].tolist() == [0, 1, 2]
    assert panel.last_latency_ms is not None and panel.last_latency_ms > 0
    assert 'data-output="output-0"' in panel.result.value and "[0 1 2]" in panel.result.value
    assert re.search(r"answered in <b>[\d.]+ ms</b>", panel.result.value)
    connect(panel_mesh.rest).unregister("panel-iris")


def test_example_input_from_metadata_runs(make_panel: Callable[..., MeshPanel], panel_mesh: MeshProcess) -> None:
    panel = make_panel(panel_mesh.rest)
    panel.test_model.value = "onnx-iris"
    panel.example_button.click()
    request = json.loads(panel.test_input.value)
    assert request["inputs"] == [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [0.0] * 4}]
    panel.run_button.click()
    assert panel.error == ""
    assert set(panel.last_outputs) == {"label", "probabilities"}
    assert panel.last_outputs["probabilities"].shape == (1, 3)
    # A bare nested list goes to the model's only input.
    panel.test_input.value = "[[5.1, 3.5, 1.4, 0.2]]"
    panel.run_button.click()
    assert panel.error == "" and panel.last_outputs["label"].tolist() == [0]


def test_background_refresh_runs_only_while_shown_and_stops_on_close(panel_mesh: MeshProcess,
                                                                      panel_models: Models) -> None:
    panel = MeshPanel(panel_mesh.rest, refresh_interval_s=0.1)
    try:
        assert panel.refresher.running and not panel.visible()
        time.sleep(0.5)
        assert panel.refresher.ticks == 0  # no view on screen: no polling
        panel._view_count = 1  # what the frontend does when it shows the panel
        with connect(panel_mesh.rest) as other:
            other.register("panel-bg", "string", str(panel_models[0] / "string-1"), load_now=True)
            try:
                _until(lambda: _row_state(panel, "panel-bg") == "LOADED", what="the background refresh")
                assert panel.refresher.ticks > 0 and "panel-bg" in panel.test_model.options
            finally:
                other.unregister("panel-bg")
        _until(lambda: _row_state(panel, "panel-bg") is None, what="the unregistered model to leave the table")
    finally:
        panel.close()
    assert not panel.refresher.running
    assert panel.comm is None and panel.table.comm is None and panel.run_button.comm is None
    ticks = panel.refresher.ticks
    time.sleep(0.4)
    assert panel.refresher.ticks == ticks


def test_background_refresh_is_bounded_in_time(panel_mesh: MeshProcess) -> None:
    panel = MeshPanel(panel_mesh.rest, refresh_interval_s=0.05, max_refresh_s=0.3)
    try:
        panel._view_count = 1
        _until(lambda: not panel.refresher.running, timeout=10, what="the refresh to give up")
        assert "auto-refresh stopped after" in panel.message.value
    finally:
        panel.close()


def test_unreachable_mesh_is_a_line_in_the_panel(make_panel: Callable[..., MeshPanel]) -> None:
    panel = make_panel("127.0.0.1:9")
    assert _error_line(panel).startswith("cannot reach the mesh at http://127.0.0.1:9")
    assert "No models registered yet" in panel.table.value
    panel.name.value, panel.storage_uri.value = "m", "/tmp/m"
    panel.register_button.click()
    assert _error_line(panel).startswith("cannot reach the mesh")
    panel.refresh_button.click()
    assert _error_line(panel).startswith("cannot reach the mesh")


def test_unknown_model_is_a_line_in_the_panel(make_panel: Callable[..., MeshPanel], panel_mesh: MeshProcess,
                                              panel_models: Models) -> None:
    panel = make_panel(panel_mesh.rest)
    with connect(panel_mesh.rest) as other:
        other.register("panel-gone", "string", str(panel_models[0] / "string-1"))
        panel.refresh()
        panel.test_model.value = "panel-gone"
        other.unregister("panel-gone")
    panel.test_input.value = '["a"]'
    panel.run_button.click()
    assert _error_line(panel) == "model 'panel-gone' not found"
    panel.example_button.click()
    assert _error_line(panel) == "model 'panel-gone' not found"


def test_wrong_input_shape_and_bad_json_are_lines_in_the_panel(make_panel: Callable[..., MeshPanel],
                                                                panel_mesh: MeshProcess) -> None:
    panel = make_panel(panel_mesh.rest)
    panel.test_model.value = "sklearn-iris"
    panel.test_input.value = '{"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}'
    panel.run_button.click()
    assert _error_line(panel) == "input 'input-0' of model 'sklearn-iris' has 3 features; the model expects 4"
    panel.test_input.value = '{"inputs": [{"name": "input-0", '
    panel.run_button.click()
    assert _error_line(panel).startswith("the input is not valid JSON (line 1, column 32)")
    panel.test_input.value = ""
    panel.run_button.click()
    assert "write a JSON input first" in _error_line(panel)
    # A success clears the error line.
    panel.test_input.value = "[[5.1, 3.5, 1.4, 0.2]]"
    panel.run_button.click()
    assert panel.error == "" and "kserve-mesh-error" not in panel.message.value


def test_invalid_yaml_and_empty_form_are_lines_in_the_panel(make_panel: Callable[..., MeshPanel],
                                                             panel_mesh: MeshProcess) -> None:
    panel = make_panel(panel_mesh.rest)
    panel.yaml.value = "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata: {name: [x\n"
    panel.apply_button.click()
    assert _error_line(panel).startswith("invalid YAML at line 4, column 1")
    panel.yaml.value = "- just\n- a list\n"
    panel.apply_button.click()
    assert _error_line(panel) == "YAML document 1 is not a Kubernetes object (no 'kind')"
    panel.yaml.value = "  "
    panel.apply_button.click()
    assert _error_line(panel) == "paste InferenceService YAML first"
    panel.name.value = ""
    panel.register_button.click()
    assert _error_line(panel) == "give the model a name"
    panel.name.value = "panel-nouri"
    panel.register_button.click()
    assert "give the storage URI" in _error_line(panel)


def test_a_failed_load_shows_in_the_table_and_on_run(make_panel: Callable[..., MeshPanel], panel_mesh: MeshProcess,
                                                      panel_models: Models) -> None:
    panel = make_panel(panel_mesh.rest)
    # Inside the mesh's --models folder (registration accepts it), but not a model: the load fails.
    broken = panel_models[0] / "panel-broken.joblib"
    broken.write_bytes(b"not a pickled model")
    panel.name.value, panel.storage_uri.value = "panel-broken", str(broken)
    panel.register_button.click()
    assert panel.error == ""

    def failed() -> bool:
        panel.refresh()
        return _row_state(panel, "panel-broken") == "LOADING_FAILED"

    _until(failed, what="LOADING_FAILED in the table")
    assert "cannot load sklearn model" in panel.table.value
    panel.test_input.value = "[[1, 2, 3, 4]]"
    panel.run_button.click()
    assert "cannot load sklearn model" in _error_line(panel)
    connect(panel_mesh.rest).unregister("panel-broken")


def test_apply_yaml_reports_what_was_done(make_panel: Callable[..., MeshPanel], apply_stub: Any) -> None:
    panel = make_panel(apply_stub.url)
    assert "No models registered yet" in panel.table.value
    panel.yaml.value = ISVC_YAML
    panel.apply_button.click()
    assert panel.error == ""
    assert "applied: InferenceService default/iris created" in panel.message.value
    assert apply_stub.applied == [ISVC_YAML.encode()]
    assert _row_state(panel, "isvc-iris") == "LOADED"  # the table was refreshed after the apply
    panel.yaml.value = ISVC_YAML.replace("      storageUri: s3://models/iris\n", "")
    panel.apply_button.click()
    assert _error_line(panel) == "InferenceService default/iris: spec.predictor.model.storageUri is required"
