"""What the built-in runtime refuses before (and when) a model predicts: input names and datatypes
checked against the model's metadata, empty tensors, and a model rejecting the data itself (NaN for
sklearn) -- each an InvalidArgument naming the input or the model, never an internal error."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kserve_mesh.core.errors import InternalError, InvalidArgument
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.protocol import tensors
from kserve_mesh.runtime.builtin import BuiltinRuntime, RuntimeConfig
from kserve_mesh.runtime.builtin.models import INPUT_ALIASES, LoadedModel, TensorSpec, accepted_datatypes
from kserve_mesh.runtime.builtin.runtime import _predict

ROW = [[5.1, 3.5, 1.4, 0.2]]


class _Files:
    """The example model files as they are (what is fetched is not under test here)."""

    def fetch(self, model_id: str, path: str, key: str = "") -> Path:
        return Path(path)

    def release(self, model_id: str) -> None:
        return None


@pytest.fixture
async def runtime(models_dir: Path) -> Any:
    rt = BuiltinRuntime(RuntimeConfig(capacity_bytes=1 << 30), _Files())
    for model_id, model_type, folder in (("sk", "sklearn", "sklearn-iris"), ("xgb", "xgboost", "xgboost-iris"),
                                         ("onnx", "onnx", "onnx-iris"), ("str", "string", "string-1")):
        await rt.load_model(model_id, ModelInfo(type=model_type, path=str(models_dir / folder)))
    yield rt
    await rt.close()


def _request(model_id: str, name: str, arr: Any) -> Any:
    return tensors.encode_request(model_id, {name: np.asarray(arr)})


@pytest.mark.parametrize(
    ("model_id", "name", "arr", "message"),
    [
        ("sk", "zzz", np.array(ROW), "model 'sk' has no input 'zzz': its input is 'input-0' (or input_0, input__0, predict)"),
        ("sk", "input-0", np.array([[True, False, True, True]]), "has datatype BOOL; the model expects FP64 (or FP32, "),
        ("sk", "input-0", np.array(ROW, dtype=np.float16), "has datatype FP16; the model expects FP64"),
        ("sk", "input-0", np.array([[b"a", b"b", b"c", b"d"]], dtype=object), "has datatype BYTES"),
        ("sk", "input-0", np.zeros((0, 4)), "has shape [0, 4]: a dimension of 0 leaves nothing to predict"),
        ("str", "input-0", np.array([], dtype=object), "has shape [0]: a dimension of 0"),
        ("str", "other", np.array([b"x"], dtype=object), "model 'str' has no input 'other'"),
        ("onnx", "predict", np.array(ROW, dtype=np.float32), "model 'onnx' has no input 'predict': its input is 'input-0'"),
        ("sk", "input-0", np.array([[np.nan, 3.5, 1.4, 0.2]]), "model 'sk' rejected the input: Input X contains NaN"),
        ("sk", "input-0", np.array([[np.inf, 3.5, 1.4, 0.2]]), "model 'sk' rejected the input: Input X contains infinity"),
    ],
    ids=["unknown-name", "bool-for-fp64", "fp16-for-fp64", "bytes-for-fp64", "zero-rows", "zero-strings",
         "string-unknown-name", "onnx-strict-name", "nan", "inf"],
)
async def test_inputs_the_model_does_not_take_are_invalid_arguments(
    runtime: BuiltinRuntime, model_id: str, name: str, arr: Any, message: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await runtime.infer(_request(model_id, name, arr))
    assert message in str(caught.value)


async def test_inputs_the_model_takes(runtime: BuiltinRuntime) -> None:
    for name in sorted(INPUT_ALIASES):  # the names KServe, ModelMesh/MLServer and Triton examples use
        response = await runtime.infer(_request("sk", name, np.array(ROW)))
        assert tensors.decode_outputs(response)["output-0"].tolist() == [0]
    for arr in (np.array(ROW, dtype=np.float32), np.array([[5, 3, 1, 0]], dtype=np.int64),
                np.array([[5, 3, 1, 0]], dtype=np.uint8)):
        await runtime.infer(_request("sk", "input-0", arr))
    onnx_name = (await runtime.model_metadata("onnx")).inputs[0].name
    response = await runtime.infer(_request("onnx", onnx_name, np.array(ROW)))  # FP64 to an FP32 model: cast
    assert "label" in tensors.decode_outputs(response)
    # XGBoost reads NaN as a missing value: the model's own rule, so it answers
    response = await runtime.infer(_request("xgb", "input-0", np.array([[np.nan, 3.5, 1.4, 0.2]], dtype=np.float32)))
    assert tensors.decode_outputs(response)["output-0"].shape[0] == 1


def test_accepted_datatypes() -> None:
    assert accepted_datatypes("FP64") >= {"FP32", "FP64", "INT64", "UINT8"}
    assert not accepted_datatypes("FP64") & {"BOOL", "FP16", "BYTES"}
    assert accepted_datatypes("FP16") == {"FP16", "FP32", "FP64"}
    assert accepted_datatypes("INT32") == {"INT8", "INT16", "INT32", "UINT8", "UINT16"}
    assert accepted_datatypes("UINT8") == {"UINT8"}
    assert accepted_datatypes("BOOL") == {"BOOL"}
    assert accepted_datatypes("BYTES") == {"BYTES"}


class _Raising(LoadedModel):
    inputs = (TensorSpec("x", "FP64", (-1,)),)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise self.exc


def test_a_model_rejecting_its_input_is_an_invalid_argument_in_its_own_words() -> None:
    feed = {"x": np.ones(1)}
    with pytest.raises(InvalidArgument, match="^model 'm' rejected the input: bad value$"):
        _predict("m", _Raising(ValueError("bad value")), feed)
    with pytest.raises(InvalidArgument, match="^model 'm' rejected the input: must be str"):
        _predict("m", _Raising(TypeError("must be str, not int")), feed)
    with pytest.raises(InvalidArgument) as caught:
        _predict("m", _Raising(ValueError("x" * 10_000)), feed)
    assert len(str(caught.value)) < 600


def test_a_model_failing_otherwise_is_internal_with_the_details_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="kserve_mesh.runtime.builtin.runtime"), pytest.raises(InternalError) as caught:
        _predict("m", _Raising(RuntimeError("secret /internal/path")), {"x": np.ones(1)})
    assert str(caught.value) == "model 'm' failed to predict (RuntimeError); see the server log"
    assert "secret /internal/path" in caplog.text
