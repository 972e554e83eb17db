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
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from example_models import make_models_module
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Lab:
    proc: subprocess.Popen[bytes]
    url: str
    token: str
    log: Path

    def api(self, path: str, method: str = "GET") -> Any:
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return json.loads(raw) if raw else None

    def wait_kernel_idle(self, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        """JupyterLab drops 'run all' sent before its kernel is idle with a connection (FACTS.md)."""
        deadline = time.monotonic() + timeout
        kernels: Any = None
        while time.monotonic() < deadline:
            try:
                kernels = self.api("/api/kernels")
            except urllib.error.HTTPError as exc:  # a kernel still starting can make the listing fail
                kernels = f"HTTP {exc.code}"
                time.sleep(0.25)
                continue
            for k in kernels:
                if k.get("execution_state") == "idle" and int(k.get("connections", 0)) >= 1:
                    return k
            time.sleep(0.25)
        raise AssertionError(f"no idle connected kernel after {timeout:g} s: {kernels}\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                for k in self.api("/api/kernels"):
                    self.api(f"/api/kernels/{k['id']}", method="DELETE")
            except OSError:
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


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
        browser_models: tuple[Path, dict[str, Any]]) -> Iterator[Lab]:
    home = tmp_path_factory.mktemp("jupyter")
    notebooks = home / "notebooks"
    notebooks.mkdir()
    shutil.copy(NOTEBOOK, notebooks / NOTEBOOK.name)
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    token, port = secrets.token_hex(16), _free_port()
    env = {
        **os.environ,
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "KSERVE_MESH_URL": browser_mesh.rest,
        "KSERVE_MESH_EXAMPLE_MODELS": str(browser_models[0]),
    }
    log = home / "lab.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--allow-root", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={notebooks}", "--LabApp.expose_app_in_browser=True"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=home)
    server = Lab(proc, f"http://127.0.0.1:{port}", token, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()}")
            try:
                server.api("/api/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"jupyter lab did not start in {START_TIMEOUT_S:g} s:\n{log.read_text()}")
                time.sleep(0.25)
        yield server
    finally:
        server.stop()


def test_notebook_registers_and_tests_a_model_through_the_widget(
        lab: Lab, browser_mesh: MeshProcess, browser_models: tuple[Path, dict[str, Any]]) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    request = browser_models[1]["sklearn-iris"]["request"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(STEP_TIMEOUT_MS)
            page.goto(f"{lab.url}/lab/tree/{NOTEBOOK.name}?token={lab.token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell")
            lab.wait_kernel_idle()
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
