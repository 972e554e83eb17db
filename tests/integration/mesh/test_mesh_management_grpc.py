"""The ModelMesh management API over gRPC, called with stubs generated from ModelMesh's own
message definitions (same package, names and field numbers): what an existing ModelMesh client
sends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from mesh_process import MeshProcess

from kserve_mesh.protocol import v2
from kserve_mesh.protos import model_mesh_pb2 as pb
from kserve_mesh.protos import model_mesh_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

S = pb.ModelStatusInfo
VS = pb.VModelStatusInfo


@pytest.fixture()
def stub(mesh: MeshProcess):  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(mesh.grpc) as channel:
        yield pb_grpc.ModelMeshStub(channel), channel


def _info(models_dir: Path, name: str = "sklearn-iris", kind: str = "sklearn") -> pb.ModelInfo:
    return pb.ModelInfo(type=kind, path=str(models_dir / name))


def test_model_lifecycle(stub: Any, example_models: tuple[Path, dict[str, Any]]) -> None:
    mm, channel = stub
    models_dir, inputs = example_models
    st = mm.registerModel(pb.RegisterModelRequest(modelId="g-iris", modelInfo=_info(models_dir)), timeout=30)
    assert st.status == S.NOT_LOADED
    assert mm.getModelStatus(pb.GetStatusRequest(modelId="g-iris"), timeout=10).status == S.NOT_LOADED
    st = mm.ensureLoaded(pb.EnsureLoadedRequest(modelId="g-iris", sync=True), timeout=60)
    assert st.status == S.LOADED
    assert st.modelCopyInfos[0].copyStatus == S.LOADED and st.modelCopyInfos[0].location
    # Inference through V2 gRPC with ModelMesh's routing header.
    req = v2.ModelInferRequest()
    t = req.inputs.add(name="input-0", datatype="FP64", shape=[1, 4])
    t.contents.fp64_contents.extend([5.1, 3.5, 1.4, 0.2])
    infer = channel.unary_unary(v2.method("ModelInfer"), request_serializer=v2.ModelInferRequest.SerializeToString,
                                response_deserializer=v2.ModelInferResponse.FromString)
    resp = infer(req, metadata=(("mm-model-id", "g-iris"),), timeout=30)
    assert resp.model_name == "g-iris" and list(resp.outputs[0].contents.int64_contents) == [0]
    # Same id, different info: ALREADY_EXISTS.
    with pytest.raises(grpc.RpcError) as err:
        mm.registerModel(pb.RegisterModelRequest(modelId="g-iris", modelInfo=_info(models_dir, kind="xgboost")), timeout=10)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    mm.unregisterModel(pb.UnregisterModelRequest(modelId="g-iris"), timeout=30)
    assert mm.getModelStatus(pb.GetStatusRequest(modelId="g-iris"), timeout=10).status == S.NOT_FOUND
    mm.unregisterModel(pb.UnregisterModelRequest(modelId="g-iris"), timeout=10)  # absent: a no-op


def test_bad_management_requests(stub: Any) -> None:
    mm, _ = stub
    with pytest.raises(grpc.RpcError) as err:
        mm.ensureLoaded(pb.EnsureLoadedRequest(modelId="ghost"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "ghost" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        mm.registerModel(pb.RegisterModelRequest(modelId="no-info"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "modelInfo" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        mm.registerModel(pb.RegisterModelRequest(modelId="", modelInfo=pb.ModelInfo(type="sklearn")), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        mm.setVModel(pb.SetVModelRequest(vModelId="v", targetModelId="ghost"), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "ghost" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        mm.setVModel(pb.SetVModelRequest(vModelId="never", targetModelId="x", updateOnly=True), timeout=10)
    assert err.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)


def test_vmodel_lifecycle(stub: Any, example_models: tuple[Path, dict[str, Any]]) -> None:
    mm, _ = stub
    models_dir, _ = example_models
    vs = mm.setVModel(pb.SetVModelRequest(vModelId="g-v", owner="ksp", targetModelId="g-a",
                                          modelInfo=_info(models_dir), autoDeleteTargetModel=True,
                                          loadNow=True, sync=True), timeout=60)
    assert vs.status == VS.DEFINED and vs.activeModelId == "g-a" and vs.owner == "ksp"
    assert vs.activeModelStatus.status == S.LOADED
    # Owner mismatch: ALREADY_EXISTS; wrong expected target: FAILED_PRECONDITION.
    with pytest.raises(grpc.RpcError) as err:
        mm.setVModel(pb.SetVModelRequest(vModelId="g-v", owner="other", targetModelId="g-a"), timeout=10)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as err:
        mm.setVModel(pb.SetVModelRequest(vModelId="g-v", owner="ksp", targetModelId="g-b",
                                         modelInfo=_info(models_dir, "xgboost-iris", "xgboost"),
                                         expectedTargetModelId="not-g-a"), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # The model a vmodel uses cannot be unregistered.
    with pytest.raises(grpc.RpcError) as err:
        mm.unregisterModel(pb.UnregisterModelRequest(modelId="g-a"), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Move to a new auto-deleted target; sync waits for the transition; the old target is deleted.
    vs = mm.setVModel(pb.SetVModelRequest(vModelId="g-v", owner="ksp", targetModelId="g-b",
                                          modelInfo=_info(models_dir, "xgboost-iris", "xgboost"),
                                          autoDeleteTargetModel=True, expectedTargetModelId="g-a", sync=True),
                      timeout=60)
    assert vs.status == VS.DEFINED and vs.activeModelId == "g-b", vs
    assert mm.getModelStatus(pb.GetStatusRequest(modelId="g-a"), timeout=10).status == S.NOT_FOUND
    got = mm.getVModelStatus(pb.GetVModelStatusRequest(vModelId="g-v", owner="ksp"), timeout=10)
    assert got.activeModelId == "g-b" and got.activeModelStatus.status == S.LOADED
    assert mm.getVModelStatus(pb.GetVModelStatusRequest(vModelId="g-v", owner="isvc"), timeout=10).status == VS.NOT_FOUND
    mm.deleteVModel(pb.DeleteVModelRequest(vModelId="g-v", owner="ksp"), timeout=30)
    assert mm.getVModelStatus(pb.GetVModelStatusRequest(vModelId="g-v"), timeout=10).status == VS.NOT_FOUND
    assert mm.getModelStatus(pb.GetStatusRequest(modelId="g-b"), timeout=10).status == S.NOT_FOUND
