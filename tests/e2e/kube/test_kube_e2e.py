"""End to end without Kubernetes: ``kserve-mesh apply -f`` on a real mesh process -> ``get isvc``
shows Loaded with URLs -> tritonclient predicts through the restUrl -> a changed storageUri moves
the InferenceService with zero failed requests under continuous traffic -> ``delete isvc`` removes
its vmodel and models. Also: the REST errors, the CLI's one-line failures, and the gRPC adapter the
controller uses (Reconciler over ``mmesh.ModelMesh``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mesh_process import MeshProcess

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[3]
LOCAL_EXAMPLE = REPO / "examples" / "isvc" / "local-sklearn.yaml"

ISVC = """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {name}
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
spec:
  predictor:
    model:
      modelFormat:
        name: sklearn
      storageUri: {uri}
"""


def cli(mesh: MeshProcess, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "kserve_mesh.cli", *args, "--url", mesh.rest],
                          capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
    return done


def wait_isvc(mesh: MeshProcess, name: str, active: str, timeout: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = json.loads(cli(mesh, "get", "isvc", name, "-o", "json").stdout)
        states = obj.get("status", {}).get("modelStatus", {}).get("states", {})
        if states.get("activeModelState") == active and not states.get("targetModelState"):
            return obj
        time.sleep(0.2)
    raise AssertionError(f"isvc {name} never became {active}: {obj.get('status')}")


def triton_infer(client: Any, name: str, request: dict[str, Any]) -> tuple[str, list[Any]]:
    import tritonclient.http as th

    t = request["inputs"][0]
    arr = np.array(t["data"], dtype=np.float64).reshape(t["shape"])
    inp = th.InferInput(t["name"], list(arr.shape), t["datatype"])
    inp.set_data_from_numpy(arr, binary_data=False)
    result = client.infer(name, [inp])
    resp = result.get_response()
    return resp["model_name"], result.as_numpy(resp["outputs"][0]["name"]).ravel().tolist()


def test_apply_get_infer_transition_delete(kube_mesh: MeshProcess, kube_models: tuple[Path, dict[str, Any]],
                                           tmp_path: Path) -> None:
    import tritonclient.http as th

    models, inputs = kube_models
    case = inputs["sklearn-iris"]
    v1 = models / "sklearn-iris"
    name = "local-sklearn"  # examples/isvc/local-sklearn.yaml: storageUri examples/models/sklearn-iris

    out = cli(kube_mesh, "apply", "-f", str(LOCAL_EXAMPLE)).stdout
    assert out.strip() == f"inferenceservice.serving.kserve.io/{name} created"
    obj = wait_isvc(kube_mesh, name, "Loaded")
    rest_url = obj["status"]["components"]["predictor"]["restUrl"]
    assert rest_url == kube_mesh.rest
    assert obj["status"]["url"] == f"grpc://{kube_mesh.grpc}"
    table = cli(kube_mesh, "get", "isvc").stdout.splitlines()
    assert table[0].split() == ["NAME", "URL", "READY", "ACTIVE-MODEL", "TARGET-MODEL", "TRANSITION", "COPIES", "AGE"]
    row = table[1].split()
    assert row[:4] == [name, f"grpc://{kube_mesh.grpc}", "True", "Loaded"] and row[4] == "UpToDate"

    client = th.InferenceServerClient(rest_url.removeprefix("http://"))
    try:
        model_v1, got = triton_infer(client, name, case["request"])
    finally:
        client.close()
    assert model_v1.startswith(f"{name}__isvc-")
    assert got == case["expected"]["outputs"][0]["data"]

    # continuous traffic while the storageUri changes
    errors: list[str] = []
    served: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        c = th.InferenceServerClient(rest_url.removeprefix("http://"))
        try:
            while not stop.is_set():
                try:
                    model, data = triton_infer(c, name, case["request"])
                    served.append(model)
                    if data != case["expected"]["outputs"][0]["data"]:
                        errors.append(f"wrong answer from {model}: {data}")
                except Exception as exc:  # noqa: BLE001 - every failure counts
                    errors.append(repr(exc))
        finally:
            c.close()

    workers = [threading.Thread(target=traffic) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        time.sleep(0.5)
        v2 = models / "sklearn-iris-v2"  # inside the folder the mesh allows local paths from
        shutil.copytree(v1, v2)
        manifests = tmp_path / "manifests"
        manifests.mkdir()
        (manifests / "isvc.yaml").write_text(ISVC.format(name=name, uri=v2))
        assert cli(kube_mesh, "apply", "-f", str(manifests)).stdout.strip() == (
            f"inferenceservice.serving.kserve.io/{name} configured")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (not served or served[-1] == model_v1):
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        for w in workers:
            w.join(30)
    assert errors == []
    assert served[0] == model_v1 and served[-1] != model_v1 and served[-1].startswith(f"{name}__isvc-")
    model_v2 = served[-1]
    obj = wait_isvc(kube_mesh, name, "Loaded")
    assert obj["metadata"]["generation"] == 2 and obj["status"]["modelStatus"]["transitionStatus"] == "UpToDate"
    code, body = kube_mesh.call("GET", "/mesh/v1/models")
    assert [m["modelId"] for m in body["models"]] == [model_v2]  # the old model was auto-deleted

    out = cli(kube_mesh, "delete", "isvc", name).stdout
    assert out.strip() == f'inferenceservice.serving.kserve.io "{name}" deleted'
    assert kube_mesh.call("GET", f"/mesh/v1/vmodels/{name}")[0] == 404
    assert kube_mesh.call("GET", "/mesh/v1/models")[1]["models"] == []
    done = cli(kube_mesh, "get", "isvc", name, check=False)
    assert done.returncode == 1 and done.stderr.strip() == (
        f"error: InferenceService '{name}' not found in namespace 'default'")


def test_rest_errors_name_what_was_wrong(kube_mesh: MeshProcess) -> None:
    def post(text: str, ctype: str = "application/yaml") -> tuple[int, Any]:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(kube_mesh.rest + "/mesh/v1/apply", data=text.encode(), method="POST",
                                     headers={"content-type": ctype})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    code, body = post("a: [1")
    assert code == 400 and body["error"].startswith("invalid YAML at line 1")
    code, body = post('{"kind": ', "application/json")
    assert code == 400 and body["error"].startswith("invalid JSON")
    code, body = post("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")
    assert code == 400 and body["error"].startswith("kind: unsupported kind 'Pod'")
    bad = ISVC.format(name="bad", uri="s3://b/m").replace("storageUri", "storageURI")
    code, body = post(bad)
    assert code == 400 and body["error"].startswith("spec.predictor.model.storageURI: unknown field")
    code, body = post(json.dumps({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                                  "metadata": {"name": "j", "annotations": {
                                      "serving.kserve.io/deploymentMode": "ModelMesh"}},
                                  "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}}}}}),
                      "application/json")
    assert code == 400 and "exactly one of storageUri or storage.path" in body["error"]
    code, body = kube_mesh.call("GET", "/mesh/v1/isvc/default/none")
    assert code == 404 and body["error"] == "InferenceService 'none' not found in namespace 'default'", body
    assert kube_mesh.call("DELETE", "/mesh/v1/predictors/default/none")[0] == 404
    code, body = kube_mesh.call("GET", "/mesh/v1/clusterservingruntimes/kserve-mesh-python")
    assert code == 200 and body["metadata"]["name"] == "kserve-mesh-python"
    # the management routes are not shadowed by the resource routes
    assert kube_mesh.call("GET", "/mesh/v1/models")[0] == 200
    assert kube_mesh.call("GET", "/mesh/v1/status")[0] == 200


def test_cli_failures_are_one_line(kube_mesh: MeshProcess, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(ISVC.format(name="bad", uri="ftp://x/y"))
    done = cli(kube_mesh, "apply", "-f", str(bad), check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == ("error: spec.predictor.model.storageUri: unsupported storage scheme 'ftp://' "
                                   "(supported: s3://, gs://, pvc://, http://, https://, file://) "
                                   "(document 1: InferenceService bad)")
    done = cli(kube_mesh, "apply", "-f", str(tmp_path / "missing.yaml"), check=False)
    assert done.returncode == 1 and "does not exist" in done.stderr and "Traceback" not in done.stderr
    done = cli(kube_mesh, "get", "pods", check=False)
    assert done.returncode == 1 and done.stderr.startswith("error: unknown resource type 'pods'")
    done = cli(kube_mesh, "delete", "clusterservingruntime", "kserve-mesh-python", check=False)
    assert done.returncode == 1 and "built into the mesh" in done.stderr


def test_servingruntime_predictor_and_grpc_adapter(kube_mesh: MeshProcess, kube_models: tuple[Path, dict[str, Any]],
                                                   tmp_path: Path) -> None:
    """A ServingRuntime and a ModelMesh Predictor through the CLI; then the controller's path: a
    Reconciler over GrpcMesh (mmesh.ModelMesh) against the same mesh process."""
    import asyncio

    models, _ = kube_models
    (tmp_path / "rt.yaml").write_text(
        "apiVersion: serving.kserve.io/v1alpha1\nkind: ServingRuntime\nmetadata: {name: strings}\n"
        "spec:\n  multiModel: true\n  supportedModelFormats: [{name: string, autoSelect: true, priority: 5}]\n"
        "  containers: [{name: runtime, image: example/runtime:1}]\n")
    (tmp_path / "pred.json").write_text(json.dumps({
        "apiVersion": "serving.kserve.io/v1alpha1", "kind": "Predictor", "metadata": {"name": "words"},
        "spec": {"modelType": {"name": "string"}, "path": str(models / "string-1")}}))
    out = cli(kube_mesh, "apply", "-f", str(tmp_path)).stdout.splitlines()
    assert out == ["predictor.serving.kserve.io/words created", "servingruntime.serving.kserve.io/strings created"]
    rts = cli(kube_mesh, "get", "servingruntimes").stdout.splitlines()
    assert rts[0].split() == ["NAME", "DISABLED", "MODELTYPE", "CONTAINERS", "AGE"]
    assert rts[1].split()[:3] == ["strings", "string", "runtime"]
    deadline = time.monotonic() + 60
    row: list[str] = []
    while time.monotonic() < deadline:
        row = cli(kube_mesh, "get", "predictors").stdout.splitlines()[1].split()
        if row[3] == "Loaded":
            break
        time.sleep(0.2)
    assert row[:5] == ["words", "string", "true", "Loaded", "UpToDate"]
    pred = json.loads(cli(kube_mesh, "get", "predictor", "words", "-o", "json").stdout)
    assert pred["status"]["grpcEndpoint"] == f"grpc://{kube_mesh.grpc}"

    async def controller_path() -> None:
        from kserve_mesh.core.clock import SystemClock
        from kserve_mesh.core.errors import Unavailable
        from kserve_mesh.kube.controller.mesh_client import GrpcMesh
        from kserve_mesh.kube.core.runtimes import BUILTIN_RUNTIMES
        from kserve_mesh.kube.core.status import ServiceEndpoints
        from kserve_mesh.kube.reconcile import Reconciler

        mesh = GrpcMesh(kube_mesh.grpc)
        reconciler = Reconciler(mesh, ServiceEndpoints("modelmesh-serving.ns:8033", "http://modelmesh-serving.ns:8008"),
                                SystemClock())
        doc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
               "metadata": {"name": "via-grpc", "namespace": "ns", "generation": 1,
                            "annotations": {"serving.kserve.io/deploymentMode": "ModelMesh"}},
               "spec": {"predictor": {"model": {"modelFormat": {"name": "string"},
                                                "storageUri": str(models / "string-1")}}}}
        try:
            status: dict[str, Any] | None = None
            for _ in range(300):
                status = await reconciler.reconcile_document(doc, BUILTIN_RUNTIMES, previous=status)
                assert status is not None
                if status["modelStatus"]["states"]["activeModelState"] == "Loaded":
                    break
                await asyncio.sleep(0.1)
            assert status is not None and status["url"] == "grpc://modelmesh-serving.ns:8033"
            assert status["modelStatus"]["states"]["activeModelState"] == "Loaded"
            vm = await mesh.vmodel_status("via-grpc", "isvc")
            assert vm.active.startswith("via-grpc__isvc-") and vm.owner == "isvc"
            # the Predictor "words" belongs to another source (ksp): an isvc of that name is refused
            clash = json.loads(json.dumps(doc))
            clash["metadata"]["name"] = "words"
            status = await reconciler.reconcile_document(clash, BUILTIN_RUNTIMES)
            assert status is not None and status["modelStatus"]["transitionStatus"] == "InvalidSpec"
            assert "different source" in status["modelStatus"]["lastFailureInfo"]["message"]
            await reconciler.remove("InferenceService", "via-grpc")
            assert (await mesh.vmodel_status("via-grpc")).state.name == "NOT_FOUND"
        finally:
            await mesh.close()
        down = GrpcMesh("127.0.0.1:1", deadline_s=2.0)
        try:
            with pytest.raises(Unavailable, match="unavailable"):
                await down.vmodel_status("x")
        finally:
            await down.close()

    asyncio.run(controller_path())
    cli(kube_mesh, "delete", "predictor", "words")
    cli(kube_mesh, "delete", "servingruntime", "strings")
    assert cli(kube_mesh, "get", "predictors", check=False).stderr.strip() == "No resources found in default namespace."
