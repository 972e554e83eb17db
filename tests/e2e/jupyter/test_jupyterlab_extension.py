"""kserve-mesh's JupyterLab extension in a real JupyterLab, driven by headless Chromium, against a
real mesh: the "Model Mesh" sidebar lists the mesh's models and vmodels; right-click → "Deploy to
mesh" on a model file saved in Jupyter's root dir registers and loads it; the test pane shows the
model's prediction and latency; errors of the mesh are shown in full. Plus: `jupyter labextension
list` and `jupyter server extension list` show the extension enabled in this environment.

The extension must be installed in this Python the way a user gets it (a wheel, or for a checkout
`bash scripts/build-labextension.sh`, which `scripts/test-deps.sh` runs). Screenshots go to
``$KSERVE_MESH_ARTIFACTS/jupyterlab-extension/`` (default ``test-artifacts/``). Every process is
stopped by its handle.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_process import JupyterProcess, start_jupyter
from mesh_process import MeshProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = Path(os.environ.get("KSERVE_MESH_ARTIFACTS") or ROOT / "test-artifacts") / "jupyterlab-extension"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
STEP_TIMEOUT_MS = 30_000
LABEXTENSION = "kserve-mesh-jupyterlab"
NOT_INSTALLED = ("the kserve-mesh JupyterLab extension is not installed in this Python: "
                 "run `bash scripts/build-labextension.sh` (scripts/test-deps.sh does) or install a wheel")
REQUESTED: list[str] = []
"""Every URL the page asked for (the mesh's must not be among them)."""
ISVC = """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {name}
  namespace: default
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
spec:
  predictor:
    model:
      modelFormat:
        name: sklearn{uri}
"""
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]  # one iris of each class


def _jupyter(command: str, args: list[str], module: str, module_args: list[str]) -> str:
    """`jupyter COMMAND ARGS` of this environment (its console script next to this Python, else the
    same app as ``python -m MODULE MODULE_ARGS``), stdout and stderr together, colours stripped."""
    script = Path(sys.executable).parent / f"jupyter-{command}"
    cmd = [str(script), *args] if script.exists() else [sys.executable, "-m", module, *module_args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    return re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)


def test_jupyter_labextension_list_shows_it_enabled() -> None:
    listing = _jupyter("labextension", ["list"], "jupyterlab.labextensions", ["list"])
    line = next((ln for ln in listing.splitlines() if LABEXTENSION in ln), None)
    assert line is not None, f"{NOT_INSTALLED}\n{listing}"
    assert re.search(rf"{LABEXTENSION} v0\.1\.0 enabled\s+OK \(python, kserve-mesh\)", line), line
    servers = _jupyter("server", ["extension", "list"], "jupyter_server.extension.serverextension", ["list"])
    assert re.search(r"kserve_mesh\.jupyter_ext\.server\s+enabled", servers), f"{NOT_INSTALLED}\n{servers}"
    assert re.search(r"kserve_mesh\.jupyter_ext\.server\s+OK", servers), servers


def _train_iris(path: Path) -> None:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("labext")
    models, lab_root = base / "mesh-models", base / "lab-root"
    models.mkdir()
    (lab_root / "work").mkdir(parents=True)
    _train_iris(models / "iris-base.joblib")
    _train_iris(lab_root / "work" / "deploy-me.joblib")  # "the model file the user just saved"
    (lab_root / "work" / "broken.joblib").write_bytes(b"this is not a pickled model")
    (lab_root / "work" / "iris-isvc.yaml").write_text(ISVC.format(name="iris-isvc", uri=(
        f"\n      storageUri: {(lab_root / 'work' / 'deploy-me.joblib').resolve()}")))
    (lab_root / "work" / "no-uri.yaml").write_text(ISVC.format(name="no-uri", uri=""))
    return models, lab_root


@pytest.fixture(scope="module")
def mesh(folders: tuple[Path, Path]) -> Iterator[MeshProcess]:
    models, lab_root = folders
    proc = MeshProcess.start("--models", str(models), "--allow-local-path", str(lab_root))
    try:
        status, body = proc.call("PUT", "/mesh/v1/vmodels/iris", {"targetModelId": "iris-base"})
        assert status == 200, body
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, folders: tuple[Path, Path],
        mesh: MeshProcess) -> Iterator[JupyterProcess]:
    # The mesh's address reaches only the Jupyter server (its environment), never the page.
    proc = start_jupyter(tmp_path_factory.mktemp("lab-home"), folders[1], {"KSERVE_MESH_URL": mesh.rest})
    try:
        status, body = proc.request("GET", "/kserve-mesh/overview")
        assert status == 200, f"{NOT_INSTALLED} (GET /kserve-mesh/overview: {status} {body})"
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def page(lab: JupyterProcess) -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 950})
            page.set_default_timeout(STEP_TIMEOUT_MS)
            expect.set_options(timeout=STEP_TIMEOUT_MS)  # assertions wait as long as steps (a busy machine)
            page.on("request", lambda request: REQUESTED.append(request.url))
            page.goto(f"{lab.url}/lab?token={lab.token}")
            page.wait_for_selector(".jp-DirListing-item")
            yield page
        finally:
            browser.close()


def _open_sidebar(page: Any) -> Any:
    tab = page.locator(".jp-SideBar .lm-TabBar-tab[data-id='kserve-mesh-sidebar']")
    sidebar = page.locator("#kserve-mesh-sidebar")
    if not sidebar.is_visible():
        tab.click()
    return sidebar


def test_sidebar_lists_the_models_and_vmodels_of_the_mesh(page: Any, mesh: MeshProcess,
                                                          folders: tuple[Path, Path]) -> None:
    from playwright.sync_api import expect

    sidebar = _open_sidebar(page)
    expect(sidebar).to_be_visible()
    row = sidebar.locator(".kserve-mesh-model[data-model-id='iris-base']")
    expect(row).to_be_visible()
    expect(row).to_contain_text("sklearn")
    # The row shows the mesh's state (read both until they agree: a load may be under way).
    deadline = time.monotonic() + 10
    while (shown := row.get_attribute("data-state")) != (state := mesh.call("GET", "/mesh/v1/models/iris-base")[1][
            "status"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert shown == state
    expect(sidebar.locator(".kserve-mesh-vmodel[data-vmodel-id='iris']")).to_contain_text("iris-base")
    capacity = mesh.call("GET", "/mesh/v1/status")[1]["capacityBytes"]
    expect(sidebar.locator(".kserve-mesh-capacity-used")).to_have_attribute("data-capacity", str(capacity))
    expect(sidebar.locator(".kserve-mesh-capacity-text")).to_contain_text(" used (")
    # Polling: a model registered behind the page's back shows up without a click.
    status, body = mesh.call("PUT", "/mesh/v1/models/registered-elsewhere",
                             {"modelInfo": {"type": "sklearn", "path": str(folders[0] / "iris-base.joblib")}})
    assert status == 200, body
    expect(sidebar.locator(".kserve-mesh-model[data-model-id='registered-elsewhere']")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "sidebar.png"))


def _deploy_from_file_browser(page: Any, name: str) -> None:
    page.locator(".jp-SideBar .lm-TabBar-tab[data-id='filebrowser']").click()
    listing = page.locator(".jp-DirListing-content")
    if not listing.locator(".jp-DirListing-item", has_text=name).count():
        listing.locator(".jp-DirListing-item", has_text="work").dblclick()
    item = listing.locator(".jp-DirListing-item", has_text=name)
    item.click(button="right")
    page.locator(".lm-Menu-item[data-command='kserve-mesh:deploy']").click()
    dialog = page.locator(".jp-Dialog")
    from playwright.sync_api import expect

    expect(dialog.locator(".kserve-mesh-deploy-id")).to_have_value(name.rsplit(".", 1)[0])
    expect(dialog.locator(".kserve-mesh-deploy-type")).to_have_value("sklearn")
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()


def test_right_click_deploy_registers_and_loads_the_file(page: Any, mesh: MeshProcess,
                                                         folders: tuple[Path, Path]) -> None:
    from playwright.sync_api import expect

    _deploy_from_file_browser(page, "deploy-me.joblib")
    sidebar = page.locator("#kserve-mesh-sidebar")
    expect(sidebar.locator(".kserve-mesh-message")).to_have_text("deployed 'deploy-me' (sklearn): LOADED")
    expect(sidebar.locator(".kserve-mesh-model[data-model-id='deploy-me']")).to_have_attribute("data-state", "LOADED")
    status = mesh.call("GET", "/mesh/v1/models/deploy-me")[1]
    assert status["status"] == "LOADED"
    assert status["modelInfo"] == {"type": "sklearn", "path": str((folders[1] / "work" / "deploy-me.joblib").resolve()),
                                   "key": ""}
    page.screenshot(path=str(ARTIFACTS / "deployed.png"))


def test_test_pane_shows_the_prediction_and_latency(page: Any, mesh: MeshProcess) -> None:
    from playwright.sync_api import expect

    sidebar = _open_sidebar(page)
    sidebar.locator(".kserve-mesh-model[data-model-id='deploy-me'] button.kserve-mesh-test").click()
    pane = page.locator(".kserve-mesh-test-pane")
    expect(pane.locator("select.kserve-mesh-test-model")).to_have_value("deploy-me")
    pane.locator("textarea.kserve-mesh-input").fill(str(ROWS))
    pane.locator("button.kserve-mesh-run").click()
    expect(pane.locator("tr[data-output='output-0'] .kserve-mesh-output-data")).to_have_text("[0,1,2]")
    expect(pane.locator(".kserve-mesh-latency")).to_contain_text(re.compile(r"deploy-me: answered in \d+\.\d ms"))
    expect(pane.locator(".kserve-mesh-error")).to_be_hidden()
    direct = mesh.call("POST", "/v2/models/deploy-me/infer", {"inputs": [
        {"name": "input-0", "shape": [3, 4], "datatype": "FP64", "data": [v for row in ROWS for v in row]}]})[1]
    assert direct["outputs"][0]["data"] == [0, 1, 2]
    page.screenshot(path=str(ARTIFACTS / "test-pane.png"))


def test_errors_of_the_mesh_are_shown_in_full(page: Any, mesh: MeshProcess) -> None:
    from playwright.sync_api import expect

    pane = page.locator(".kserve-mesh-test-pane")
    pane.locator("textarea.kserve-mesh-input").fill("[[1, 2, 3]]")
    pane.locator("button.kserve-mesh-run").click()
    status, body = mesh.call("POST", "/v2/models/deploy-me/infer", {"inputs": [
        {"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]})
    assert status == 400 and body["error"]
    expect(pane.locator(".kserve-mesh-error")).to_have_text(f"deploy-me: {body['error']}")
    page.screenshot(path=str(ARTIFACTS / "test-pane-error.png"))

    # A file that is no model: the load fails, and the mesh's reason is shown whole, in the
    # message line and in the model's row.
    _deploy_from_file_browser(page, "broken.joblib")
    sidebar = page.locator("#kserve-mesh-sidebar")
    message = sidebar.locator(".kserve-mesh-message.kserve-mesh-error")
    expect(message).to_contain_text("Deploy of work/broken.joblib as 'broken' failed: ")
    status = mesh.wait_state("broken", {"LOADING_FAILED"}, timeout=30)
    for error in set(status["errors"]):
        assert error in message.inner_text()
        expect(sidebar.locator(".kserve-mesh-model[data-model-id='broken'] .kserve-mesh-errors")).to_contain_text(error)
    expect(sidebar.locator(".kserve-mesh-model[data-model-id='broken']")).to_have_attribute(
        "data-state", "LOADING_FAILED")
    page.screenshot(path=str(ARTIFACTS / "deploy-error.png"))


def test_table_editor_builds_the_request(page: Any) -> None:
    from playwright.sync_api import expect

    sidebar = _open_sidebar(page)
    sidebar.locator(".kserve-mesh-model[data-model-id='deploy-me'] button.kserve-mesh-test").click()
    pane = page.locator(".kserve-mesh-test-pane")
    pane.locator("button.kserve-mesh-example").click()  # shaped from the model's V2 metadata
    expect(pane.locator("textarea.kserve-mesh-input")).to_have_value(re.compile('"name": "input-0"'))
    pane.locator("button.kserve-mesh-mode").click()
    grid = pane.locator(".kserve-mesh-table-input[data-input='input-0']")
    expect(grid.locator("input.kserve-mesh-cell")).to_have_count(4)
    grid.locator("button.kserve-mesh-add-row").click()
    cells = grid.locator("input.kserve-mesh-cell")
    for i, value in enumerate(ROWS[1] + ROWS[2]):
        cells.nth(i).fill(str(value))
    pane.locator("button.kserve-mesh-run").click()
    expect(pane.locator("tr[data-output='output-0'] .kserve-mesh-output-data")).to_have_text("[1,2]")
    page.screenshot(path=str(ARTIFACTS / "table-editor.png"))
    pane.locator("button.kserve-mesh-mode").click()  # back to JSON: the grid's request
    expect(pane.locator("textarea.kserve-mesh-input")).to_have_value(re.compile(r'"shape": \[\s*2,\s*4\s*\]'))


def _open_in_editor(page: Any, name: str) -> None:
    page.locator(".jp-SideBar .lm-TabBar-tab[data-id='filebrowser']").click()
    page.locator(".jp-DirListing-content .jp-DirListing-item", has_text=name).dblclick()
    page.locator(".jp-FileEditor:visible .cm-content", has_text=f"name: {name.rsplit('.', 1)[0]}").wait_for()


def test_apply_inferenceservice_yaml_from_the_open_editor(page: Any, mesh: MeshProcess) -> None:
    from playwright.sync_api import expect

    _open_in_editor(page, "iris-isvc.yaml")
    sidebar = _open_sidebar(page)
    sidebar.locator("button.kserve-mesh-apply").click()
    message = sidebar.locator(".kserve-mesh-message")
    expect(message).to_contain_text("applied work/iris-isvc.yaml: InferenceService default/iris-isvc")
    status, body = mesh.call("GET", "/mesh/v1/inferenceservices/default/iris-isvc")
    assert status == 200, body
    page.screenshot(path=str(ARTIFACTS / "apply-yaml.png"))

    _open_in_editor(page, "no-uri.yaml")  # from the editor's own context menu this time
    page.locator(".jp-FileEditor:visible .cm-content").click(button="right")
    page.locator(".lm-Menu-item[data-command='kserve-mesh:apply-yaml']").click()
    from kserve_mesh.client import InvalidInputError, connect

    with connect(mesh.rest) as client, pytest.raises(InvalidInputError) as refused:
        client.apply(ISVC.format(name="no-uri", uri=""))  # the mesh's own words for this YAML
    assert refused.value.status == 400
    expect(sidebar.locator(".kserve-mesh-message.kserve-mesh-error")).to_have_text(
        f"Apply of work/no-uri.yaml failed: {refused.value.message}")


def test_the_page_only_ever_called_jupyter(page: Any, lab: JupyterProcess, mesh: MeshProcess) -> None:
    assert any(url.startswith(f"{lab.url}/kserve-mesh/") for url in REQUESTED)
    assert not [url for url in REQUESTED if url.startswith(mesh.rest)], "the browser called the mesh itself"
    assert all(url.startswith((lab.url, "data:", "blob:")) for url in REQUESTED), sorted(set(REQUESTED))
