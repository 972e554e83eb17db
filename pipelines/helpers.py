"""The logic of the mesh components, as plain functions that KFP copies into each component.

A lightweight KFP component runs only the source of its function (plus ``additional_funcs``) in a
fresh interpreter, so everything here is written to be copied: each function imports what it needs
inside its body, uses the standard library only (``urllib``, ``json``, ``math``, ``time``), calls
the other helpers by their global names, and raises built-in exceptions with a message a pipeline
author can act on:

- ``ValueError``: a bad component input (named in the message), found before any network call;
- ``RuntimeError``: the mesh refused or failed (its own ``error`` message, the HTTP status), the
  mesh could not be reached, or a smoke test found outputs that do not match;
- ``TimeoutError``: a model or InferenceService did not become Loaded in time.

Being plain functions, they are also unit-tested directly (tests/unit/pipelines).
"""

from typing import Any


def validate_mesh_url(mesh_url: str) -> str:
    """Return ``mesh_url`` without a trailing slash; it must be an http(s) URL with a host."""
    import urllib.parse

    url = (mesh_url or "").strip().rstrip("/")
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"mesh_url must be an http:// or https:// URL of the mesh's REST port, got '{mesh_url}'")
    return url


def validate_name(value: str, what: str) -> str:
    """A model id or model name as used in REST paths: not empty, no '/', no surrounding spaces."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must not be empty")
    if value != value.strip() or "/" in value:
        raise ValueError(f"{what} must not contain '/' or surrounding spaces, got '{value}'")
    return value


def validate_timeout(timeout_s: float) -> float:
    """A positive, finite number of seconds."""
    import math

    try:
        value = float(timeout_s)
    except (TypeError, ValueError):
        raise ValueError(f"timeout_s must be a number of seconds, got {timeout_s!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    return value


def validate_tolerance(tolerance: float) -> float:
    """An absolute tolerance: a finite number >= 0."""
    import math

    try:
        value = float(tolerance)
    except (TypeError, ValueError):
        raise ValueError(f"tolerance must be a number, got {tolerance!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    return value


def storage_key_json(storage_key: str) -> str:
    """The ModelMesh ``modelKey`` for a storage-config entry: ``{"storage_key": KEY}``.

    An empty key gives an empty modelKey (the mesh then reads a bare path as local, and an
    ``s3://`` URI with its ``default`` entry); a key that already is a JSON object is passed on.
    """
    import json

    key = (storage_key or "").strip()
    if not key:
        return ""
    if key.startswith("{"):
        try:
            parsed = json.loads(key)
        except ValueError as exc:
            raise ValueError(f"storage_key looks like JSON but does not parse: {exc}") from None
        if not isinstance(parsed, dict):
            raise ValueError("storage_key given as JSON must be an object")
        return key
    return json.dumps({"storage_key": key})


def parse_json_object(text: str, what: str, required_list: str) -> dict:
    """Parse ``text`` as a JSON object holding a non-empty list under ``required_list``."""
    import json

    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object with an '{required_list}' list")
    items = value.get(required_list)
    if not isinstance(items, list) or not items:
        raise ValueError(f"{what} must hold a non-empty '{required_list}' list")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or "data" not in item:
            raise ValueError(f"{what}: {required_list}[{i}] must be an object with a 'name' and 'data'")
    return value


def mesh_call(mesh_url: str, method: str, path: str, body: Any = None, content_type: str = "application/json",
              timeout: float = 30.0, what: str = "") -> Any:
    """One REST call to the mesh; returns the decoded JSON body of a 2xx answer.

    A non-2xx answer raises ``RuntimeError`` with the mesh's own ``error`` message and the HTTP
    status; a mesh that cannot be reached raises ``RuntimeError`` saying so. ``what`` says what was
    being done ("register model 'iris'") and starts the message.

    Credentials come from the step's environment (mount them from a Kubernetes Secret, never pass
    them as pipeline parameters, which are stored in the run): ``KSERVE_MESH_TOKEN`` (bearer
    token), ``KSERVE_MESH_CA_CERT`` (PEM bundle an https:// mesh is checked against),
    ``KSERVE_MESH_CLIENT_CERT`` / ``KSERVE_MESH_CLIENT_KEY`` (client certificate for mTLS).
    """
    import json
    import os
    import socket
    import ssl
    import urllib.error
    import urllib.request

    doing = what or f"{method} {path}"
    if body is None:
        data = None
    elif isinstance(body, (bytes, str)):
        data = body.encode() if isinstance(body, str) else body
    else:
        data = json.dumps(body).encode()
    headers = {"accept": "application/json"}
    if data is not None:
        headers["content-type"] = content_type
    token = os.environ.get("KSERVE_MESH_TOKEN", "").strip()
    if token:
        headers["authorization"] = f"Bearer {token}"
    context = None
    if mesh_url.startswith("https://"):
        ca_cert = os.environ.get("KSERVE_MESH_CA_CERT", "")
        client_cert = os.environ.get("KSERVE_MESH_CLIENT_CERT", "")
        try:
            context = ssl.create_default_context(cafile=ca_cert or None)
            if client_cert:
                context.load_cert_chain(client_cert, os.environ.get("KSERVE_MESH_CLIENT_KEY") or None)
        except (OSError, ssl.SSLError) as err:
            raise ValueError(f"{doing}: cannot load the TLS files named by KSERVE_MESH_CA_CERT / "
                             f"KSERVE_MESH_CLIENT_CERT: {err}") from None
    request = urllib.request.Request(mesh_url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        message = answer.get("error") if isinstance(answer, dict) else None
        message = message or raw.decode(errors="replace").strip() or err.reason
        raise RuntimeError(f"{doing} failed: {message} (HTTP {err.code} from {mesh_url})") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, TimeoutError) as err:
        reason = getattr(err, "reason", None) or err
        raise RuntimeError(f"{doing} failed: cannot reach the mesh at {mesh_url}: {reason}") from None
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise RuntimeError(f"{doing} failed: the mesh at {mesh_url} answered with non-JSON: {raw[:200]!r}") from None


def wait_model_loaded(mesh_url: str, model_id: str, timeout_s: float, poll_s: float = 0.2) -> dict:
    """Poll the model's status until it is LOADED; ask for a load while it is NOT_LOADED.

    Raises ``RuntimeError`` with the mesh's load errors on LOADING_FAILED (or if the model is
    gone), ``TimeoutError`` with the last state after ``timeout_s``.
    """
    import time

    deadline = time.monotonic() + timeout_s
    status: dict = {}
    while True:
        remaining = deadline - time.monotonic()
        status = mesh_call(mesh_url, "GET", f"/mesh/v1/models/{model_id}", timeout=max(1.0, min(30.0, remaining)),
                           what=f"get the status of model '{model_id}'") or {}
        state = status.get("status", "UNKNOWN")
        if state == "LOADED":
            return status
        if state == "LOADING_FAILED":
            errors = "; ".join(status.get("errors") or []) or "no error message recorded"
            raise RuntimeError(f"model '{model_id}' failed to load: {errors}")
        if state == "NOT_LOADED":
            mesh_call(mesh_url, "POST", f"/mesh/v1/models/{model_id}/ensure-loaded", {"sync": False},
                      timeout=max(1.0, min(30.0, remaining)), what=f"load model '{model_id}'")
        if time.monotonic() + poll_s > deadline:
            raise TimeoutError(f"model '{model_id}' was not loaded within {timeout_s:g} s (last state {state})")
        time.sleep(poll_s)


def isvc_identity(isvc_yaml: str) -> tuple:
    """(namespace, name) of the one InferenceService in ``isvc_yaml``; ValueError names what is wrong."""
    import yaml

    try:
        docs = [d for d in yaml.safe_load_all(isvc_yaml or "") if d is not None]
    except yaml.YAMLError as exc:
        raise ValueError(f"isvc_yaml is not valid YAML: {' '.join(str(exc).split())}") from None
    if len(docs) != 1:
        raise ValueError(f"isvc_yaml must hold exactly one InferenceService, found {len(docs)} documents")
    doc = docs[0]
    if not isinstance(doc, dict) or doc.get("kind") != "InferenceService":
        kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"isvc_yaml must be a kind: InferenceService, got {kind!r}")
    api = str(doc.get("apiVersion", ""))
    if not api.startswith("serving.kserve.io/"):
        raise ValueError(f"isvc_yaml apiVersion must be serving.kserve.io/..., got {api!r}")
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("isvc_yaml metadata.name must be set")
    return str(meta.get("namespace") or "default"), name


def applied_namespace(applied: Any, name: str, namespace: str) -> str:
    """The namespace the mesh applied InferenceService ``name`` to, from its apply answer
    (``[{kind, namespace, name, action}]``); ``namespace`` when the answer does not say."""
    items = applied if isinstance(applied, list) else [applied]
    for item in items:
        if not isinstance(item, dict):
            continue
        meta = item.get("metadata") if isinstance(item.get("metadata"), dict) else item
        if item.get("kind") == "InferenceService" and meta.get("name") == name and meta.get("namespace"):
            return str(meta["namespace"])
    return namespace


def wait_isvc_loaded(mesh_url: str, namespace: str, name: str, timeout_s: float, poll_s: float = 0.2) -> dict:
    """Poll an InferenceService until ``status.modelStatus.states.activeModelState`` is Loaded.

    FailedToLoad raises ``RuntimeError`` with ``lastFailureInfo``; ``timeout_s`` raises TimeoutError.
    """
    import time

    deadline = time.monotonic() + timeout_s
    where = f"InferenceService {namespace}/{name}"
    while True:
        remaining = deadline - time.monotonic()
        obj = mesh_call(mesh_url, "GET", f"/mesh/v1/inferenceservices/{namespace}/{name}",
                        timeout=max(1.0, min(30.0, remaining)), what=f"get {where}") or {}
        model_status = (obj.get("status") or {}).get("modelStatus") or {}
        state = (model_status.get("states") or {}).get("activeModelState") or "Pending"
        if state == "Loaded":
            return obj
        if state == "FailedToLoad":
            failure = model_status.get("lastFailureInfo") or {}
            reason = failure.get("reason") or "ModelLoadFailed"
            raise RuntimeError(f"{where} failed to load ({reason}): {failure.get('message') or 'no message'}")
        if time.monotonic() + poll_s > deadline:
            raise TimeoutError(f"{where} was not Loaded within {timeout_s:g} s (activeModelState {state})")
        time.sleep(poll_s)


def isvc_url(obj: dict, mesh_url: str, name: str) -> str:
    """The REST URL of a Loaded InferenceService: predictor restUrl, else status.url, else the mesh."""
    status = obj.get("status") or {}
    predictor = (status.get("components") or {}).get("predictor") or {}
    return predictor.get("restUrl") or status.get("url") or f"{mesh_url}/v2/models/{name}"


def flatten(data: Any) -> list:
    """V2 tensor data as a flat list (REST JSON may nest rows)."""
    if isinstance(data, (list, tuple)):
        out: list = []
        for item in data:
            out.extend(flatten(item))
        return out
    return [data]


def compare_outputs(response: dict, expected: dict, tolerance: float) -> dict:
    """Compare a V2 inference response with the expected outputs.

    ``expected`` is V2-shaped: ``{"outputs": [{"name", "data", "shape"?, "datatype"?}, ...]}``; only
    the outputs it names are checked. Numbers match when ``|got - want| <= tolerance``; strings and
    booleans must be equal. ``shape``/``datatype`` are checked when given. Returns
    ``{"outputs_checked": n, "max_abs_error": e}``; raises ``RuntimeError`` naming every output that
    does not match and the first differing values.
    """
    import math

    tol = validate_tolerance(tolerance)
    got_by_name = {o.get("name"): o for o in (response.get("outputs") or []) if isinstance(o, dict)}
    problems: list = []
    max_err = 0.0
    for want in expected["outputs"]:
        name = want["name"]
        got = got_by_name.get(name)
        if got is None:
            have = ", ".join(sorted(str(n) for n in got_by_name)) or "none"
            problems.append(f"output '{name}' is missing (the model returned: {have})")
            continue
        if "shape" in want and list(want["shape"]) != list(got.get("shape") or []):
            problems.append(f"output '{name}': shape {got.get('shape')} != expected {want['shape']}")
        if "datatype" in want and want["datatype"] != got.get("datatype"):
            problems.append(f"output '{name}': datatype {got.get('datatype')} != expected {want['datatype']}")
        got_data, want_data = flatten(got.get("data")), flatten(want["data"])
        if len(got_data) != len(want_data):
            problems.append(f"output '{name}': {len(got_data)} values != expected {len(want_data)}")
            continue
        diffs: list = []
        for i, (g, w) in enumerate(zip(got_data, want_data)):
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (g, w))
            if numeric:
                if math.isnan(g) and math.isnan(w):
                    continue
                err = abs(float(g) - float(w))
                if not math.isnan(err):
                    max_err = max(max_err, err)
                if math.isnan(err) or err > tol:
                    diffs.append(f"[{i}] got {g!r}, expected {w!r} (|diff| {err:g} > tolerance {tol:g})")
            elif g != w or isinstance(g, bool) != isinstance(w, bool):
                diffs.append(f"[{i}] got {g!r}, expected {w!r}")
        if diffs:
            shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
            problems.append(f"output '{name}': {len(diffs)} of {len(want_data)} values differ: {shown}")
    if problems:
        raise RuntimeError("smoke test failed: " + " | ".join(problems))
    return {"outputs_checked": len(expected["outputs"]), "max_abs_error": max_err}


MESH_HELPERS = [validate_mesh_url, validate_name, validate_timeout, mesh_call]
REGISTER_HELPERS = [*MESH_HELPERS, storage_key_json, wait_model_loaded]
DEPLOY_HELPERS = [*MESH_HELPERS, isvc_identity, applied_namespace, wait_isvc_loaded, isvc_url]
SMOKE_HELPERS = [*MESH_HELPERS, validate_tolerance, parse_json_object, flatten, compare_outputs]
