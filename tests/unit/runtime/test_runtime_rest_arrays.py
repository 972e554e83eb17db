"""A V2 REST body for the built-in runtime decoded straight to arrays (``protocol/rest_arrays.py``,
``BuiltinRuntime.infer_arrays``, and ``infer_rest``, which the runtime child serves over the local
link) answers byte for byte as the message path does: the same body, the same headers, or the same
error, for every example model and for random tensors of every datatype, in JSON and binary, with
outputs selected, reordered and asked for in binary. The REST hop takes the array path for a
runtime that takes arrays, hands the body as it came to one that takes REST bodies, and takes the
message path for any other."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from format_models import make_custom_source
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kserve_mesh.core.errors import MeshError
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.mesh.hops import Hops
from kserve_mesh.mesh.wire import MODEL_ID, MODEL_ID_BIN, Routing
from kserve_mesh.protocol import rest as codec
from kserve_mesh.protocol.datatypes import DATATYPES
from kserve_mesh.protocol.rest_arrays import ArrayRequest, parse_infer_arrays, render_arrays_response
from kserve_mesh.runtime.builtin import BuiltinRuntime, LocalFetcher, RuntimeConfig

ECHO = """
    import numpy as np
    from kserve_mesh.model import Model

    class Echo(Model):
        # No inputs declared: every tensor reaches predict as sent. Answers each input back, then
        # outputs of the datatypes a model may return, objects included.
        def predict(self, inputs):
            out = {f"echo-{name}": value for name, value in inputs.items()}
            out["f16"] = np.array([0.5, -2.0], np.float16)
            out["flag"] = np.array([[True], [False]])
            out["big"] = np.array([2**64 - 1], np.uint64)
            out["small"] = np.array([-128, 127], np.int8)
            out["third"] = np.array([0.1], np.float32)
            out["swapped"] = np.array([1.5, 2.5], ">f8")
            out["strided"] = np.arange(6, dtype=np.int32)[::2]
            out["words"] = np.array(["a", "é"], dtype=object)
            out["scalar"] = np.float32(0.5)
            out["count"] = 3
            if "poke" in inputs:
                inputs["poke"] += 1  # writes into its input: refused where the input is read-only
            if "wide" in inputs:
                out["wide"] = np.longdouble(1.5)  # no V2 datatype
            return out
"""


@pytest.fixture(scope="module")
def echo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_custom_source(tmp_path_factory.mktemp("echo") / "echo", ECHO)


@pytest.fixture
async def runtime(models_dir: Path, echo_dir: Path) -> Any:
    rt = BuiltinRuntime(RuntimeConfig(capacity_bytes=1 << 30), LocalFetcher([models_dir, echo_dir.parent]))
    await rt.load_model("echo", ModelInfo(type="python", path=str(echo_dir)))
    yield rt
    await rt.close()


async def _outcome(call: Any) -> tuple[Any, ...]:
    try:
        body, headers = await call()
    except MeshError as exc:
        return ("error", type(exc).__name__, str(exc))
    return ("ok", body, headers)


async def both(rt: BuiltinRuntime, model_id: str, body: bytes, header_length: int | None = None) -> tuple[Any, ...]:
    """The answer of the message path and of the array path to ``body``, asserted equal."""

    async def message() -> tuple[bytes, dict[str, str]]:
        request, options = codec.parse_infer_request(body, model_id, header_length=header_length)
        return codec.render_infer_response(await rt.infer(request), options)

    async def arrays() -> tuple[bytes, dict[str, str]]:
        request = parse_infer_arrays(body, header_length)
        return render_arrays_response(model_id, await rt.infer_arrays(model_id, request), request)

    async def rest() -> tuple[bytes, dict[str, str]]:  # spi.RestRuntime: the child behind the local link
        return await rt.infer_rest(model_id, body, header_length)

    old, new, whole = await _outcome(message), await _outcome(arrays), await _outcome(rest)
    assert new == old
    assert whole == new
    return new


def binary_body(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, int]:
    head = json.dumps(header).encode()
    return head + b"".join(blobs), len(head)


async def test_every_example_model_answers_alike(runtime: BuiltinRuntime, models_dir: Path,
                                                  samples: dict[str, Any]) -> None:
    for model_id, sample in samples.items():
        await runtime.load_model(model_id, ModelInfo(type=sample["type"], path=str(models_dir / model_id)))
        body = json.dumps({"id": "r1", **sample["request"]}).encode()
        kind, answer, _ = await both(runtime, model_id, body)
        assert kind == "ok", answer
        got, want = json.loads(answer)["outputs"][0]["data"], sample["expected"]["outputs"][0]["data"]
        assert got == (pytest.approx(want, rel=1e-6) if isinstance(want[0], float) else want)
        everything_binary = {**sample["request"], "parameters": {"binary_data_output": True}}
        assert (await both(runtime, model_id, json.dumps(everything_binary).encode()))[0] == "ok"


async def test_outputs_of_every_kind_selected_reordered_and_in_binary(runtime: BuiltinRuntime) -> None:
    x = {"name": "x", "datatype": "FP64", "shape": [2, 2], "data": [[1.0, 2.5], [-3.0, 1e300]]}
    plain = await both(runtime, "echo", json.dumps({"inputs": [x]}).encode())
    doc = json.loads(plain[1])
    assert {o["name"] for o in doc["outputs"]} == {"echo-x", "f16", "flag", "big", "small", "third", "swapped",
                                                  "strided", "words", "scalar", "count"}
    assert [o["shape"] for o in doc["outputs"] if o["name"] in ("scalar", "count")] == [[], []]
    for outputs in (
        [{"name": "big"}, {"name": "echo-x"}],
        [{"name": "f16", "parameters": {"binary_data": True}}, {"name": "swapped"}, {"name": "strided"}],
        [{"name": "words"}, {"name": "third", "parameters": {"binary_data": False}}],
        [{"name": "words", "parameters": {"binary_data": True}}],
        [{"name": "scalar", "parameters": {"binary_data": True}}, {"name": "count"}],
        [{"name": "nope"}],
    ):
        await both(runtime, "echo", json.dumps({"inputs": [x], "outputs": outputs}).encode())
    all_binary = {"inputs": [x], "parameters": {"binary_data_output": True},
                  "outputs": [{"name": "flag", "parameters": {"binary_data": False}}, {"name": "small"}]}
    kind, _body, headers = await both(runtime, "echo", json.dumps(all_binary).encode())
    assert kind == "ok" and "inference-header-content-length" in {k.lower() for k in headers}


async def test_binary_fp16_and_bytes_inputs(runtime: BuiltinRuntime) -> None:
    halves = np.array([1.5, -0.25, 4.0], np.float16)
    words = b"".join(struct.pack("<I", len(w)) + w for w in (b"abc", b"\xff\x00"))
    header = {"inputs": [{"name": "h", "datatype": "FP16", "shape": [3],
                          "parameters": {"binary_data_size": halves.nbytes}},
                         {"name": "w", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(words)}}],
              "outputs": [{"name": "echo-h"}, {"name": "echo-w", "parameters": {"binary_data": True}}]}
    body, length = binary_body(header, halves.tobytes(), words)
    assert (await both(runtime, "echo", body, length))[0] == "ok"
    # a BYTES output that is not text cannot go in JSON: the same error on both paths
    header["outputs"][1] = {"name": "echo-w"}
    body, length = binary_body(header, halves.tobytes(), words)
    assert (await both(runtime, "echo", body, length))[0] == "error"
    json_fp16 = {"inputs": [{"name": "h", "datatype": "FP16", "shape": [2], "data": [0.5, 65504.0]},
                            {"name": "s", "datatype": "BYTES", "shape": [1, 2], "data": [["x", "ÿ"]]}]}
    assert (await both(runtime, "echo", json.dumps(json_fp16).encode()))[0] == "ok"


@pytest.mark.parametrize("body", [
    {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 3], "data": [1, 2, 3]}]},
    {"inputs": [{"name": "input-0", "datatype": "BYTES", "shape": [1, 4], "data": ["a", "b", "c", "d"]}]},
    {"inputs": [{"name": "input-0", "datatype": "INT8", "shape": [1, 4], "data": [1, 2, 3, 300]}]},
    {"inputs": [{"name": "other", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
    {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [0, 4], "data": []}]},
    {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, 4]}],
     "parameters": {"p": 1.5}},
    {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, 4],
                 "parameters": {"q": 2**70}}]},
    {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, 4]}],
     "outputs": [{"name": "output-0", "parameters": {"binary_data": "yes"}}]},
    {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, 4]}],
     "outputs": [{"name": "output-0", "parameters": {"r": [1]}}]},
    {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, 4]}],
     "outputs": [{"name": "output-0"}, {"name": "probabilities"}]},
    {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [2, 4], "data": [1, 2, 3, 4, 5, 6, 7, float("nan")]}]},
    {"id": 7, "inputs": []},
])
async def test_bad_requests_get_the_same_error(runtime: BuiltinRuntime, models_dir: Path, samples: dict[str, Any],
                                               body: dict[str, Any]) -> None:
    await runtime.load_model("sklearn-iris", ModelInfo(type="sklearn", path=str(models_dir / "sklearn-iris")))
    kind, *detail = await both(runtime, "sklearn-iris", json.dumps(body).encode())
    assert kind == "error", detail


NUMERIC = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"]


@st.composite
def tensors(draw: st.DrawFn, name: str) -> tuple[dict[str, Any], bytes | None]:
    """One input tensor, JSON or binary, of any datatype (some values out of its range)."""
    datatype = draw(st.sampled_from([*NUMERIC, "BYTES"]))
    shape = draw(st.lists(st.integers(0, 3) if draw(st.integers(0, 9)) == 0 else st.integers(1, 3),
                          min_size=0, max_size=3))  # [] is a scalar
    count = int(np.prod(shape))
    if datatype == "BYTES":
        values: list[Any] = draw(st.lists(st.text(max_size=4), min_size=count, max_size=count))
    elif datatype == "BOOL":
        values = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    elif datatype.startswith("FP"):
        width = 16 if datatype == "FP16" else 32
        values = draw(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=width), min_size=count,
                               max_size=count))
    else:
        info = np.iinfo(DATATYPES[datatype])
        low, high = max(int(info.min), -(2**40)), min(int(info.max), 2**40)
        if draw(st.integers(0, 9)) == 0:
            low, high = low - 2, high + 2  # out of range: refused alike in JSON, wrapped in binary
        values = draw(st.lists(st.integers(low, high), min_size=count, max_size=count))
    entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
    if datatype != "BYTES" and draw(st.booleans()):
        # the values wrapped into the datatype's range, as a client's array would hold them
        with np.errstate(over="ignore"):
            raw = np.array(values).astype(DATATYPES[datatype]).tobytes()
        entry["parameters"] = {"binary_data_size": len(raw)}
        return entry, raw
    entry["data"] = values
    return entry, None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(inputs=st.lists(tensors(name="?"), min_size=1, max_size=3), data=st.data())
async def test_random_tensors_answer_alike(runtime: BuiltinRuntime, inputs: list[tuple[dict[str, Any], bytes | None]],
                                           data: st.DataObject) -> None:
    entries = [{**entry, "name": f"t{index}"} for index, (entry, _) in enumerate(inputs)]
    blobs = [raw for _, raw in inputs if raw is not None]
    names = [f"echo-t{index}" for index in range(len(entries))] + ["f16", "big", "words"]
    outputs = data.draw(st.lists(st.sampled_from(names), unique=True, max_size=4))
    doc: dict[str, Any] = {"inputs": entries}
    if outputs:
        doc["outputs"] = [{"name": n, "parameters": {"binary_data": data.draw(st.booleans())}} for n in outputs]
    if data.draw(st.booleans()):
        doc["parameters"] = {"binary_data_output": True}
    if blobs:
        body, length = binary_body(doc, *blobs)
        await both(runtime, "echo", body, length)
    else:
        await both(runtime, "echo", json.dumps(doc).encode())


async def test_inputs_are_read_only_where_the_message_held_them_raw(runtime: BuiltinRuntime) -> None:
    poke = {"name": "poke", "datatype": "INT32", "shape": [2], "data": [1, 2]}
    half = {"name": "h", "datatype": "FP16", "shape": [1], "data": [0.5]}
    writable = await both(runtime, "echo", json.dumps({"inputs": [poke]}).encode())
    assert writable[0] == "ok" and b'"echo-poke","datatype":"INT32","shape":[2],"data":[2,3]' in writable[1]
    kind, error, message = await both(runtime, "echo", json.dumps({"inputs": [poke, half]}).encode())
    assert (kind, error) == ("error", "InvalidArgument") and "read-only" in message


async def test_an_output_without_a_datatype_fails_the_timed_call_alike(runtime: BuiltinRuntime) -> None:
    body = json.dumps({"inputs": [{"name": "wide", "datatype": "INT8", "shape": [1], "data": [1]}]}).encode()
    assert (await both(runtime, "echo", body))[:2] == ("error", "InvalidArgument")
    seen: dict[str, list[str]] = {}

    class Observer:
        def __init__(self, path: str) -> None:
            self.path = path

        def invoked(self, method: str, error: BaseException | None, *_args: Any) -> None:
            seen.setdefault(self.path, []).append(type(error).__name__)

    for path, rt in (("arrays", runtime), ("message", _MessagesOnly(runtime))):
        hop = Hops(rt, lambda: None, observer=Observer(path)).rest("echo", body, None, "", [], _Decoder())  # type: ignore[arg-type]
        with pytest.raises(MeshError, match="has no V2 datatype"):
            await hop.run(5.0)
    assert seen == {"arrays": ["InvalidArgument"], "message": ["InvalidArgument"]}


async def test_an_id_that_cannot_be_a_header_value_is_answered_in_the_bin_header(
        runtime: BuiltinRuntime, echo_dir: Path) -> None:
    await runtime.load_model("模型", ModelInfo(type="python", path=str(echo_dir)))
    body = json.dumps({"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [4]}],
                       "outputs": [{"name": "echo-x"}]}).encode()
    for rt in (runtime, _MessagesOnly(runtime)):
        answer = await Hops(rt, lambda: None).rest("模型", body, None, "", [], _Decoder()).run(5.0)  # type: ignore[arg-type]
        assert MODEL_ID not in answer.headers
        assert Routing.from_http([(MODEL_ID_BIN.encode(), answer.headers[MODEL_ID_BIN].encode())]).model_id == "模型"


class _Decoder:
    offload_bytes = 1 << 19

    async def decode(self, body: bytes, model_id: str, length: int | None) -> Any:
        return codec.parse_infer_request(body, model_id, header_length=length, raw=True)


class _MessagesOnly:
    """A runtime without ``infer_arrays``: the REST hop sends it messages."""

    def __init__(self, inner: BuiltinRuntime) -> None:
        self.inner = inner

    async def infer(self, request: Any, *, timeout: float | None = None) -> Any:
        return await self.inner.infer(request, timeout=timeout)


async def test_the_rest_hop_takes_the_array_path_where_the_runtime_has_it(
        runtime: BuiltinRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    body = json.dumps({"inputs": [{"name": "x", "datatype": "INT32", "shape": [2], "data": [4, 5]}],
                       "outputs": [{"name": "echo-x"}]}).encode()
    expected = b'{"model_name":"echo","model_version":"","id":"","outputs":[{"name":"echo-x","datatype":"INT32",' \
               b'"shape":[2],"data":[4,5]}]}'
    messages_only = Hops(_MessagesOnly(runtime), lambda: None)  # type: ignore[arg-type]
    assert not messages_only.takes_arrays
    answer = await messages_only.rest("echo", body, None, "", [], _Decoder()).run(5.0)
    assert answer.body == expected and answer.headers[MODEL_ID] == "echo"

    async def no_messages(*_args: Any, **_kw: Any) -> Any:
        raise AssertionError("the array path must not build a message")

    monkeypatch.setattr(runtime, "infer", no_messages)
    hops = Hops(runtime, lambda: None)
    assert hops.takes_arrays
    hop = hops.rest("echo", body, None, "", [], _Decoder())
    hop.prepare()
    assert isinstance(hop.req, ArrayRequest)
    assert await hop.run(5.0) == answer


class _RestOnly(_MessagesOnly):
    """A runtime that takes REST bodies as they came (``spi.RestRuntime``, as the client of the
    runtime child over the local link does), and records what it was handed."""

    def __init__(self, inner: BuiltinRuntime) -> None:
        super().__init__(inner)
        self.handed: list[tuple[str, bytes, int | None, float | None]] = []

    async def infer_rest(self, model_id: str, body: bytes, header_length: int | None, *,
                         timeout: float | None = None) -> tuple[bytes, dict[str, str]]:
        self.handed.append((model_id, body, header_length, timeout))
        return await self.inner.infer_rest(model_id, body, header_length, timeout=timeout)


async def test_the_rest_hop_hands_the_body_as_it_came_to_a_runtime_that_takes_rest(
        runtime: BuiltinRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    head = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [2], "parameters": {"binary_data_size": 8}}],
            "outputs": [{"name": "echo-x"}]}
    body, length = binary_body(head, struct.pack("<2i", 4, 5))
    in_process = await Hops(runtime, lambda: None).rest("echo", body, length, "", [], _Decoder()).run(5.0)
    rest_only = _RestOnly(runtime)
    hops = Hops(rest_only, lambda: None)  # type: ignore[arg-type]
    assert hops.takes_rest and not hops.takes_arrays and not Hops(runtime, lambda: None).takes_rest

    def no_decoding(*_args: Any, **_kw: Any) -> Any:
        raise AssertionError("a body for a runtime that takes REST is not decoded on the hot path")

    monkeypatch.setattr(codec, "parse_infer_request", no_decoding)
    answer = await hops.rest("echo", body, length, "", [], _Decoder()).run(5.0)
    assert answer == in_process and rest_only.handed == [("echo", body, length, 5.0)]
    monkeypatch.undo()
    bad = hops.rest("echo", b'{"inputs": [', None, "", [], _Decoder())
    with pytest.raises(MeshError, match="not valid JSON"):
        bad.prepare()  # where a request would cause a load, it is checked first, as before
    with pytest.raises(MeshError, match="not valid JSON"):
        await bad.run(5.0)  # checked by the runtime on the hot path, with the same message
    large_body = json.dumps({"id": "p" * _Decoder.offload_bytes, "outputs": [{"name": "echo-x"}],
                             "inputs": [{"name": "x", "datatype": "INT32", "shape": [2], "data": [4, 5]}]}).encode()
    large = await hops.rest("echo", large_body, None, "", [], _Decoder()).run(5.0)
    assert json.loads(large.body)["outputs"][0]["data"] == [4, 5]  # decoded off the loop here, sent as a message
    assert len(rest_only.handed) == 2
