"""The example notebook in a real JupyterLab, driven by headless Chromium, against a real mesh.

Starts a mesh serving the example models and ``jupyter lab`` (its own settings, data, runtime and
workspace folders, news popup off) on a copy of ``examples/notebooks/mesh-walkthrough.ipynb``; opens
it in Chromium (playwright, Debian's /usr/bin/chromium), waits until the kernel is idle with a
connection, runs every cell, then registers a model through the widget, watches it become LOADED in
the models table (background refresh), runs a test inference and reads the prediction. Screenshots
go to ``test-artifacts/jupyter-mesh-panel-models.png`` (the table) and ``jupyter-mesh-panel.png``
(the test pane). Every process is stopped by its handle.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from example_models import make_models_module
from lab_process import JupyterProcess, start_jupyter
from mesh_process import MeshProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[3]
NOTEBOOK = ROOT / "examples" / "notebooks" / "mesh-walkthrough.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
START_TIMEOUT_S = 60.0
STEP_TIMEOUT_MS = 45_000


def wait_kernel_idle(lab: JupyterProcess, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
    """JupyterLab drops 'run all' sent before its kernel is idle with a connection (FACTS.md)."""
    deadline = time.monotonic() + timeout
    kernels: Any = None
    while time.monotonic() < deadline:
        status, kernels = lab.request("GET", "/api/kernels", timeout=10)
        if status != 200:  # a kernel still starting can make the listing fail
            kernels = f"HTTP {status}"
            time.sleep(0.25)
            continue
        for k in kernels:
            if k.get("execution_state") == "idle" and int(k.get("connections", 0)) >= 1:
                return k
        time.sleep(0.25)
    raise AssertionError(f"no idle connected kernel after {timeout:g} s: {kernels}\n{lab.log.read_text()}")


def stop_lab(lab: JupyterProcess) -> None:
    """Shut its kernels down first, then the server."""
    if lab.proc.poll() is None:
        try:
            status, kernels = lab.request("GET", "/api/kernels", timeout=10)
            for k in kernels if status == 200 else ():
                lab.request("DELETE", f"/api/kernels/{k['id']}", timeout=10)
        except OSError:
            pass
    lab.stop()


@pytest.fixture(scope="module")
def browser_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("browser-models")
    return out, make_models_module().make_all(out, string_models=1)


@pytest.fixture(scope="module")
def browser_mesh(browser_models: tuple[Path, dict[str, Any]]) -> Iterator[MeshProcess]:
    proc = MeshProcess.start("--models", str(browser_models[0]))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, browser_mesh: MeshProcess,
        browser_models: tuple[Path, dict[str, Any]]) -> Iterator[JupyterProcess]:
    home = tmp_path_factory.mktemp("jupyter")
    notebooks = home / "notebooks"
    notebooks.mkdir()
    shutil.copy(NOTEBOOK, notebooks / NOTEBOOK.name)
    env = {"KSERVE_MESH_URL": browser_mesh.rest, "KSERVE_MESH_EXAMPLE_MODELS": str(browser_models[0])}
    server = start_jupyter(home, notebooks, env, timeout=START_TIMEOUT_S,
                           args=("--LabApp.expose_app_in_browser=True",))
    try:
        yield server
    finally:
        stop_lab(server)


def test_notebook_registers_and_tests_a_model_through_the_widget(
        lab: JupyterProcess, browser_mesh: MeshProcess, browser_models: tuple[Path, dict[str, Any]]) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    request = browser_models[1]["sklearn-iris"]["request"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(STEP_TIMEOUT_MS)
            expect.set_options(timeout=STEP_TIMEOUT_MS)  # assertions wait as long as steps (a busy machine)
            page.goto(f"{lab.url}/lab/tree/{NOTEBOOK.name}?token={lab.token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell")
            wait_kernel_idle(lab)
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.commands.hasCommand('notebook:run-all-cells')")
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

            panel = page.locator(".kserve-mesh-panel")
            expect(panel).to_be_visible()
            # The SDK cells ran: the vmodel moved to iris-v2 (the cell shows the active model id).
            expect(page.locator(".jp-OutputArea-output", has_text="'iris-v2'")).to_be_visible()
            expect(page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")).to_have_count(0)
            expect(panel.locator("tr[data-model-id='sklearn-iris']")).to_be_visible()

            panel.locator(".lm-TabBar-tab", has_text="Register").click()
            panel.locator(".kserve-mesh-name input").fill("browser-iris")
            panel.locator(".kserve-mesh-format select").select_option("sklearn")
            panel.locator(".kserve-mesh-uri input").fill(str(browser_models[0] / "sklearn-iris"))
            panel.locator("button.kserve-mesh-register").click()
            expect(panel.locator(".kserve-mesh-message")).to_contain_text("registered 'browser-iris' (sklearn)")

            panel.locator(".lm-TabBar-tab", has_text="Models").click()
            row = panel.locator("tr[data-model-id='browser-iris']")
            expect(row).to_have_attribute("data-state", "LOADED")  # by the background refresh
            expect(row).to_contain_text("sklearn")
            page.screenshot(path=str(ARTIFACTS / "jupyter-mesh-panel-models.png"))

            panel.locator(".lm-TabBar-tab", has_text="Test").click()
            expect(panel.locator(".kserve-mesh-test-model select")).to_have_value("browser-iris")
            panel.locator(".kserve-mesh-input textarea").fill(json.dumps(request))
            panel.locator("button.kserve-mesh-run").click()
            output = panel.locator("tr[data-output='output-0']")
            expect(output).to_contain_text("[0 1 2]")
            expect(panel.locator(".kserve-mesh-latency")).to_contain_text("answered in")
            expect(panel.locator(".kserve-mesh-error")).to_have_count(0)
            page.screenshot(path=str(ARTIFACTS / "jupyter-mesh-panel.png"))
            # A wrong input shape: the mesh's message as the panel's red line, no traceback.
            panel.locator(".kserve-mesh-input textarea").fill("[[1, 2, 3]]")
            panel.locator("button.kserve-mesh-run").click()
            expect(panel.locator(".kserve-mesh-error")).to_contain_text("has 3 features; the model expects 4")
            expect(page.get_by_text("Traceback")).to_have_count(0)
        finally:
            browser.close()
    status = browser_mesh.call("GET", "/mesh/v1/models/browser-iris")[1]
    assert status["status"] == "LOADED"
