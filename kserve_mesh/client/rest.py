"""``MeshClient``: register, watch, call and deploy models of a running mesh over its REST API.

One synchronous httpx client per ``MeshClient``; every call has a timeout and raises one of the
typed errors of ``errors.py`` with the server's message. Routes used:

- management (mirrors ``mmesh.ModelMesh``): ``/mesh/v1/models[/{id}[/ensure-loaded]]``,
  ``/mesh/v1/vmodels[/{id}]``, ``/mesh/v1/status``;
- data plane (Open Inference Protocol V2): ``GET /v2/models/{name}``, ``POST /v2/models/{name}/infer``;
- KServe integration: ``POST /mesh/v1/apply`` (multi-document YAML),
  ``GET|DELETE /mesh/v1/inferenceservices[/{namespace}/{name}]``.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np

from kserve_mesh.client import tensors
from kserve_mesh.client.errors import (
    InvalidInputError,
    LoadFailedError,
    LoadTimeoutError,
    MeshClientError,
    MeshUnavailableError,
    ModelNotFoundError,
    ServerError,
    error_from_response,
)

DEFAULT_URL = "http://127.0.0.1:8008"
_METADATA_TTL_S = 10.0


def _seg(value: str, what: str) -> str:
    if not value or "/" in value:
        raise InvalidInputError(f"{what} must be a non-empty name without '/', got {value!r}")
    return quote(value, safe="")


def _env(value: str | None, name: str) -> str:
    """``value``, or when it is None the environment variable ``name`` (empty when unset)."""
    return os.environ.get(name, "") if value is None else value


def tls_context(ca_cert: str = "", client_cert: str = "", client_key: str = "") -> ssl.SSLContext:
    """A client TLS context: trust ``ca_cert`` (PEM bundle; default: the system's CAs) and present
    ``client_cert`` / ``client_key`` (PEM; the key may be inside the certificate file) for mTLS."""
    try:
        ctx = ssl.create_default_context(cafile=ca_cert or None)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInputError(f"cannot load the CA bundle {ca_cert}: {exc}") from exc
    if client_key and not client_cert:
        raise InvalidInputError("a client key needs its client certificate (client_cert)")
    if client_cert:
        try:
            ctx.load_cert_chain(client_cert, client_key or None)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidInputError(f"cannot load the client certificate {client_cert}: {exc}") from exc
    return ctx


class MeshClient:
    """A connection to one mesh. Use as a context manager, or call ``close()``.

    ``token`` is sent as ``Authorization: Bearer <token>``; ``ca_cert`` is the PEM bundle that an
    ``https://`` mesh's certificate is checked against, ``client_cert``/``client_key`` a client
    certificate for meshes that require one. Each left as None comes from the environment:
    ``KSERVE_MESH_TOKEN``, ``KSERVE_MESH_CA_CERT``, ``KSERVE_MESH_CLIENT_CERT``, ``KSERVE_MESH_CLIENT_KEY``.
    """

    def __init__(self, url: str = DEFAULT_URL, *, timeout: float = 120.0, token: str | None = None,
                 ca_cert: str | os.PathLike[str] | None = None, client_cert: str | os.PathLike[str] | None = None,
                 client_key: str | os.PathLike[str] | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise InvalidInputError(f"the mesh URL must start with http:// or https://, got {url!r}")
        token = _env(token, "KSERVE_MESH_TOKEN").strip()
        ca = _env(None if ca_cert is None else os.fspath(ca_cert), "KSERVE_MESH_CA_CERT")
        cert = _env(None if client_cert is None else os.fspath(client_cert), "KSERVE_MESH_CLIENT_CERT")
        key = _env(None if client_key is None else os.fspath(client_key), "KSERVE_MESH_CLIENT_KEY")
        if token and not (token.isascii() and token.isprintable()):
            raise InvalidInputError("the token holds characters that cannot travel in an HTTP header "
                                    "(printable ASCII only)")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if url.startswith("http://") and (ca or cert):
            raise InvalidInputError(f"a CA bundle or client certificate is for https:// meshes; {url} is http://")
        verify: ssl.SSLContext | bool = tls_context(ca, cert, key) if url.startswith("https://") else True
        self.url = url.rstrip("/")
        try:
            self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers, verify=verify)
            self._http.build_request("GET", "/")  # a malformed URL fails here, not at the first call
        except httpx.InvalidURL as exc:
            raise InvalidInputError(f"the mesh URL {url!r} is not a valid URL: {exc}") from exc
        self._metadata: dict[str, tuple[float, dict[str, Any]]] = {}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MeshClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MeshClient({self.url!r})"

    # -- transport -------------------------------------------------------------------------------
    def _send(self, method: str, path: str, *, model_id: str = "", **kwargs: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.InvalidURL as exc:
            raise InvalidInputError(f"cannot call {method} {path}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise MeshUnavailableError(f"the mesh at {self.url} did not answer {method} {path} in time") from exc
        except httpx.HTTPError as exc:
            hint = ""
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                hint = " (its certificate is not trusted: give its CA bundle, --ca-cert / KSERVE_MESH_CA_CERT)"
            elif "CERTIFICATE_REQUIRED" in str(exc) or "certificate required" in str(exc):
                hint = " (it requires a client certificate: --client-cert / KSERVE_MESH_CLIENT_CERT)"
            raise MeshUnavailableError(f"cannot reach the mesh at {self.url}: {exc}{hint}") from exc
        if resp.status_code >= 400:
            try:
                body: Any = resp.json()
            except ValueError:
                body = resp.text
            err = error_from_response(resp.status_code, body, model_id=model_id,
                                      retry_after=resp.headers.get("retry-after"))
            if isinstance(err, MeshUnavailableError) and model_id and not _has_type(body):
                err = self._load_failure(model_id, err) or err
            raise err
        return resp

    def _load_failure(self, model_id: str, err: MeshClientError) -> LoadFailedError | None:
        """A 503 for a model whose load failed is a ``LoadFailedError`` (servers that do not say so)."""
        try:
            resp = self._http.get(f"/mesh/v1/models/{quote(model_id, safe='')}")
            status = resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        if not isinstance(status, dict) or status.get("status") != "LOADING_FAILED":
            return None
        errors = _unique(status.get("errors") or [])
        return LoadFailedError(err.message, err.status, model_id=model_id, errors=errors, last_status=status)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any route of the mesh's REST API (``path`` from its root); the JSON answer, or None."""
        return self._call(method, path, **kwargs)

    def _call(self, method: str, path: str, *, model_id: str = "", **kwargs: Any) -> Any:
        resp = self._send(method, path, model_id=model_id, **kwargs)
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError as exc:
            raise ServerError(f"the mesh answered {method} {path} with something that is not JSON",
                              resp.status_code) from exc

    # -- models ----------------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        """Every registered model with its state, size, copies and last use (``GET /mesh/v1/models``)."""
        return self._call("GET", "/mesh/v1/models")["models"]

    def status(self, model_id: str) -> dict[str, Any]:
        """One model's status; raises ``ModelNotFoundError`` for an unknown id."""
        return self._call("GET", f"/mesh/v1/models/{_seg(model_id, 'model id')}", model_id=model_id)

    def register(self, model_id: str, model_type: str, path: str = "", key: str = "", *, load_now: bool = False,
                 sync: bool = False, sha256: str = "") -> dict[str, Any]:
        """Register ``model_id`` (type from the runtime's list, storage URI or path, storage key).
        ``sha256`` pins the model's files (``kserve-mesh digest PATH``): a load of other bytes fails."""
        if not model_type:
            raise InvalidInputError("a model type is required (e.g. sklearn, xgboost, lightgbm, onnx)")
        if sha256:
            key = with_sha256(key, sha256)
        body = {"modelInfo": {"type": model_type, "path": path, "key": key}, "loadNow": load_now, "sync": sync}
        return self._call("PUT", f"/mesh/v1/models/{_seg(model_id, 'model id')}", json=body, model_id=model_id)

    def unregister(self, model_id: str) -> None:
        self._call("DELETE", f"/mesh/v1/models/{_seg(model_id, 'model id')}", model_id=model_id)
        self._metadata.pop(model_id, None)

    def ensure_loaded(self, model_id: str, *, sync: bool = False) -> dict[str, Any]:
        return self._call("POST", f"/mesh/v1/models/{_seg(model_id, 'model id')}/ensure-loaded",
                          json={"sync": sync}, model_id=model_id)

    def wait_until_loaded(self, model_id: str, timeout: float = 60.0, *, poll_s: float = 0.1) -> dict[str, Any]:
        """Ask for a copy of ``model_id`` and poll its status until it is LOADED (returned).

        Raises ``LoadFailedError`` (with the mesh's errors) on LOADING_FAILED, ``LoadTimeoutError``
        with the last status after ``timeout`` seconds, ``ModelNotFoundError`` for an unknown id.
        """
        deadline = time.monotonic() + timeout
        status = self.ensure_loaded(model_id)
        delay = poll_s
        while True:
            state = status.get("status")
            if state == "LOADED":
                return status
            if state == "LOADING_FAILED":
                errors = _unique(status.get("errors") or [])
                raise LoadFailedError(f"model '{model_id}' failed to load: {'; '.join(errors) or 'no reason given'}",
                                      model_id=model_id, errors=errors, last_status=status)
            left = deadline - time.monotonic()
            if left <= 0:
                raise LoadTimeoutError(f"model '{model_id}' is not loaded after {timeout:g} s (state {state})",
                                       model_id=model_id, last_status=status)
            time.sleep(min(delay, left))
            delay = min(delay * 1.5, 1.0)
            status = self.status(model_id)

    # -- vmodels ---------------------------------------------------------------------------------
    def set_vmodel(self, vmodel_id: str, target: str, **options: Any) -> dict[str, Any]:
        """Point ``vmodel_id`` at ``target``; traffic moves once the target is loaded.

        ``options`` are the REST body fields: owner, updateOnly, modelInfo, autoDeleteTargetModel,
        loadNow, force, sync, expectedTargetModelId.
        """
        return self._call("PUT", f"/mesh/v1/vmodels/{_seg(vmodel_id, 'vmodel id')}",
                          json={"targetModelId": target, **options}, model_id=vmodel_id)

    def vmodel(self, vmodel_id: str) -> dict[str, Any]:
        return self._call("GET", f"/mesh/v1/vmodels/{_seg(vmodel_id, 'vmodel id')}", model_id=vmodel_id)

    def vmodels(self) -> list[dict[str, Any]]:
        return self._call("GET", "/mesh/v1/vmodels")["vmodels"]

    def delete_vmodel(self, vmodel_id: str) -> None:
        self._call("DELETE", f"/mesh/v1/vmodels/{_seg(vmodel_id, 'vmodel id')}", model_id=vmodel_id)

    # -- inference -------------------------------------------------------------------------------
    def metadata(self, name: str) -> dict[str, Any]:
        """The V2 model metadata (inputs/outputs with names, datatypes, shapes) of a model or vmodel."""
        meta = self._call("GET", f"/v2/models/{_seg(name, 'model name')}", model_id=name)
        self._metadata[name] = (time.monotonic(), meta)
        return meta

    def _cached_metadata(self, name: str) -> dict[str, Any]:
        hit = self._metadata.get(name)
        if hit is not None and time.monotonic() - hit[0] < _METADATA_TTL_S:
            return hit[1]
        return self.metadata(name)

    def infer(self, name: str, inputs: Any, *, outputs: Sequence[str] | None = None,
              binary: bool = False) -> dict[str, np.ndarray]:
        """Run ``name`` (model or vmodel) and return its outputs as name -> numpy array.

        ``inputs``: a numpy array, list or pandas DataFrame (for a model with one input, or a
        DataFrame whose columns are the model's inputs), a dict of input name -> array-like, or a
        whole V2 request (``{"inputs": [{"name", "shape", "datatype", "data"}]}``). Names and
        datatypes left open come from the model's V2 metadata. ``binary`` sends and receives tensors
        with the V2 binary data extension (exact floats, non-UTF-8 bytes).
        """
        if tensors._is_v2_request(inputs):
            body, headers = json.dumps(inputs).encode(), {"content-type": "application/json"}
        else:
            named = tensors.named_inputs(inputs, self._cached_metadata(name))
            body, headers = tensors.encode_request(named, outputs=outputs, binary=binary)
        resp = self._send("POST", f"/v2/models/{_seg(name, 'model name')}/infer", content=body, headers=headers,
                          model_id=name)
        try:
            header, blob = tensors.split_response(resp.content, resp.headers)
            return tensors.decode_outputs(header, blob)
        except (ValueError, KeyError, TypeError) as exc:
            raise ServerError(f"cannot read the inference response of '{name}': {exc}", resp.status_code) from exc

    def infer_json(self, name: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """Send a V2 JSON request as is and return the V2 JSON response as is."""
        if not isinstance(request, Mapping):
            raise InvalidInputError(f"a V2 inference request is a JSON object (a mapping), got {type(request).__name__}")
        return self._call("POST", f"/v2/models/{_seg(name, 'model name')}/infer", json=dict(request), model_id=name)

    def example_request(self, name: str) -> dict[str, Any]:
        """A V2 JSON request shaped from the model's metadata (one row, zeros / "text")."""
        return tensors.example_request(self.metadata(name))

    def server_status(self) -> dict[str, Any]:
        """The instance: capacity, used bytes, models, loads, requests per minute, endpoints."""
        return self._call("GET", "/mesh/v1/status")

    # -- KServe resources ------------------------------------------------------------------------
    def apply(self, yaml_text_or_path: str | Path) -> list[dict[str, Any]]:
        """Apply InferenceService (and related) YAML; one ``{kind, namespace, name, action}`` per object.

        Accepts the YAML text or a path to a file. The text is parsed here first, so a syntax error
        is reported with its line before anything is sent.
        """
        text = _yaml_text(yaml_text_or_path)
        result = self._call("POST", "/mesh/v1/apply", content=text.encode(),
                            headers={"content-type": "application/yaml"})
        if isinstance(result, dict):
            result = result.get("items", result.get("results", []))
        return list(result or [])

    def isvcs(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """InferenceServices the mesh knows, optionally of one namespace."""
        params = {"namespace": namespace} if namespace else None
        result = self._call("GET", "/mesh/v1/inferenceservices", params=params)
        items = result.get("items", []) if isinstance(result, dict) else list(result or [])
        if namespace is None:
            return items
        return [i for i in items if _namespace_of(i) == namespace]

    def isvc(self, namespace: str, name: str) -> dict[str, Any]:
        return self._call("GET", f"/mesh/v1/inferenceservices/{_seg(namespace, 'namespace')}/{_seg(name, 'name')}")

    def delete_isvc(self, namespace: str, name: str) -> None:
        self._call("DELETE", f"/mesh/v1/inferenceservices/{_seg(namespace, 'namespace')}/{_seg(name, 'name')}")


def _has_type(body: Any) -> bool:
    return isinstance(body, dict) and bool(body.get("type"))


def _unique(items: Sequence[Any]) -> list[str]:
    return list(dict.fromkeys(str(i) for i in items))


def _namespace_of(item: Mapping[str, Any]) -> str | None:
    meta = item.get("metadata")
    if isinstance(meta, Mapping) and "namespace" in meta:
        return str(meta["namespace"])
    ns = item.get("namespace")
    return None if ns is None else str(ns)


def _yaml_text(source: str | Path) -> str:
    import yaml

    if isinstance(source, Path) or ("\n" not in source and source.endswith((".yaml", ".yml"))):
        path = Path(source)
        try:
            text = path.read_text()
        except OSError as exc:
            raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    else:
        text = source
    if not text.strip():
        raise InvalidInputError("the YAML is empty")
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidInputError(f"invalid YAML{line}: {problem}") from exc
    if not docs:
        raise InvalidInputError("the YAML holds no document")
    for i, doc in enumerate(docs, 1):
        if not isinstance(doc, dict) or "kind" not in doc:
            raise InvalidInputError(f"YAML document {i} is not a Kubernetes object (no 'kind')")
    return text


def with_sha256(key: str, sha256: str) -> str:
    """The modelKey JSON ``key`` (may be empty) with ``"sha256"`` added."""
    try:
        doc = json.loads(key) if key.strip() else {}
    except ValueError as exc:
        raise InvalidInputError(f"the storage key must be a JSON object to add a sha256 pin to it: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidInputError("the storage key must be a JSON object to add a sha256 pin to it")
    return json.dumps({**doc, "sha256": sha256.strip()})


def connect(url: str = DEFAULT_URL, token: str | None = None, *, timeout: float = 120.0,
            ca_cert: str | os.PathLike[str] | None = None, client_cert: str | os.PathLike[str] | None = None,
            client_key: str | os.PathLike[str] | None = None) -> MeshClient:
    """A client for the mesh at ``url`` (its REST address); see :class:`MeshClient` for the options."""
    return MeshClient(url, timeout=timeout, token=token, ca_cert=ca_cert, client_cert=client_cert,
                      client_key=client_key)


__all__ = ["DEFAULT_URL", "MeshClient", "MeshClientError", "ModelNotFoundError", "connect"]
