"""Kubeflow Pipelines v2 lightweight components that put a model on a kserve-mesh and check it.

- ``register_model``: a storage URI -> a registered, Loaded model; outputs its id and V2 endpoint.
- ``deploy_inference_service``: InferenceService YAML -> applied through the mesh, Loaded; outputs
  its URL (uses the mesh's ``POST /mesh/v1/apply`` and ``GET /mesh/v1/inferenceservices/{ns}/{name}``).
- ``smoke_test``: one V2 inference, outputs compared with expected values within a tolerance,
  latency logged as KFP Metrics.

They talk to the mesh's REST API with the standard library only, so they run on a plain
``python`` image (``BASE_IMAGE``) with nothing installed but kfp (deploy_inference_service adds
PyYAML to read the YAML). The logic lives in :mod:`.helpers`, copied into each component through
``additional_funcs``. A failing component raises with a message that names the input, the model or
the output at fault, and carries the mesh's own error text.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Output

# The helpers are imported by name so that the functions also run as plain Python (tests call
# ``register_model.python_func``); in a pipeline, KFP copies them in through ``additional_funcs``.
from .helpers import (
    DEPLOY_HELPERS,
    REGISTER_HELPERS,
    SMOKE_HELPERS,
    applied_namespace,
    compare_outputs,
    isvc_identity,
    isvc_url,
    mesh_call,
    parse_json_object,
    storage_key_json,
    validate_mesh_url,
    validate_name,
    validate_timeout,
    validate_tolerance,
    wait_isvc_loaded,
    wait_model_loaded,
)

BASE_IMAGE = "python:3.11-slim"
YAML_PACKAGES = ["PyYAML>=6"]


@dsl.component(base_image=BASE_IMAGE, additional_funcs=REGISTER_HELPERS)
def register_model(
    mesh_url: str,
    model_id: str,
    model_format: str,
    storage_uri: str,
    storage_key: str = "",
    timeout_s: float = 300.0,
) -> NamedTuple("RegisteredModel", [("model_id", str), ("endpoint", str)]):
    """Register ``model_id`` (type ``model_format``, e.g. sklearn) from ``storage_uri`` and wait
    until it is Loaded. ``storage_key`` names the mesh's storage-config entry holding the
    credentials (or is a full ModelMesh modelKey JSON). Outputs the model id and its V2 endpoint
    (``{mesh_url}/v2/models/{model_id}``; POST ``/infer`` under it)."""
    from collections import namedtuple

    url = validate_mesh_url(mesh_url)
    validate_name(model_id, "model_id")
    validate_name(model_format, "model_format")
    if not storage_uri or not storage_uri.strip():
        raise ValueError("storage_uri must not be empty")
    timeout = validate_timeout(timeout_s)
    body = {"modelInfo": {"type": model_format, "path": storage_uri.strip(), "key": storage_key_json(storage_key)},
            "loadNow": True}
    mesh_call(url, "PUT", f"/mesh/v1/models/{model_id}", body, timeout=min(30.0, timeout),
              what=f"register model '{model_id}'")
    wait_model_loaded(url, model_id, timeout)
    print(f"model '{model_id}' is loaded on the mesh at {url}")
    return namedtuple("RegisteredModel", ["model_id", "endpoint"])(model_id, f"{url}/v2/models/{model_id}")


@dsl.component(base_image=BASE_IMAGE, packages_to_install=YAML_PACKAGES, additional_funcs=DEPLOY_HELPERS)
def deploy_inference_service(
    mesh_url: str,
    isvc_yaml: str,
    timeout_s: float = 300.0,
) -> NamedTuple("DeployedService", [("url", str), ("model_name", str)]):
    """Apply one InferenceService (YAML text) through the mesh and wait until its
    ``activeModelState`` is Loaded. Outputs its REST URL (``status.components.predictor.restUrl``,
    else ``status.url``) and the model name to send inferences to (the InferenceService name)."""
    from collections import namedtuple

    url = validate_mesh_url(mesh_url)
    timeout = validate_timeout(timeout_s)
    namespace, name = isvc_identity(isvc_yaml)
    applied = mesh_call(url, "POST", "/mesh/v1/apply", isvc_yaml, content_type="application/yaml",
                        timeout=min(30.0, timeout), what=f"apply InferenceService {namespace}/{name}")
    namespace = applied_namespace(applied, name, namespace)
    obj = wait_isvc_loaded(url, namespace, name, timeout)
    service_url = isvc_url(obj, url, name)
    print(f"InferenceService {namespace}/{name} is Loaded: {service_url}")
    return namedtuple("DeployedService", ["url", "model_name"])(service_url, name)


@dsl.component(base_image=BASE_IMAGE, additional_funcs=SMOKE_HELPERS)
def smoke_test(
    mesh_url: str,
    model_name: str,
    request_json: str,
    expected_json: str,
    metrics: Output[Metrics],
    tolerance: float = 1e-6,
    timeout_s: float = 60.0,
):
    """Send ``request_json`` (a V2 inference request) to ``model_name`` and compare the answer with
    ``expected_json`` (``{"outputs": [{"name", "data", "shape"?, "datatype"?}]}``; numbers within
    ``tolerance``, absolute). Logs ``latency_ms``, ``outputs_checked`` and ``max_abs_error``."""
    import time

    url = validate_mesh_url(mesh_url)
    validate_name(model_name, "model_name")
    timeout = validate_timeout(timeout_s)
    validate_tolerance(tolerance)
    request = parse_json_object(request_json, "request_json", "inputs")
    expected = parse_json_object(expected_json, "expected_json", "outputs")
    start = time.perf_counter()
    response = mesh_call(url, "POST", f"/v2/models/{model_name}/infer", request, timeout=timeout,
                         what=f"inference on model '{model_name}'")
    latency_ms = (time.perf_counter() - start) * 1000.0
    metrics.log_metric("latency_ms", round(latency_ms, 3))
    if not isinstance(response, dict):
        raise RuntimeError(f"inference on model '{model_name}' answered {type(response).__name__}, not a V2 response")
    result = compare_outputs(response, expected, tolerance)
    metrics.log_metric("outputs_checked", result["outputs_checked"])
    metrics.log_metric("max_abs_error", result["max_abs_error"])
    print(f"smoke test of '{model_name}' passed: {result['outputs_checked']} output(s) match, "
          f"max |diff| {result['max_abs_error']:g}, latency {latency_ms:.1f} ms")
