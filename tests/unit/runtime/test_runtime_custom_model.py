"""Custom Python models (``kserve_mesh.model.Model``) in the built-in runtime: a folder's
``model.py`` or an installed class named by ``model-settings.json``; declared metadata checked per
request; and every fault of user code (import error, exception in load or predict, sys.exit, a
wrong return type) a clear load failure or inference error naming the model, with the runtime
serving on."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from format_models import X, expected, make_custom, make_custom_source

from kserve_mesh.core.errors import InternalError, InvalidArgument, ModelLoadFailed
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.protocol import tensors
from kserve_mesh.runtime.builtin import BuiltinRuntime, LocalFetcher, RuntimeConfig, detect_model_type


@pytest.fixture
async def runtime(tmp_path: Path) -> Any:
    rt = BuiltinRuntime(RuntimeConfig(capacity_bytes=1 << 30), LocalFetcher([tmp_path]))
    yield rt
    await rt.close()


async def infer(rt: BuiltinRuntime, model_id: str, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    return tensors.decode_outputs(await rt.infer(tensors.encode_request(model_id, inputs)))


async def test_a_model_py_folder_loads_serves_and_unloads(runtime: BuiltinRuntime, tmp_path: Path) -> None:
    folder = make_custom(tmp_path / "custom", labels=["setosa", "versicolor", "virginica"])
    assert detect_model_type(folder) == "python"
    result = await runtime.load_model("c", ModelInfo(type="", path=str(folder)))
    assert result.size_bytes > 0
    meta = await runtime.model_metadata("c")
    assert meta.platform == "kserve-mesh_python"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("x", "FP32", [-1, 4])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("probs", "FP32", [-1, 3]), ("label", "BYTES", [-1])]
    out = await infer(runtime, "c", {"x": X.astype(np.float64)})  # cast to the declared FP32
    np.testing.assert_allclose(out["probs"], expected(), rtol=1e-5)
    assert out["label"].tolist() == [b"setosa", b"virginica"]  # parameters from model-settings.json
    out = await infer(runtime, "c", {"input-0": X})  # a lone declared input answers to the aliases
    assert out["probs"].shape == (2, 3)
    with pytest.raises(InvalidArgument, match="input 'x' of model 'c' has 3 features; the model expects 4"):
        await infer(runtime, "c", {"x": np.ones((1, 3), np.float32)})
    with pytest.raises(InvalidArgument, match="model 'c' rejected the input: x must not hold NaN"):
        await infer(runtime, "c", {"x": np.full((1, 4), np.nan, np.float32)})
    module_names = [m for m in sys.modules if m.startswith("kserve_mesh_custom_")]
    assert len(module_names) == 1
    await runtime.unload_model("c")
    assert module_names[0] not in sys.modules


async def test_two_models_with_the_same_class_names_stay_apart(runtime: BuiltinRuntime, tmp_path: Path) -> None:
    src = """
        from kserve_mesh.model import Model

        class Answer(Model):
            def predict(self, inputs):
                return {{"y": inputs["x"] * {factor}}}
        """
    make_custom_source(tmp_path / "two", src.format(factor=2))
    make_custom_source(tmp_path / "three", src.format(factor=3))
    await runtime.load_model("two", ModelInfo(type="python", path=str(tmp_path / "two")))
    await runtime.load_model("three", ModelInfo(type="python", path=str(tmp_path / "three")))
    # no inputs declared: any tensor is passed as sent, its own datatype kept
    assert (await infer(runtime, "two", {"x": np.array([1, 2], np.int64)}))["y"].tolist() == [2, 4]
    assert (await infer(runtime, "three", {"x": np.array([1, 2], np.int64)}))["y"].tolist() == [3, 6]
    assert list((await runtime.model_metadata("two")).inputs) == []


async def test_an_installed_class_named_in_model_settings(runtime: BuiltinRuntime, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "site" / "acme_models"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "import numpy as np\nfrom kserve_mesh.model import Model, Tensor\n\n"
        "class Scale(Model):\n"
        "    outputs = [Tensor('scaled', 'FP64', [-1])]\n"
        "    def predict(self, inputs):\n"
        "        return inputs['x'] * self.parameters['factor']\n"  # one array: named after the one output
        "class NotAModel:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    folder = tmp_path / "scale"
    folder.mkdir()
    (folder / "model-settings.json").write_text('{"implementation": "acme_models.Scale", "parameters": {"factor": 10}}')
    await runtime.load_model("scale", ModelInfo(type="python", path=str(folder)))
    assert (await infer(runtime, "scale", {"x": np.array([1.5], np.float64)}))["scaled"].tolist() == [15.0]
    for implementation, message in (
        ("acme_models.NotAModel", "acme_models.NotAModel is not a subclass of kserve_mesh.model.Model"),
        ("os.system; rm", "is not a dotted class path"),
        ("no_such_package_here.Model", "importing no_such_package_here raised ModuleNotFoundError"),
    ):
        (folder / "model-settings.json").write_text(f'{{"implementation": "{implementation}"}}')
        with pytest.raises(ModelLoadFailed, match=f"cannot load python model 'bad': .*{message}"):
            await runtime.load_model("bad", ModelInfo(type="python", path=str(folder)))


@pytest.mark.parametrize(("source", "message"), [
    ("import no_such_module_anywhere\n",
     r"importing model.py raised ModuleNotFoundError: No module named 'no_such_module_anywhere' \(at model.py, line 1\)"),
    ("def broken(:\n", r"importing model.py raised SyntaxError"),
    ("x = 1\n", "model.py defines no subclass of kserve_mesh.model.Model"),
    ("from kserve_mesh.model import Model\nclass A(Model): pass\nclass B(Model): pass\n",
     r"model.py defines several Model subclasses \(A, B\); name one as 'implementation' in model-settings.json"),
    (("from kserve_mesh.model import Model\nclass A(Model):\n    def load(self):\n"
     "        raise FileNotFoundError('weights.bin is missing')\n"),
     r"A.load\(\) raised FileNotFoundError: weights.bin is missing \(at model.py, line 4\)"),
    ("import sys\nfrom kserve_mesh.model import Model\nclass A(Model):\n    def load(self):\n        sys.exit(3)\n",
     r"A.load\(\) raised SystemExit: 3 \(at model.py, line 5\)"),
    ("from kserve_mesh.model import Model\nclass A(Model):\n    def load(self):\n        raise KeyboardInterrupt\n",
     r"A.load\(\) raised KeyboardInterrupt \(at model.py, line 4\)"),
    ("from kserve_mesh.model import Model\nclass A(Model):\n    def __init__(self):\n        pass\n",
     r"A\(\) raised TypeError"),
    ("from kserve_mesh.model import Model, Tensor\nclass A(Model):\n    inputs = [Tensor('x', 'FLOAT32', [-1])]\n",
     r"input 'x' has datatype 'FLOAT32', not a V2 datatype"),
])
async def test_faults_in_user_code_are_load_failures_naming_the_model(runtime: BuiltinRuntime, tmp_path: Path,
                                                                    source: str, message: str) -> None:
    folder = make_custom_source(tmp_path / "broken", source)
    with pytest.raises(ModelLoadFailed, match=f"cannot load python model 'broken-model': {message}"):
        await runtime.load_model("broken-model", ModelInfo(type="python", path=str(folder)))
    assert runtime.loaded_models() == {}
    assert not [m for m in sys.modules if m.startswith("kserve_mesh_custom_")]


async def test_faults_in_predict_are_errors_naming_the_model(runtime: BuiltinRuntime, tmp_path: Path) -> None:
    make_custom_source(tmp_path / "faulty", """
        import sys
        import numpy as np
        from kserve_mesh.model import InvalidInput, Model

        class Faulty(Model):
            def predict(self, inputs):
                what = int(inputs["x"][0])
                if what == 0:
                    raise InvalidInput("x[0] must not be 0")
                if what == 1:
                    raise RuntimeError("the GPU caught fire")
                if what == 2:
                    return "not a dict"
                if what == 3:
                    sys.exit(1)
                if what == 4:
                    return {"y": np.array([object()])}
                return {"y": inputs["x"]}
        """)
    await runtime.load_model("faulty", ModelInfo(type="python", path=str(tmp_path / "faulty")))
    cases = [
        (0, InvalidArgument, "model 'faulty' rejected the input: x\\[0\\] must not be 0"),
        (1, InternalError, r"model 'faulty' failed in predict\(\): RuntimeError at model.py, line 12; see the server"),
        (2, InternalError, r"model 'faulty' returned str from predict\(\); it must return a dict of output name"),
        (3, InternalError, r"model 'faulty' raised SystemExit in predict\(\)"),
    ]
    for value, error, message in cases:
        with pytest.raises(error, match=message) as info:
            await infer(runtime, "faulty", {"x": np.array([value], np.int64)})
        assert "Traceback" not in str(info.value) and "the GPU caught fire" not in str(info.value)
    with pytest.raises(InternalError, match="model 'faulty' returned output 'y' holding objects that are neither"):
        await infer(runtime, "faulty", {"x": np.array([4], np.int64)})
    # the runtime serves on
    assert (await infer(runtime, "faulty", {"x": np.array([7], np.int64)}))["y"].tolist() == [7]


async def test_a_custom_model_outside_the_allowed_roots_is_never_imported(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    marker = tmp_path / "imported"
    make_custom_source(outside / "evil", f"open({str(marker)!r}, 'w').write('ran')\n")
    (allowed / "link").symlink_to(outside / "evil")
    rt = BuiltinRuntime(RuntimeConfig(), LocalFetcher([allowed]))
    try:
        for path in (outside / "evil", allowed / "link", allowed / ".." / "outside" / "evil"):
            with pytest.raises(Exception, match="not allowed|outside|not under|escapes"):
                await rt.load_model("evil", ModelInfo(type="python", path=str(path)))
    finally:
        await rt.close()
    assert not marker.exists()
