"""Model type resolution, file discovery and the loaders of every built-in format, on real models."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from kserve_mesh.core.errors import ModelLoadFailed
from kserve_mesh.runtime.builtin import detect_model_type, find_model_file, load_model_file, resolve_model_spec

MODEL_IDS = ["sklearn-iris", "xgboost-iris", "lightgbm-iris", "onnx-iris", "string-1"]


@pytest.mark.parametrize(
    ("model_id", "expected"),
    [("sklearn-iris", "sklearn"), ("xgboost-iris", "xgboost"), ("lightgbm-iris", "lightgbm"),
     ("onnx-iris", "onnx"), ("string-2", "string")],
)
def test_detect_model_type_of_directory_and_file(models_dir: Path, model_id: str, expected: str) -> None:
    directory = models_dir / model_id
    assert detect_model_type(directory) == expected
    (file,) = [f for f in directory.iterdir()]
    assert detect_model_type(file) == expected


def test_detect_model_type_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadFailed, match="does not exist"):
        detect_model_type(tmp_path / "missing")
    with pytest.raises(ModelLoadFailed, match="no model file"):
        detect_model_type(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadFailed, match="weights.bin"):
        detect_model_type(tmp_path / "weights.bin")
    (tmp_path / "a.onnx").write_bytes(b"x")
    (tmp_path / "b.joblib").write_bytes(b"x")
    with pytest.raises(ModelLoadFailed, match="several model types: onnx, sklearn"):
        detect_model_type(tmp_path)


def test_find_model_file_prefers_the_format_extension_and_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / "model.joblib").write_bytes(b"x")
    (tmp_path / "README").write_text("notes")
    (tmp_path / ".meta").write_text("{}")
    assert find_model_file(tmp_path, "sklearn").name == "model.joblib"
    with pytest.raises(ModelLoadFailed, match="no onnx model file"):
        find_model_file(tmp_path, "onnx")
    nested = tmp_path / "nested"
    (nested / "1").mkdir(parents=True)
    (nested / "1" / "model.onnx").write_bytes(b"x")
    assert find_model_file(nested, "onnx").name == "model.onnx"  # one level down (versioned layout)


def test_resolve_plain_and_modelmesh_serving_types() -> None:
    assert resolve_model_spec("sklearn", "").model_type == "sklearn"
    assert resolve_model_spec("Scikit-Learn", "myStorage").storage_key == "myStorage"
    assert resolve_model_spec("", "").model_type == ""
    key = '{"model_type": {"name": "lightgbm", "version": "3"}, "storage_key": "minio", "disk_size_bytes": 1234}'
    spec = resolve_model_spec("rt:triton-2.x", key)
    assert (spec.model_type, spec.storage_key, spec.disk_size_bytes) == ("lightgbm", "minio", 1234)
    assert resolve_model_spec("onnx", '{"storage_key": "s"}').model_type == "onnx"


@pytest.mark.parametrize(
    ("model_type", "key", "message"),
    [
        ("pmml", "", "unsupported model type 'pmml'"),
        ("rt:mlserver", "plainkey", "model key must then be a JSON object"),
        ("sklearn", "{not json", "does not parse"),
        ("rt:mlserver", '{"model_type": {"name": "mleap"}}', "unsupported model type 'mleap'"),
    ],
)
def test_resolve_rejects_unknown_types_clearly(model_type: str, key: str, message: str) -> None:
    with pytest.raises(ModelLoadFailed, match=message):
        resolve_model_spec(model_type, key)


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_loaders_predict_the_expected_outputs(
    models_dir: Path, samples: dict[str, Any], make_models: ModuleType, model_id: str
) -> None:
    sample = samples[model_id]
    model_type = sample["type"]
    model = load_model_file(model_type, find_model_file(models_dir / model_id, model_type))
    assert model.model_type == model_type
    inputs = make_models.arrays_of(sample["request"]["inputs"])
    feed = {spec.name: inputs[spec.name] for spec in model.inputs}
    outputs = model.predict(feed)
    expected = make_models.arrays_of(sample["expected"]["outputs"])
    assert list(outputs) == list(expected)
    for name, want in expected.items():
        got = outputs[name]
        assert got.shape == want.shape
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        else:
            assert got.tolist() == want.tolist()


def test_loader_metadata_of_each_format(models_dir: Path) -> None:
    sk = load_model_file("sklearn", models_dir / "sklearn-iris" / "model.joblib")
    assert [(s.name, s.datatype, s.shape) for s in sk.inputs] == [("input-0", "FP64", (-1, 4))]
    assert [(s.name, s.datatype, s.shape) for s in sk.outputs] == [("output-0", "INT64", (-1,))]
    xgb = load_model_file("xgboost", models_dir / "xgboost-iris" / "model.json")
    assert [(s.datatype, s.shape) for s in xgb.inputs + xgb.outputs] == [("FP32", (-1, 4)), ("FP32", (-1, 3))]
    lgb = load_model_file("lightgbm", models_dir / "lightgbm-iris" / "model.txt")
    assert [(s.datatype, s.shape) for s in lgb.inputs + lgb.outputs] == [("FP64", (-1, 4)), ("FP64", (-1, 3))]
    onnx = load_model_file("onnx", models_dir / "onnx-iris" / "model.onnx")
    assert [(s.name, s.datatype, s.shape) for s in onnx.inputs] == [("input-0", "FP32", (-1, 4))]
    assert [(s.name, s.datatype) for s in onnx.outputs] == [("label", "INT64"), ("probabilities", "FP32")]
    string = load_model_file("string", models_dir / "string-1" / "model.string")
    assert [(s.datatype, s.shape) for s in string.inputs + string.outputs] == [("BYTES", (-1,)), ("BYTES", (-1,))]
    assert string.fixed_size_bytes() == 2048 + len(b"string-1:")


@pytest.mark.parametrize(
    ("model_type", "file_name"),
    [("sklearn", "model.joblib"), ("xgboost", "model.json"), ("lightgbm", "model.txt"), ("onnx", "model.onnx")],
)
def test_corrupt_files_fail_as_load_failures(tmp_path: Path, model_type: str, file_name: str) -> None:
    path = tmp_path / file_name
    path.write_bytes(b"this is not a model")
    with pytest.raises(ModelLoadFailed, match=f"cannot load {model_type} model '{file_name}'"):
        load_model_file(model_type, path)


def test_a_pickle_without_predict_is_refused(tmp_path: Path) -> None:
    import joblib

    joblib.dump({"not": "a model"}, tmp_path / "model.joblib")
    with pytest.raises(ModelLoadFailed, match="holds a dict, which has no predict"):
        load_model_file("sklearn", tmp_path / "model.joblib")
