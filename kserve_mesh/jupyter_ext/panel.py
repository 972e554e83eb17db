"""``MeshPanel``: a notebook widget to register, watch and test the models of a mesh.

    from kserve_mesh.jupyter_ext import MeshPanel
    display(MeshPanel("http://127.0.0.1:8008"))

Three tabs over one ``MeshClient``: *Models* (state, size, copies, last use; refreshed in the
background while the panel is on screen), *Register* (name, model format, storage URI; or paste
InferenceService YAML and apply it) and *Test* (pick a model, edit a V2 JSON request or start from
one generated from the model's metadata, run it, see the outputs and the latency).

Every action runs through ``_action``: a failure shows one red line in the panel (the client's
typed error carries the mesh's own message) and is kept in ``error``; no traceback reaches the
notebook. Built on plain ipywidgets 8, so it needs no JavaScript of its own.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import numpy as np

from kserve_mesh.client import InvalidInputError, MeshClient, MeshClientError, example_request
from kserve_mesh.jupyter_ext import render
from kserve_mesh.jupyter_ext.refresher import Refresher

MODEL_FORMATS = ("sklearn", "xgboost", "lightgbm", "onnx", "pytorch", "tensorflow", "keras", "openvino_ir", "python",
                 "string")
"""What the built-in runtime serves; a mesh that reports ``modelTypes`` in its status overrides it."""

EXAMPLE_YAML = """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: my-model
  namespace: default
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
spec:
  predictor:
    model:
      modelFormat:
        name: sklearn
      storageUri: s3://models/my-model
"""


class MeshPanel(widgets.VBox):
    """The mesh at ``url`` in a notebook. ``close()`` stops the background refresh."""

    def __init__(self, url: str = "http://127.0.0.1:8008", *, token: str | None = None,
                 ca_cert: str | None = None, client_cert: str | None = None, client_key: str | None = None,
                 refresh_interval_s: float = 2.0, max_refresh_s: float = 1800.0, timeout_s: float = 60.0) -> None:
        url = url.strip()
        if "://" not in url:
            url = "http://" + url  # "localhost:8008" is what people type
        self.url = url
        self.models: list[dict[str, Any]] = []
        """The models as of the last refresh (``GET /mesh/v1/models``)."""
        self.error = ""
        """The last error shown in the panel ('' after a success)."""
        self.last_outputs: dict[str, np.ndarray] = {}
        self.last_latency_ms: float | None = None
        self._lock = threading.RLock()
        self._refresh_failed = False

        self.title = widgets.HTML(f"<b>kserve-mesh</b> at <code>{render.html.escape(url)}</code>")
        self.summary = widgets.HTML("")
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh", layout={"width": "110px"})
        self.message = widgets.HTML("").add_class("kserve-mesh-message")
        self.tabs = widgets.Tab(children=[self._models_tab(), self._register_tab(), self._test_tab()],
                                titles=("Models", "Register", "Test"))
        super().__init__([widgets.HBox([self.title, self.refresh_button]), self.summary, self.message, self.tabs])
        self.add_class("kserve-mesh-panel")

        self.refresh_button.on_click(lambda _: self._action(self.refresh))
        self.register_button.on_click(lambda _: self._action(self.register))
        self.apply_button.on_click(lambda _: self._action(self.apply))
        self.example_button.on_click(lambda _: self._action(self.fill_example))
        self.run_button.on_click(lambda _: self._action(self.run_test))

        # token / TLS files: given here, else KSERVE_MESH_TOKEN / _CA_CERT / _CLIENT_CERT / _CLIENT_KEY
        tls = {"token": token, "ca_cert": ca_cert, "client_cert": client_cert, "client_key": client_key}
        self._client = MeshClient(url, timeout=timeout_s, **tls)
        self._poll_client = MeshClient(url, timeout=min(timeout_s, 5.0), **tls)
        # Count the views the frontend shows (ipywidgets keeps _view_count once it is a number).
        self._view_count = 0
        self.refresher = Refresher(self._background_refresh, self.visible, interval_s=refresh_interval_s,
                                   max_runtime_s=max_refresh_s, on_expire=self._refresh_expired)
        self._action(self._first_refresh)
        self.refresher.start()

    # -- the tabs --------------------------------------------------------------------------------
    def _models_tab(self) -> widgets.Widget:
        self.table = widgets.HTML(render.models_table([])).add_class("kserve-mesh-table")
        return self.table

    def _register_tab(self) -> widgets.Widget:
        self.name = widgets.Text(description="Name", placeholder="my-model").add_class("kserve-mesh-name")
        self.model_format = widgets.Dropdown(description="Format", options=MODEL_FORMATS,
                                             value=MODEL_FORMATS[0]).add_class("kserve-mesh-format")
        self.storage_uri = widgets.Text(description="Storage URI", placeholder="s3://bucket/path, /local/path, https://…",
                                        layout={"width": "60%"}).add_class("kserve-mesh-uri")
        self.register_button = widgets.Button(description="Register", button_style="primary",
                                              icon="plus").add_class("kserve-mesh-register")
        self.yaml = widgets.Textarea(placeholder=EXAMPLE_YAML, layout={"width": "90%", "height": "180px"}
                                     ).add_class("kserve-mesh-yaml")
        self.apply_button = widgets.Button(description="Apply YAML", icon="upload").add_class("kserve-mesh-apply")
        return widgets.VBox([
            widgets.HTML("<b>Register a model</b>"),
            self.name, self.model_format, self.storage_uri, self.register_button,
            widgets.HTML("<b>… or apply InferenceService YAML</b>"), self.yaml, self.apply_button,
        ])

    def _test_tab(self) -> widgets.Widget:
        self.test_model = widgets.Dropdown(description="Model", options=[]).add_class("kserve-mesh-test-model")
        self.example_button = widgets.Button(description="Example input", icon="magic"
                                             ).add_class("kserve-mesh-example")
        self.run_button = widgets.Button(description="Run", button_style="success", icon="play"
                                         ).add_class("kserve-mesh-run")
        self.test_input = widgets.Textarea(placeholder='{"inputs": [{"name": "input-0", "shape": [1, 4], '
                                                       '"datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}',
                                           layout={"width": "90%", "height": "120px"}).add_class("kserve-mesh-input")
        self.result = widgets.HTML("").add_class("kserve-mesh-result-pane")
        return widgets.VBox([widgets.HBox([self.test_model, self.example_button, self.run_button]),
                             self.test_input, self.result])

    # -- plumbing --------------------------------------------------------------------------------
    def visible(self) -> bool:
        """Whether a view of the panel is on screen (always true where views are not counted)."""
        count = self._view_count
        return count is None or count > 0

    def _action(self, fn: Callable[[], Any]) -> bool:
        """Run one user action; any failure becomes the red line of the panel, never a traceback."""
        try:
            with self._lock:
                fn()
            return True
        except MeshClientError as exc:
            self.show_error(exc.message)
        except Exception as exc:  # noqa: BLE001 - the notebook must see a message, not a traceback
            self.show_error(f"unexpected {type(exc).__name__}: {exc}")
        return False

    def show_error(self, text: str) -> None:
        self.error = text
        self.message.value = render.message(text, "error")

    def show_info(self, text: str, kind: str = "ok") -> None:
        self.error = ""
        self.message.value = render.message(text, kind)

    def close(self) -> None:
        """Stop the background refresh, close the connections and every widget of the panel."""
        self.refresher.stop()
        self._client.close()
        self._poll_client.close()
        stack: list[widgets.Widget] = list(self.children)
        while stack:
            widget = stack.pop()
            stack.extend(getattr(widget, "children", ()))
            widget.close()
        super().close()

    # -- models ----------------------------------------------------------------------------------
    def _first_refresh(self) -> None:
        status = self._client.server_status()
        types = status.get("modelTypes") if isinstance(status, dict) else None
        if types:
            self.model_format.options = tuple(str(t) for t in types)
        self._refresh_with(self._client, status)

    def refresh(self) -> None:
        """Fetch the models now and redraw the table, the summary and the model picker."""
        self._refresh_with(self._client)

    def _refresh_with(self, client: MeshClient, status: dict[str, Any] | None = None) -> None:
        models = client.models()
        if status is None:
            status = client.server_status()
        self.models = models
        self.table.value = render.models_table(models)
        self.summary.value = render.summary(status, len(models))
        ids = sorted(str(m["modelId"]) for m in models)
        if tuple(ids) != tuple(self.test_model.options):
            current = self.test_model.value
            self.test_model.options = ids
            if current in ids:
                self.test_model.value = current
        if self._refresh_failed:
            self._refresh_failed = False
            if self.error.startswith(("cannot reach", "the mesh at")):
                self.show_info("")

    def _background_refresh(self) -> None:
        with self._lock:
            try:
                self._refresh_with(self._poll_client)
            except MeshClientError as exc:
                if not self._refresh_failed or self.error != exc.message:
                    self.show_error(exc.message)
                self._refresh_failed = True

    def _refresh_expired(self) -> None:
        self.show_info(f"auto-refresh stopped after {self.refresher.max_runtime_s / 60:.0f} min; "
                       "press Refresh to update", "info")

    # -- register / apply ------------------------------------------------------------------------
    def register(self) -> None:
        """Register (and start loading) the model described by the form."""
        name, uri = self.name.value.strip(), self.storage_uri.value.strip()
        if not name:
            raise InvalidInputError("give the model a name")
        if not uri:
            raise InvalidInputError("give the storage URI of the model (s3://…, https://…, or a path)")
        status = self._client.register(name, self.model_format.value, uri, load_now=True)
        self.refresh()
        self.test_model.value = name
        self.show_info(f"registered '{name}' ({self.model_format.value}); state {status.get('status')}")

    def apply(self) -> None:
        """Apply the InferenceService YAML of the text area."""
        text = self.yaml.value
        if not text.strip():
            raise InvalidInputError("paste InferenceService YAML first")
        results = self._client.apply(text)
        done = ", ".join(f"{r.get('kind')} {r.get('namespace')}/{r.get('name')} {r.get('action')}" for r in results)
        self.refresh()
        self.show_info(f"applied: {done or 'nothing to do'}")

    # -- test ------------------------------------------------------------------------------------
    def _picked(self) -> str:
        name = self.test_model.value
        if not name:
            raise InvalidInputError("pick a model to test (register one first)")
        return str(name)

    def fill_example(self) -> None:
        """Put a request generated from the picked model's V2 metadata into the input box."""
        name = self._picked()
        request = example_request(self._client.metadata(name))
        self.test_input.value = json.dumps(request)
        self.show_info(f"example input for '{name}' from its metadata (-1 dimensions set to 1)", "info")

    def run_test(self) -> None:
        """Send the input box to the picked model and show its outputs and the latency."""
        name = self._picked()
        text = self.test_input.value.strip()
        if not text:
            raise InvalidInputError("write a JSON input first (or press 'Example input')")
        try:
            inputs = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"the input is not valid JSON (line {exc.lineno}, column {exc.colno}): "
                                    f"{exc.msg}") from None
        start = time.perf_counter()
        outputs = self._client.infer(name, inputs)
        latency_ms = (time.perf_counter() - start) * 1000
        self.last_outputs, self.last_latency_ms = outputs, latency_ms
        self.result.value = render.outputs(outputs, latency_ms, name)
        self.show_info(f"'{name}' answered in {latency_ms:.1f} ms")
