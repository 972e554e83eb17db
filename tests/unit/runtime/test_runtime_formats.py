"""The deep-learning formats of the built-in runtime through its ModelRuntime methods: tiny real
models made here (TorchScript, Keras, SavedModel, OpenVINO IR), their V2 metadata, answers checked
against numpy, measured sizes, and every bad input a clear error naming what is wrong."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from format_models import X, expected, make_torch_triton_layout, make_torchscript

from kserve_mesh.core.errors import InvalidArgument, ModelLoadFailed
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.protocol import tensors
from kserve_mesh.runtime.builtin import BuiltinRuntime, LocalFetcher, RuntimeConfig, detect_model_type


@pytest.fixture
async def runtime(tmp_path: Path) -> Any:
    rt = BuiltinRuntime(RuntimeConfig(capacity_bytes=1 << 30), LocalFetcher([tmp_path]))
    yield rt
    await rt.close()


def meta_dict(meta: Any) -> dict[str, Any]:
    return {
        "platform": meta.platform,
        "inputs": [(t.name, t.datatype, list(t.shape)) for t in meta.inputs],
        "outputs": [(t.name, t.datatype, list(t.shape)) for t in meta.outputs],
    }


async def infer(rt: BuiltinRuntime, model_id: str, inputs: dict[str, np.ndarray], raw: bool = False) -> dict:
    response = await rt.infer(tensors.encode_request(model_id, inputs, raw=raw))
    return tensors.decode_outputs(response)


# -- pytorch (TorchScript) ---------------------------------------------------------------------


async def test_torchscript_loads_serves_and_reports_its_signature(runtime: BuiltinRuntime, tmp_path: Path) -> None:
    path = make_torchscript(tmp_path / "pt")
    assert detect_model_type(path.parent) == "pytorch"
    result = await runtime.load_model("pt", ModelInfo(type="pytorch", path=str(path.parent)))
    assert result.size_bytes >= path.stat().st_size  # measured, floored at the bytes on disk x 1.25
    assert meta_dict(await runtime.model_metadata("pt")) == {
        "platform": "pytorch_torchscript",
        "inputs": [("x", "FP32", [-1])],  # the argument's name; no shape in a TorchScript file
        "outputs": [("output-0", "FP32", [-1])],
    }
    for name, arr, raw in (("x", X, False), ("input-0", X.astype(np.float64), True), ("INPUT__0", X, False)):
        out = await infer(runtime, "pt", {name: arr}, raw=raw)
        np.testing.assert_allclose(out["output-0"], expected(), rtol=1e-5)
    with pytest.raises(InvalidArgument, match=r"model 'pt' rejected the input: .*mat1 and mat2 shapes cannot be"):
        await infer(runtime, "pt", {"x": np.ones((2, 5), np.float32)})
    with pytest.raises(InvalidArgument, match="model 'pt' has no input 'y': its input is 'x'"):
        await infer(runtime, "pt", {"y": X})


async def test_torchscript_in_tritons_layout_takes_its_config(runtime: BuiltinRuntime, tmp_path: Path) -> None:
    folder = make_torch_triton_layout(tmp_path / "cifar")
    assert detect_model_type(folder) == "pytorch"
    await runtime.load_model("cifar", ModelInfo(type="pytorch", path=str(folder)))
    assert meta_dict(await runtime.model_metadata("cifar"))["inputs"] == [("INPUT__0", "FP32", [-1, 4])]
    assert meta_dict(await runtime.model_metadata("cifar"))["outputs"] == [("OUTPUT__0", "FP32", [-1, 3])]
    out = await infer(runtime, "cifar", {"INPUT__0": X.astype(np.float64)})  # FP64 cast to the declared FP32
    np.testing.assert_allclose(out["OUTPUT__0"], expected(), rtol=1e-5)
    with pytest.raises(InvalidArgument, match="input 'INPUT__0' of model 'cifar' has 5 features; the model expects 4"):
        await infer(runtime, "cifar", {"INPUT__0": np.ones((1, 5), np.float32)})


async def test_a_schema_json_declares_a_torchscript_models_tensors(runtime: BuiltinRuntime, tmp_path: Path) -> None:
    path = make_torchscript(tmp_path / "schema")
    (path.parent / "schema.json").write_text(
        '{"inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],'
        ' "outputs": [{"name": "probs", "datatype": "FP32", "shape": [-1, 3]}]}')
    await runtime.load_model("s", ModelInfo(type="pytorch", path=str(path.parent)))
    out = await infer(runtime, "s", {"features": X})
    np.testing.assert_allclose(out["probs"], expected(), rtol=1e-5)
    (path.parent / "schema.json").write_text('{"inputs": [{"name": "a", "datatype": "FP32", "shape": [-1, 4]},'
                                             ' {"name": "b", "datatype": "FP32", "shape": [-1, 4]}]}')
    with pytest.raises(ModelLoadFailed, match=r"forward takes 1 input\(s\) \(x\), its schema declares 2"):
        await runtime.load_model("s2", ModelInfo(type="pytorch", path=str(path.parent)))
    (path.parent / "schema.json").write_text('{"inputs": [{"name": "a", "datatype": "FLOAT", "shape": [4]}]}')
    with pytest.raises(ModelLoadFailed, match="schema.json: each of 'inputs' needs a name, a V2 datatype"):
        await runtime.load_model("s3", ModelInfo(type="pytorch", path=str(path.parent)))


async def test_torchscript_tuple_and_dict_outputs(runtime: BuiltinRuntime, tmp_path: Path) -> None:
    import torch

    class Two(torch.nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return a + b, a * b

    class Named(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"double": x * 2, "count": torch.tensor([x.numel()])}

    (tmp_path / "two").mkdir()
    (tmp_path / "named").mkdir()
    torch.jit.script(Two()).save(str(tmp_path / "two" / "model.pt"))
    torch.jit.script(Named()).save(str(tmp_path / "named" / "model.pt"))
    await runtime.load_model("two", ModelInfo(type="pytorch", path=str(tmp_path / "two")))
    meta = meta_dict(await runtime.model_metadata("two"))
    assert [i[0] for i in meta["inputs"]] == ["a", "b"] and [o[0] for o in meta["outputs"]] == ["output-0", "output-1"]
    a, b = np.array([[1.0, 2.0]], np.float32), np.array([[3.0, 4.0]], np.float32)
    out = await infer(runtime, "two", {"a": a, "b": b})
    assert out["output-0"].tolist() == [[4.0, 6.0]] and out["output-1"].tolist() == [[3.0, 8.0]]
    with pytest.raises(InvalidArgument, match=r"model 'two' has no input 'c' \(inputs: a, b\)"):
        await infer(runtime, "two", {"a": a, "c": b})
    await runtime.load_model("named", ModelInfo(type="pytorch", path=str(tmp_path / "named")))
    assert meta_dict(await runtime.model_metadata("named"))["outputs"] == []  # keys known only when it answers
    out = await infer(runtime, "named", {"x": a})
    assert out["double"].tolist() == [[2.0, 4.0]] and out["count"].tolist() == [2]


async def test_bad_torch_files_are_clear_load_failures(runtime: BuiltinRuntime, tmp_path: Path) -> None:
    import torch

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.pt").write_bytes(b"not a zip archive")
    with pytest.raises(ModelLoadFailed, match="cannot load pytorch model 'model.pt': 'model.pt' is not a readable "
                                              "TorchScript file: PytorchStreamReader failed reading zip archive"):
        await runtime.load_model("bad", ModelInfo(type="pytorch", path=str(bad)))
    eager = tmp_path / "eager"
    eager.mkdir()
    torch.save(torch.nn.Linear(4, 3), eager / "model.pt")
    with pytest.raises(ModelLoadFailed, match=r"'model.pt' is not TorchScript \(a pickled eager model"):
        await runtime.load_model("eager", ModelInfo(type="pytorch", path=str(eager)))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.pbtxt").write_text("name: 'x'")
    with pytest.raises(ModelLoadFailed, match=r"no pytorch model file \(.pt .pth .torchscript\) in directory"):
        await runtime.load_model("empty", ModelInfo(type="pytorch", path=str(empty)))
    assert runtime.loaded_models() == {}


@pytest.mark.parametrize(("model_type", "module", "files", "package", "extra"), [
    ("pytorch", "torch", ("model.pt",), "torch", "torch"),
    ("keras", "tensorflow", ("model.keras",), "tensorflow", "tensorflow"),
    ("tensorflow", "tensorflow", ("saved_model.pb",), "tensorflow", "tensorflow"),
    ("openvino_ir", "openvino", ("model.xml", "model.bin"), "openvino", "openvino"),
])
async def test_a_missing_framework_names_the_extra_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              model_type: str, module: str, files: tuple[str, ...],
                                                              package: str, extra: str) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    for name in files:
        (folder / name).write_bytes(b"never read: the framework is missing")
    monkeypatch.setitem(sys.modules, module, None)  # what an interpreter without it answers: ImportError
    rt = BuiltinRuntime(RuntimeConfig(), LocalFetcher([tmp_path]))
    try:
        with pytest.raises(ModelLoadFailed, match=rf"cannot load {model_type} models: the Python package '{package}' "
                                                  rf"is not installed in the runtime .*pip install "
                                                  rf"'kserve-mesh\[{extra}\]'"):
            await rt.load_model("m", ModelInfo(type=model_type, path=str(folder)))
    finally:
        await rt.close()


# -- tensorflow (SavedModel) and keras (.keras / .h5) ---------------------------------------------


@pytest.fixture(scope="module")
def tf_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Keras model saved three ways (made once: TensorFlow takes seconds to import)."""
    from format_models import make_keras, make_savedmodel

    root = tmp_path_factory.mktemp("tf")
    make_keras(root / "keras", "model.keras")
    make_keras(root / "h5", "mnist.h5")
    make_savedmodel(root / "mnist.savedmodel")
    make_savedmodel(root / "triton" / "1" / "model.savedmodel")
    return root


@pytest.fixture
async def tf_runtime(tf_models: Path, tmp_path: Path) -> Any:
    rt = BuiltinRuntime(RuntimeConfig(capacity_bytes=1 << 30), LocalFetcher([tf_models, tmp_path]))
    yield rt
    await rt.close()


@pytest.mark.parametrize(("folder", "model_type", "platform", "inp", "out"), [
    ("keras", "keras", "keras", "features", "probs"),
    ("h5/mnist.h5", "keras", "keras", "features", "probs"),  # ModelMesh Serving's keras example: an .h5 file
    ("mnist.savedmodel", "tensorflow", "tensorflow_savedmodel", "features", "output_0"),
    ("triton", "tensorflow", "tensorflow_savedmodel", "features", "output_0"),  # <model>/1/model.savedmodel
    ("keras", "tensorflow", "keras", "features", "probs"),  # a tensorflow model given as a Keras file
    ("mnist.savedmodel", "keras", "tensorflow_savedmodel", "features", "output_0"),
])
async def test_tensorflow_and_keras_models_load_and_serve(tf_runtime: BuiltinRuntime, tf_models: Path, folder: str,
                                                          model_type: str, platform: str, inp: str, out: str) -> None:
    path = tf_models / folder
    assert detect_model_type(path) == ("tensorflow" if "savedmodel" in folder or folder == "triton" else "keras")
    result = await tf_runtime.load_model("m", ModelInfo(type=model_type, path=str(path)))
    assert result.size_bytes > 0
    assert meta_dict(await tf_runtime.model_metadata("m")) == {
        "platform": platform, "inputs": [(inp, "FP32", [-1, 4])], "outputs": [(out, "FP32", [-1, 3])]}
    for name, arr in ((inp, X), ("input-0", X.astype(np.float64))):
        got = await infer(tf_runtime, "m", {name: arr})
        np.testing.assert_allclose(got[out], expected(), rtol=1e-5)
    with pytest.raises(InvalidArgument, match=f"input '{inp}' of model 'm' has 5 features; the model expects 4"):
        await infer(tf_runtime, "m", {inp: np.ones((1, 5), np.float32)})
    with pytest.raises(InvalidArgument, match=f"input '{inp}' of model 'm' has datatype BYTES; the model expects FP32"):
        await infer(tf_runtime, "m", {inp: np.array([[b"a"] * 4], dtype=object)})


async def test_bad_tensorflow_and_keras_files_are_clear_load_failures(tf_runtime: BuiltinRuntime,
                                                                      tmp_path: Path) -> None:
    (tmp_path / "bad.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelLoadFailed, match="cannot load keras model 'bad.keras': 'bad.keras' is not a readable "
                                              "Keras model"):
        await tf_runtime.load_model("k", ModelInfo(type="keras", path=str(tmp_path / "bad.keras")))
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n garbage")
    with pytest.raises(ModelLoadFailed, match="'bad.h5' is not a readable Keras model"):
        await tf_runtime.load_model("h", ModelInfo(type="keras", path=str(tmp_path / "bad.h5")))
    saved = tmp_path / "broken.savedmodel"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"\x00garbage")
    with pytest.raises(ModelLoadFailed, match="cannot load tensorflow model 'broken.savedmodel': 'broken.savedmodel' "
                                              "is not a readable SavedModel"):
        await tf_runtime.load_model("s", ModelInfo(type="tensorflow", path=str(saved)))
    assert tf_runtime.loaded_models() == {}


# -- openvino_ir (.xml + .bin) ----------------------------------------------------------------------


async def test_openvino_ir_loads_serves_and_reports_its_ports(runtime: BuiltinRuntime, tmp_path: Path) -> None:
    from format_models import make_openvino

    xml = make_openvino(tmp_path / "ov")
    assert detect_model_type(xml.parent) == "openvino_ir"
    result = await runtime.load_model("ov", ModelInfo(type="openvino_ir", path=str(xml.parent)))
    assert result.size_bytes >= xml.with_suffix(".bin").stat().st_size
    assert meta_dict(await runtime.model_metadata("ov")) == {
        "platform": "openvino_ir", "inputs": [("features", "FP32", [-1, 4])], "outputs": [("probs", "FP32", [-1, 3])]}
    for name, arr in (("features", X), ("input-0", X.astype(np.float64))):
        np.testing.assert_allclose((await infer(runtime, "ov", {name: arr}))["probs"], expected(), rtol=1e-5)
    with pytest.raises(InvalidArgument, match="input 'features' of model 'ov' has 5 features; the model expects 4"):
        await infer(runtime, "ov", {"features": np.ones((1, 5), np.float32)})


async def test_bad_openvino_files_are_clear_load_failures(runtime: BuiltinRuntime, tmp_path: Path) -> None:
    from format_models import make_openvino

    xml = make_openvino(tmp_path / "nobin")
    xml.with_suffix(".bin").unlink()
    with pytest.raises(ModelLoadFailed, match="cannot load openvino_ir model 'model.xml': 'model.xml' has no weights "
                                              "file 'model.bin' beside it"):
        await runtime.load_model("a", ModelInfo(type="openvino_ir", path=str(xml.parent)))
    xml.with_suffix(".bin").write_bytes(b"")
    with pytest.raises(ModelLoadFailed, match="the weights file 'model.bin' is empty"):
        await runtime.load_model("b", ModelInfo(type="openvino_ir", path=str(xml.parent)))
    notir = tmp_path / "notir"
    notir.mkdir()
    (notir / "model.xml").write_text("<project><name>not a network</name></project>")
    (notir / "model.bin").write_bytes(b"\x00" * 16)
    with pytest.raises(ModelLoadFailed, match=r"'model.xml' is not an OpenVINO IR file \(no <net> element\)"):
        await runtime.load_model("c", ModelInfo(type="openvino_ir", path=str(notir)))
    (notir / "model.xml").write_text('<?xml version="1.0"?><net name="x" version="11"><layers><layer id="0"')
    with pytest.raises(ModelLoadFailed, match="'model.xml' is not a readable OpenVINO IR model"):
        await runtime.load_model("d", ModelInfo(type="openvino_ir", path=str(notir)))
    assert runtime.loaded_models() == {}


# -- startup cost ----------------------------------------------------------------------------------


def test_no_framework_is_imported_until_a_model_of_its_format_loads(tmp_path: Path) -> None:
    """The mesh and the runtime start, and serve other formats, without importing torch,
    TensorFlow, Keras or OpenVINO (seconds and hundreds of MB each)."""
    import subprocess

    (tmp_path / "m.string").write_text("hello ")
    script = f"""
import asyncio, sys
import kserve_mesh.server.mesh_server, kserve_mesh.runtime.builtin, kserve_mesh.model
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.runtime.builtin import BuiltinRuntime, LocalFetcher

async def main():
    rt = BuiltinRuntime(fetcher=LocalFetcher([{str(tmp_path)!r}]))
    await rt.load_model("s", ModelInfo(type="", path={str(tmp_path / "m.string")!r}))
    await rt.close()

asyncio.run(main())
print(sorted(m for m in ("torch", "tensorflow", "keras", "openvino") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
