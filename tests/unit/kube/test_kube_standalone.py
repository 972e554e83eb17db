"""The Reconciler and the standalone KubeService on a real in-process Instance (built-in runtime,
MemoryStore, tiny ``string`` models): apply, status, transition, conflicts, runtimes, delete."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kserve_mesh.core.clock import SystemClock
from kserve_mesh.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from kserve_mesh.core.ids import InstanceId, ModelId
from kserve_mesh.core.records import ModelState
from kserve_mesh.kube.core.errors import InvalidSpec
from kserve_mesh.kube.core.resources import InferenceService
from kserve_mesh.kube.core.status import ServiceEndpoints
from kserve_mesh.kube.reconcile import Reconciler
from kserve_mesh.kube.standalone.instance_mesh import InstanceMesh
from kserve_mesh.kube.standalone.service import KubeService
from kserve_mesh.mesh.cache_manager import CacheConfig
from kserve_mesh.mesh.instance import Instance
from kserve_mesh.mesh.registry import Registry
from kserve_mesh.protocol import v2
from kserve_mesh.runtime.builtin.runtime import BuiltinRuntime, RuntimeConfig
from kserve_mesh.storage import StoragePolicy, make_fetcher, model_check
from kserve_mesh.store.keys import Keys
from kserve_mesh.store.kube_resources import KubeResourceStore
from kserve_mesh.store.memory import MemoryStore

KEYS = Keys.for_namespace("t")


def string_model(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "model.string").write_text(f"{name}:")
    return folder


def isvc(name: str, uri: str | Path, fmt: str = "string", namespace: str | None = None,
         **model: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "annotations": {"serving.kserve.io/deploymentMode": "ModelMesh"}}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": meta,
            "spec": {"predictor": {"model": {"modelFormat": {"name": fmt}, "storageUri": str(uri), **model}}}}


def runtime_doc(name: str, formats: list[dict[str, Any]], cluster: bool = False, **spec: Any) -> dict[str, Any]:
    kind = "ClusterServingRuntime" if cluster else "ServingRuntime"
    return {"apiVersion": "serving.kserve.io/v1alpha1", "kind": kind,
            "metadata": {"name": name}, "spec": {"supportedModelFormats": formats, "multiModel": True, **spec}}


@pytest.fixture()
async def store() -> AsyncIterator[MemoryStore]:
    mem = MemoryStore()
    mem.start()
    try:
        yield mem
    finally:
        await mem.close()


@pytest.fixture()
async def instance(store: MemoryStore, tmp_path: Path) -> AsyncIterator[Instance]:
    policy = StoragePolicy.of(allow_local_paths=[tmp_path])  # the tests' models, nothing else
    runtime = BuiltinRuntime(RuntimeConfig(capacity_bytes=64 << 20, max_loading_concurrency=2),
                             make_fetcher(None, tmp_path / ".cache", policy))
    inst = Instance(InstanceId("test"), Registry(store, KEYS), runtime, CacheConfig(64 << 20, 2, 30.0, 1 << 20),
                    SystemClock(), check_model=model_check(None, policy))
    await inst.start()
    try:
        yield inst
    finally:
        await inst.stop()
        await runtime.close()


@pytest.fixture()
def service(instance: Instance, store: MemoryStore) -> KubeService:
    svc = KubeService.for_instance(instance, store, KEYS, SystemClock())
    svc.set_endpoints(grpc="127.0.0.1:8033", rest="http://127.0.0.1:8008")
    return svc


async def wait_state(service: KubeService, name: str, state: str, *, target: str = "",
                     timeout: float = 20.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    obj: dict[str, Any] = {}
    while asyncio.get_running_loop().time() < deadline:
        obj = await service.get("InferenceService", "default", name)
        states = obj["status"]["modelStatus"]["states"]
        if states["activeModelState"] == state and states["targetModelState"] == target:
            return obj
        await asyncio.sleep(0.02)
    raise AssertionError(f"{name} never reached {state}/{target!r}: {obj.get('status')}")


def infer_request(name: str) -> v2.ModelInferRequest:
    req = v2.ModelInferRequest(model_name=name)
    t = req.inputs.add(name="input-0", datatype="BYTES", shape=[1])
    t.contents.bytes_contents.append(b"x")
    return req


async def test_apply_loads_and_reports_loaded_with_urls(service: KubeService, instance: Instance,
                                                        tmp_path: Path) -> None:
    folder = string_model(tmp_path, "s1")
    applied = await service.apply([isvc("s", folder)])
    assert [a.to_json() for a in applied] == [
        {"kind": "InferenceService", "namespace": "default", "name": "s", "action": "created"}]
    obj = await wait_state(service, "s", "Loaded")
    assert obj["status"]["url"] == "grpc://127.0.0.1:8033"
    assert obj["status"]["components"]["predictor"]["restUrl"] == "http://127.0.0.1:8008"
    assert obj["metadata"]["generation"] == 1 and obj["metadata"]["uid"]
    vm = instance.vmodel_status("s")
    assert vm.owner == "isvc" and vm.active.startswith("s__isvc-")
    resp = await instance.infer(instance.resolve("s"), infer_request("s"))
    assert resp.model_name == vm.active
    # the same spec again changes nothing
    assert (await service.apply([isvc("s", folder)]))[0].action == "unchanged"
    assert instance.vmodel_status("s").active == vm.active


async def test_changed_storage_uri_moves_the_vmodel_and_drops_the_old_model(service: KubeService,
                                                                           instance: Instance,
                                                                           tmp_path: Path) -> None:
    await service.apply([isvc("s", string_model(tmp_path, "v1"))])
    await wait_state(service, "s", "Loaded")
    old = instance.vmodel_status("s").active
    applied = await service.apply([isvc("s", string_model(tmp_path, "v2"))])
    assert applied[0].action == "configured"
    deadline = asyncio.get_running_loop().time() + 20
    while instance.vmodel_status("s").active == old and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    obj = await wait_state(service, "s", "Loaded")
    assert obj["metadata"]["generation"] == 2 and obj["status"]["observedGeneration"] == 2
    assert instance.vmodel_status("s").active != old
    assert instance.model_status(old).state is ModelState.NOT_FOUND  # auto-deleted


async def test_failed_load_is_reported_with_failure_info(service: KubeService, tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model.joblib").write_bytes(b"not a pickle")
    await service.apply([isvc("broken", folder, fmt="sklearn")])
    obj = await wait_state(service, "broken", "FailedToLoad")
    info = obj["status"]["modelStatus"]["lastFailureInfo"]
    assert info["reason"] == "ModelLoadFailed" and info["modelRevisionName"].startswith("broken__isvc-")
    assert info["location"] == "test" and info["message"]
    assert obj["status"]["conditions"][0]["status"] == "False"


async def test_no_supporting_runtime_until_one_is_applied(service: KubeService, instance: Instance,
                                                          tmp_path: Path) -> None:
    folder = string_model(tmp_path, "m")
    await service.apply([isvc("v1", folder, protocolVersion="v1")])  # the built-in runtime speaks v2 only
    obj = await service.get("InferenceService", "default", "v1")
    info = obj["status"]["modelStatus"]["lastFailureInfo"]
    assert info["reason"] == "NoSupportingRuntime"
    assert "model format 'string' with protocol 'v1'" in info["message"]
    assert obj["status"]["modelStatus"]["states"]["activeModelState"] == "FailedToLoad"
    assert instance.vmodel_status("v1").state.name == "NOT_FOUND"
    # a ServingRuntime that serves it: the waiting InferenceService is reconciled again
    await service.apply([runtime_doc("strings-v1", [{"name": "string", "autoSelect": True}],
                                     protocolVersions=["v1"])])
    obj = await wait_state(service, "v1", "Loaded")
    assert "lastFailureInfo" not in obj["status"]["modelStatus"]


async def test_explicit_runtime_not_recognized(service: KubeService, tmp_path: Path) -> None:
    await service.apply([isvc("x", string_model(tmp_path, "x"), runtime="nope")])
    info = (await service.get("InferenceService", "default", "x"))["status"]["modelStatus"]["lastFailureInfo"]
    assert info["reason"] == "RuntimeNotRecognized" and "runtime 'nope' not found" in info["message"]


async def test_invalid_documents_apply_nothing(service: KubeService, tmp_path: Path) -> None:
    good = isvc("good", string_model(tmp_path, "g"))
    bad = copy.deepcopy(good)
    bad["metadata"]["name"] = "bad"
    bad["spec"]["predictor"]["model"]["storageUri"] = "ftp://x/y"
    with pytest.raises(InvalidSpec) as info:
        await service.apply([good, bad])
    assert str(info.value).startswith("spec.predictor.model.storageUri: unsupported storage scheme")
    assert "document 2: InferenceService bad" in str(info.value)
    assert await service.list("InferenceService") == []
    with pytest.raises(InvalidArgument, match="no resources"):
        await service.apply([])


async def test_names_are_unique_across_namespaces_and_kinds(service: KubeService, tmp_path: Path) -> None:
    await service.apply([isvc("m", string_model(tmp_path, "m"))])
    with pytest.raises(AlreadyExists, match="taken by InferenceService default/m"):
        await service.apply([isvc("m", tmp_path / "m", namespace="other")])
    predictor = {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "Predictor", "metadata": {"name": "m"},
                 "spec": {"modelType": {"name": "string"}, "path": str(tmp_path / "m")}}
    with pytest.raises(AlreadyExists):
        await service.apply([predictor])


async def test_owner_conflict_from_another_source_becomes_status(instance: Instance, tmp_path: Path) -> None:
    from kserve_mesh.core.records import ModelInfo
    from kserve_mesh.core.vmodel import SetVModel

    folder = string_model(tmp_path, "o")
    await instance.register("other-model", ModelInfo("string", str(folder)))
    await instance.set_vmodel(SetVModel("o", ModelId("other-model"), owner="someone"))  # type: ignore[arg-type]
    reconciler = Reconciler(InstanceMesh(instance), ServiceEndpoints("h:1", "http://h:2"), SystemClock())
    from kserve_mesh.kube.core.parse import parse

    res = parse(isvc("o", folder))
    assert isinstance(res, InferenceService)
    outcome = await reconciler.apply(res, (await _builtins()))
    assert outcome.state.transition == "InvalidSpec"
    assert outcome.state.failure is not None and "different source" in outcome.state.failure.message
    observed = await reconciler.observe(res, await _builtins())
    assert observed.transition == "InvalidSpec"
    assert instance.vmodel_status("o").active == "other-model"


async def _builtins():  # type: ignore[no-untyped-def]
    from kserve_mesh.kube.core.runtimes import BUILTIN_RUNTIMES

    return BUILTIN_RUNTIMES


async def test_reconcile_document_ignores_non_modelmesh_and_reports_invalid_specs(instance: Instance,
                                                                                 tmp_path: Path) -> None:
    reconciler = Reconciler(InstanceMesh(instance), ServiceEndpoints("h:1", "http://h:2"), SystemClock())
    serverless = isvc("a", string_model(tmp_path, "a"))
    serverless["metadata"]["annotations"] = {"serving.kserve.io/deploymentMode": "Serverless"}
    assert await reconciler.reconcile_document(serverless, await _builtins()) is None
    assert instance.vmodel_status("a").state.name == "NOT_FOUND"
    bad = isvc("b", tmp_path / "a")
    bad["spec"]["predictor"]["model"]["bogus"] = True
    status = await reconciler.reconcile_document(bad, await _builtins())
    assert status is not None
    assert status["modelStatus"]["transitionStatus"] == "InvalidSpec"
    assert status["modelStatus"]["lastFailureInfo"]["message"] == "spec.predictor.model.bogus: unknown field"
    good = isvc("a", tmp_path / "a")
    good["metadata"]["generation"] = 4
    status = await reconciler.reconcile_document(good, await _builtins())
    assert status is not None and status["observedGeneration"] == 4
    assert status["modelStatus"]["states"]["activeModelState"] in ("Loading", "Loaded")
    await reconciler.remove("InferenceService", "a")
    assert instance.vmodel_status("a").state.name == "NOT_FOUND"


async def test_delete_removes_vmodel_and_models(service: KubeService, instance: Instance, tmp_path: Path) -> None:
    await service.apply([isvc("d", string_model(tmp_path, "d"))])
    await wait_state(service, "d", "Loaded")
    model = instance.vmodel_status("d").active
    await service.delete("InferenceService", "default", "d")
    assert instance.vmodel_status("d").state.name == "NOT_FOUND"
    assert instance.model_status(model).state is ModelState.NOT_FOUND
    with pytest.raises(NotFound, match="InferenceService 'd' not found in namespace 'default'"):
        await service.get("InferenceService", "default", "d")
    with pytest.raises(NotFound):
        await service.delete("InferenceService", "default", "d")


async def test_runtimes_list_get_override_and_delete(service: KubeService) -> None:
    names = [r["metadata"]["name"] for r in await service.list("ClusterServingRuntime")]
    assert names == ["kserve-mesh-python"]
    builtin = await service.get("ClusterServingRuntime", "", "kserve-mesh-python")
    assert builtin["spec"]["multiModel"] is True
    with pytest.raises(FailedPrecondition, match="built into the mesh"):
        await service.delete("ClusterServingRuntime", "", "kserve-mesh-python")
    override = runtime_doc("kserve-mesh-python", [{"name": "string", "autoSelect": True}], cluster=True,
                           disabled=True)
    assert (await service.apply([override]))[0].action == "created"
    (got,) = await service.list("ClusterServingRuntime")
    assert got["spec"]["disabled"] is True and got["metadata"]["resourceVersion"]
    runtimes = await service.runtimes()
    assert [(r.name, r.disabled) for r in runtimes] == [("kserve-mesh-python", True)]
    await service.delete("ClusterServingRuntime", "", "kserve-mesh-python")
    assert [r.disabled for r in await service.runtimes()] == [False]
    await service.apply([runtime_doc("local", [{"name": "string", "autoSelect": True}])])
    assert [r["metadata"]["namespace"] for r in await service.list("ServingRuntime", "default")] == ["default"]
    assert await service.list("ServingRuntime", "other") == []


async def test_resync_reapplies_stored_resources(service: KubeService, instance: Instance, tmp_path: Path) -> None:
    await service.apply([isvc("r", string_model(tmp_path, "r"))])
    await instance.delete_vmodel("r")  # as if the mesh had lost it
    assert await service.resync() == 1
    assert instance.vmodel_status("r").state.name != "NOT_FOUND"


async def test_unreachable_mesh_stores_the_resource_and_says_why(store: MemoryStore, tmp_path: Path) -> None:
    import json

    from kserve_mesh.core.errors import Unavailable
    from kserve_mesh.kube.controller.mesh_client import GrpcMesh

    mesh = GrpcMesh("127.0.0.1:1", deadline_s=1.0)
    try:
        reconciler = Reconciler(mesh, ServiceEndpoints("h:1", "http://h:2"), SystemClock())
        svc = KubeService(KubeResourceStore(store, KEYS), reconciler, SystemClock())
        assert (await svc.apply([isvc("u", string_model(tmp_path, "u"))]))[0].action == "created"
        kv = await store.get(KEYS.isvc("default", "u"))
        assert kv is not None
        status = json.loads(kv.value)["status"]
        assert status["modelStatus"]["lastFailureInfo"]["reason"] == "RuntimeUnhealthy"
        assert status["conditions"][0]["status"] == "False"
        with pytest.raises(Unavailable, match="127.0.0.1:1 unavailable"):
            await svc.get("InferenceService", "default", "u")
    finally:
        await mesh.close()


@pytest.mark.parametrize("uri", ["/etc/passwd", "file:///proc/self/environ", "../../../../etc/hostname"])
async def test_an_isvc_outside_the_allowed_folders_is_refused(service: KubeService, instance: Instance,
                                                               uri: str) -> None:
    with pytest.raises(InvalidArgument, match="refused.*--allow-local-path"):
        await service.apply([isvc("leak", uri)])
    assert not [m for m in instance.registry.models if m.startswith("leak__")]
