"""One controller reconcile (kube/controller/model_reconcile.py) on a fake mesh: the runtime is known even when
the mesh is down, status patches drop vanished keys, Events only for new failures, refreshes only
observe, ignored and invalid resources."""

from __future__ import annotations

from typing import Any

from kserve_mesh.core.clock import ManualClock
from kserve_mesh.core.errors import Unavailable
from kserve_mesh.core.records import ModelInfo, ModelState, VModelState
from kserve_mesh.kube.controller.model_reconcile import ModelReconcile, merge_patch
from kserve_mesh.kube.core.parse import parse
from kserve_mesh.kube.core.resources import ServingRuntime
from kserve_mesh.kube.core.status import ServiceEndpoints
from kserve_mesh.kube.core.views import CopyInfo, ModelStatusInfo, VModelStatusInfo

RUNTIME = {
    "apiVersion": "serving.kserve.io/v1alpha1", "kind": "ClusterServingRuntime",
    "metadata": {"name": "kserve-mesh-python"},
    "spec": {"supportedModelFormats": [{"name": "sklearn", "version": "1", "autoSelect": True}],
             "multiModel": True, "protocolVersions": ["grpc-v2"],
             "containers": [{"name": "rt", "image": "kserve-mesh:latest"}]},
}


def runtimes() -> list[ServingRuntime]:
    rt = parse(RUNTIME)
    assert isinstance(rt, ServingRuntime)
    return [rt]


def isvc(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "iris", "namespace": "models", "generation": 1,
                     "annotations": {"serving.kserve.io/deploymentMode": "ModelMesh"}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://b/iris"}}},
    }
    doc.update(extra)
    return doc


class FakeMesh:
    """MeshManagement with one vmodel whose model state the test sets."""

    def __init__(self) -> None:
        self.state = ModelState.LOADING
        self.errors: tuple[str, ...] = ()
        self.vmodels: dict[str, tuple[str, str]] = {}
        self.calls: list[str] = []
        self.down = False

    def _check(self, call: str) -> None:
        self.calls.append(call)
        if self.down:
            raise Unavailable("mesh at x:8033 unavailable: connection refused")

    def _model(self, model_id: str) -> ModelStatusInfo:
        copies = (CopyInfo("pod-1", self.state, 5),)
        return ModelStatusInfo(model_id, self.state, self.errors, copies)

    async def set_vmodel(self, vmodel_id: str, owner: str, target: str, info: ModelInfo | None, *,
                         auto_delete: bool = True, load_now: bool = False) -> VModelStatusInfo:
        self._check("set_vmodel")
        self.vmodels[vmodel_id] = (owner, target)
        return await self.vmodel_status(vmodel_id, owner)

    async def vmodel_status(self, vmodel_id: str, owner: str = "") -> VModelStatusInfo:
        self._check("vmodel_status")
        if vmodel_id not in self.vmodels:
            return VModelStatusInfo(vmodel_id, VModelState.NOT_FOUND)
        own, target = self.vmodels[vmodel_id]
        model = self._model(target)
        return VModelStatusInfo(vmodel_id, VModelState.DEFINED, target, target, own, model, model)

    async def delete_vmodel(self, vmodel_id: str, owner: str) -> None:
        self._check("delete_vmodel")
        self.vmodels.pop(vmodel_id, None)

    async def register_model(self, model_id: str, info: ModelInfo, *, load_now: bool = False) -> ModelStatusInfo:
        raise AssertionError("not used")

    async def model_status(self, model_id: str) -> ModelStatusInfo:
        return self._model(model_id)

    async def unregister(self, model_id: str) -> None:
        raise AssertionError("not used")


def reconciler() -> ModelReconcile:
    return ModelReconcile(ManualClock(), lambda ns: ServiceEndpoints(f"modelmesh-serving.{ns}:8033",
                                                                     f"http://modelmesh-serving.{ns}:8008"))


async def test_first_reconcile_registers_and_reports_loading_then_loaded() -> None:
    mesh = FakeMesh()
    rec = reconciler()
    first = await rec.reconcile(mesh, isvc(), runtimes())
    assert mesh.vmodels["iris"][0] == "isvc" and mesh.vmodels["iris"][1].startswith("iris__isvc-")
    assert first.runtime == "kserve-mesh-python"
    assert first.status["modelStatus"]["states"]["activeModelState"] == "Loading"
    assert first.patch == first.status  # nothing written before
    assert not first.settled and first.warning is None

    mesh.state = ModelState.LOADED
    doc = isvc(status=first.status)
    second = await rec.reconcile(mesh, doc, runtimes(), observe=True)
    assert "set_vmodel" not in mesh.calls[-1:]  # a refresh only reads
    assert second.settled
    assert second.patch["modelStatus"]["states"] == {"activeModelState": "Loaded"}
    assert second.status["url"] == "grpc://modelmesh-serving.models:8033"
    # Nothing changed: an empty patch (no write, no churn).
    third = await rec.reconcile(mesh, isvc(status=second.status), runtimes(), observe=True)
    assert third.patch == {}


async def test_refresh_re_applies_when_the_mesh_lost_the_vmodel() -> None:
    mesh = FakeMesh()
    result = await reconciler().reconcile(mesh, isvc(), runtimes(), observe=True)
    assert "set_vmodel" in mesh.calls and "iris" in mesh.vmodels
    assert result.status["modelStatus"]["states"]["activeModelState"] == "Loading"


async def test_a_new_failure_gives_one_warning_and_recovery_drops_it_from_status() -> None:
    mesh = FakeMesh()
    rec = reconciler()
    mesh.state, mesh.errors = ModelState.LOADING_FAILED, ("model file not found",)
    failed = await rec.reconcile(mesh, isvc(), runtimes())
    assert failed.warning == ("ModelLoadFailed", "model file not found")
    assert failed.status["modelStatus"]["lastFailureInfo"]["location"] == "pod-1"
    again = await rec.reconcile(mesh, isvc(status=failed.status), runtimes(), observe=True)
    assert again.warning is None  # the same failure: no second Event
    mesh.state, mesh.errors = ModelState.LOADED, ()
    healed = await rec.reconcile(mesh, isvc(status=again.status), runtimes(), observe=True)
    assert healed.patch["modelStatus"]["lastFailureInfo"] is None  # merge patch removes it
    assert "lastFailureInfo" not in healed.status["modelStatus"]


async def test_mesh_down_still_names_the_runtime_and_reports_runtime_unhealthy() -> None:
    mesh = FakeMesh()
    mesh.down = True
    result = await reconciler().reconcile(mesh, isvc(), runtimes())
    assert result.runtime == "kserve-mesh-python"  # its Deployment must come up before the mesh can answer
    info = result.status["modelStatus"]["lastFailureInfo"]
    assert info["reason"] == "RuntimeUnhealthy" and "unavailable" in info["message"]
    assert result.warning is not None and result.warning[0] == "RuntimeUnhealthy"


async def test_no_runtime_and_invalid_spec_are_status_not_errors() -> None:
    mesh = FakeMesh()
    doc = isvc()
    doc["spec"]["predictor"]["model"]["modelFormat"]["name"] = "tensorflow"
    result = await reconciler().reconcile(mesh, doc, runtimes())
    assert result.runtime is None
    assert result.status["modelStatus"]["lastFailureInfo"]["reason"] == "NoSupportingRuntime"
    assert "iris" not in mesh.vmodels

    bad = isvc()
    bad["spec"]["predictor"]["model"]["storageUri"] = 42
    invalid = await reconciler().reconcile(mesh, bad, runtimes())
    assert invalid.runtime is None
    assert invalid.status["modelStatus"]["transitionStatus"] == "InvalidSpec"
    assert "storageUri" in invalid.status["modelStatus"]["lastFailureInfo"]["message"]


async def test_the_pvc_a_model_is_read_from_is_named_for_the_runtime_pods() -> None:
    mesh = FakeMesh()
    assert (await reconciler().reconcile(mesh, isvc(), runtimes())).claim is None  # s3
    doc = isvc()
    doc["spec"]["predictor"]["model"]["storageUri"] = "pvc://models-pvc/iris/model.joblib"
    assert (await reconciler().reconcile(mesh, doc, runtimes())).claim == "models-pvc"
    doc = isvc()
    del doc["spec"]["predictor"]["model"]["storageUri"]
    doc["spec"]["predictor"]["model"]["storage"] = {"path": "iris", "parameters": {"type": "pvc", "name": "p2"}}
    assert (await reconciler().reconcile(mesh, doc, runtimes())).claim == "p2"
    mesh.down = True  # known even while the mesh cannot be reached: the pods must mount it first
    assert (await reconciler().reconcile(mesh, doc, runtimes())).claim == "p2"


async def test_remove_deletes_the_vmodel_of_the_right_owner() -> None:
    mesh = FakeMesh()
    rec = reconciler()
    await rec.reconcile(mesh, isvc(), runtimes())
    await rec.remove(mesh, "InferenceService", "iris")
    assert "iris" not in mesh.vmodels
    await rec.remove(mesh, "InferenceService", "iris")  # already gone: fine


def test_merge_patch_sets_vanished_keys_to_null_and_keeps_equal_ones_out() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1], "gone": {"x": 1}}
    new = {"a": 1, "b": {"c": 2, "d": 4}, "e": [1, 2], "f": "new"}
    assert merge_patch(old, new) == {"b": {"d": 4}, "e": [1, 2], "f": "new", "gone": None}
    assert merge_patch(new, new) == {}
