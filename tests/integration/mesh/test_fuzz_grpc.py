"""A hypothesis fuzzer of every gRPC method of a real ``kserve-mesh up`` process: V2
(``inference.GRPCInferenceService``) and ModelMesh management (``mmesh.ModelMesh``), sent raw bytes,
mutated valid messages, and valid messages with random routing headers, as generic unary calls.

Client garbage may only get the codes a client error earns (``INVALID_ARGUMENT``, ``NOT_FOUND``,
...), never ``UNKNOWN`` or ``INTERNAL``; the process must not crash and must still serve afterwards.
Bounded: a fixed number of derandomized examples per method."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from mesh_process import MeshProcess

from kserve_mesh.protocol import v2
from kserve_mesh.protos import model_mesh_pb2 as mm
from kserve_mesh.protos import v2_repository_pb2 as repo

pytestmark = pytest.mark.integration

ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED}
RAW_EXAMPLES = 25
MUTATED_EXAMPLES = 40
HEADER_EXAMPLES = 40
NO_METADATA: st.SearchStrategy[tuple] = st.just(())
FUZZ = settings(deadline=None, database=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def fuzzed(example_models: tuple[Path, dict[str, Any]]) -> Iterator[MeshProcess]:
    """A mesh of its own: fuzzing registers, loads and unloads things."""
    proc = MeshProcess.start("--models", str(example_models[0]))
    try:
        yield proc
    finally:
        proc.stop()


def _infer_request(raw: bool = False) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name="sklearn-iris", id="fuzz")
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[1, 4])
    if raw:
        request.raw_input_contents.append(b"\x00" * 32)
    else:
        tensor.contents.fp64_contents.extend([5.1, 3.5, 1.4, 0.2])
    request.outputs.add(name="output-0")
    return request


def _templates(models: Path) -> dict[str, list[bytes]]:
    """Valid requests of every method, to mutate (ids that fuzzing may harm are its own)."""
    info = mm.ModelInfo(type="string", path=str(models / "string-2"))
    messages: dict[str, list[Any]] = {
        v2.method("ModelInfer"): [_infer_request(), _infer_request(raw=True)],
        v2.method("ModelMetadata"): [v2.ModelMetadataRequest(name="sklearn-iris")],
        v2.method("ModelReady"): [v2.ModelReadyRequest(name="sklearn-iris", version="1")],
        v2.method("ServerLive"): [v2.ServerLiveRequest()],
        v2.method("ServerReady"): [v2.ServerReadyRequest()],
        v2.method("ServerMetadata"): [v2.ServerMetadataRequest()],
        v2.method("RepositoryIndex"): [repo.RepositoryIndexRequest(ready=True)],
        v2.method("RepositoryModelLoad"): [v2.RepositoryModelLoadRequest(model_name="string-3")],
        v2.method("RepositoryModelUnload"): [v2.RepositoryModelUnloadRequest(model_name="fuzz-none")],
        "/mmesh.ModelMesh/registerModel": [mm.RegisterModelRequest(modelId="fuzz-m", modelInfo=info, loadNow=True)],
        "/mmesh.ModelMesh/unregisterModel": [mm.UnregisterModelRequest(modelId="fuzz-m")],
        "/mmesh.ModelMesh/getModelStatus": [mm.GetStatusRequest(modelId="sklearn-iris")],
        "/mmesh.ModelMesh/ensureLoaded": [mm.EnsureLoadedRequest(modelId="string-3", sync=True)],
        "/mmesh.ModelMesh/setVModel": [mm.SetVModelRequest(vModelId="fuzz-v", targetModelId="string-3",
                                                           modelInfo=info, loadNow=True)],
        "/mmesh.ModelMesh/deleteVModel": [mm.DeleteVModelRequest(vModelId="fuzz-other")],
        "/mmesh.ModelMesh/getVModelStatus": [mm.GetVModelStatusRequest(vModelId="fuzz-v", owner="x")],
    }
    return {method: [m.SerializeToString() for m in msgs] for method, msgs in messages.items()}


@st.composite
def _mutated(draw: st.DrawFn, templates: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(templates)))
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "splice"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            del data[at:at + draw(st.integers(1, 4))]
        elif kind == "truncate":
            del data[at:]
        elif kind == "splice":
            data[at:at] = draw(st.sampled_from(templates))
    return bytes(data)


def _headers() -> st.SearchStrategy[tuple[tuple[str, Any], ...]]:
    ascii_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)
    one = st.one_of(
        st.tuples(st.sampled_from(["mm-model-id", "mm-vmodel-id"]), ascii_value),
        st.tuples(st.sampled_from(["mm-model-id-bin", "mm-vmodel-id-bin"]), st.binary(max_size=300)),
        st.tuples(st.just("mm-balanced"), st.sampled_from(["true", "false", "x"])),
    )
    return st.lists(one, max_size=3).map(tuple)


def test_no_grpc_method_answers_unknown_or_internal_and_the_instance_still_serves(
    fuzzed: MeshProcess, example_models: tuple[Path, Any]
) -> None:
    templates = _templates(example_models[0])
    assert len(templates) == 9 + len(mm.DESCRIPTOR.services_by_name["ModelMesh"].methods)
    failures: list[str] = []
    seen: set[grpc.StatusCode] = set()
    calls = 0
    start = time.monotonic()
    with grpc.insecure_channel(fuzzed.grpc) as channel:

        def call(method: str, body: bytes, metadata: tuple = ()) -> None:
            nonlocal calls
            calls += 1
            try:
                channel.unary_unary(method)(body, timeout=60, metadata=metadata)
                code, details = grpc.StatusCode.OK, ""
            except grpc.RpcError as err:
                code, details = err.code(), err.details() or ""
            seen.add(code)
            if code not in ALLOWED:
                failures.append(f"{method} {body[:80]!r} {metadata!r:.120} -> {code.name}: {details[:300]}")

        def fuzz(method: str, examples: int, bodies: st.SearchStrategy[bytes],
                 metadata: st.SearchStrategy[tuple] = NO_METADATA) -> None:
            @settings(FUZZ, max_examples=examples)
            @given(bodies, metadata)
            def run(body: bytes, meta: tuple) -> None:
                call(method, body, meta)

            run()

        for method, valid in templates.items():
            fuzz(method, RAW_EXAMPLES, st.binary(max_size=200))
            fuzz(method, MUTATED_EXAMPLES, _mutated(valid))
        for method in (v2.method("ModelInfer"), v2.method("ModelMetadata"), v2.method("RepositoryModelLoad")):
            fuzz(method, HEADER_EXAMPLES, st.just(templates[method][0]), _headers())
    assert not failures, "\n".join(failures[:20])
    assert {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND} <= seen
    assert calls >= len(templates) * (RAW_EXAMPLES + MUTATED_EXAMPLES) // 2
    assert time.monotonic() - start < 600
    # still alive, still serving, nothing unexpected in the log
    assert fuzzed.proc.poll() is None
    with grpc.insecure_channel(fuzzed.grpc) as channel:
        infer = channel.unary_unary(v2.method("ModelInfer"), request_serializer=v2.ModelInferRequest.SerializeToString,
                                    response_deserializer=v2.ModelInferResponse.FromString)
        response = infer(_infer_request(), timeout=60)
        assert response.model_name == "sklearn-iris" and [o.name for o in response.outputs] == ["output-0"]
        ready = channel.unary_unary(v2.method("ServerReady"), request_serializer=v2.ServerReadyRequest.SerializeToString,
                                    response_deserializer=v2.ServerReadyResponse.FromString)
        assert ready(v2.ServerReadyRequest(), timeout=30).ready
    log = fuzzed.log()
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]
