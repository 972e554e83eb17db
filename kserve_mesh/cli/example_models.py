"""The example models: tiny models of every type the built-in runtime serves, and sample requests.

    python -m kserve_mesh.cli.example_models [OUT_DIR] [--installed-only]

Writes ``OUT/<model-id>/<model file>`` for ``sklearn-iris`` (model.joblib), ``xgboost-iris``
(model.json), ``lightgbm-iris`` (model.txt), ``onnx-iris`` (model.onnx, FP32 input) and
``string-1`` .. ``string-N`` (model.string), plus ``OUT/inputs.json``: per model its type, a valid
V2 request (REST JSON form) and the expected outputs, computed with the training libraries
themselves. Deterministic (fixed seeds, single-threaded training), a few seconds, idempotent.

Packaged so that ``kserve-mesh up`` works outside a clone and with the base install: with
``installed_only`` a model whose training libraries are missing is skipped (the string models need
nothing), and ``inputs.json`` lists the models made. ``examples/make_models.py`` is this module
under its old name (tests import the ``make_*`` functions from it).
"""


from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SEED = 0
# One iris row of each class, so a classifier's answers differ between rows.
SAMPLE_ROWS = (0, 50, 100)
STRING_MODELS = 3


def _iris() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    data = load_iris()
    return np.asarray(data.data, dtype=np.float64), np.asarray(data.target, dtype=np.int64)


def _sample() -> np.ndarray:
    x, _ = _iris()
    return x[list(SAMPLE_ROWS)]


def _tensor(name: str, datatype: str, arr: np.ndarray) -> dict[str, Any]:
    data = arr.ravel().tolist()
    if datatype == "BYTES":
        data = [v.decode() if isinstance(v, bytes) else str(v) for v in data]
    return {"name": name, "datatype": datatype, "shape": list(arr.shape), "data": data}


def _entry(model_type: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": model_type, "request": {"inputs": inputs}, "expected": {"outputs": outputs}}


def _fresh(out_dir: Path, model_id: str) -> Path:
    target = out_dir / model_id
    target.mkdir(parents=True, exist_ok=True)
    for old in target.iterdir():
        if old.is_file():
            old.unlink()
    return target


def make_sklearn(out_dir: Path, model_id: str = "sklearn-iris") -> dict[str, Any]:
    import joblib
    from sklearn.linear_model import LogisticRegression

    x, y = _iris()
    model = LogisticRegression(max_iter=1000, random_state=SEED).fit(x, y)
    joblib.dump(model, _fresh(out_dir, model_id) / "model.joblib")
    sample = _sample()
    return _entry(
        "sklearn",
        [_tensor("input-0", "FP64", sample)],
        [_tensor("output-0", "INT64", np.asarray(model.predict(sample), dtype=np.int64))],
    )


def make_xgboost(out_dir: Path, model_id: str = "xgboost-iris") -> dict[str, Any]:
    import xgboost

    x, y = _iris()
    clf = xgboost.XGBClassifier(
        n_estimators=10, max_depth=3, random_state=SEED, n_jobs=1, objective="multi:softprob"
    ).fit(x.astype(np.float32), y)
    clf.save_model(str(_fresh(out_dir, model_id) / "model.json"))
    sample = _sample().astype(np.float32)
    proba = np.asarray(clf.get_booster().inplace_predict(sample), dtype=np.float32)
    return _entry("xgboost", [_tensor("input-0", "FP32", sample)], [_tensor("output-0", "FP32", proba)])


def make_lightgbm(out_dir: Path, model_id: str = "lightgbm-iris") -> dict[str, Any]:
    import lightgbm

    x, y = _iris()
    params = {"objective": "multiclass", "num_class": 3, "num_leaves": 7, "seed": SEED,
              "num_threads": 1, "deterministic": True, "verbose": -1}
    booster = lightgbm.train(params, lightgbm.Dataset(x, label=y), num_boost_round=10)
    booster.save_model(str(_fresh(out_dir, model_id) / "model.txt"))
    sample = _sample()
    proba = np.asarray(booster.predict(sample), dtype=np.float64)
    return _entry("lightgbm", [_tensor("input-0", "FP64", sample)], [_tensor("output-0", "FP64", proba)])


def make_onnx(out_dir: Path, model_id: str = "onnx-iris") -> dict[str, Any]:
    import onnxruntime
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    x, y = _iris()
    model = LogisticRegression(max_iter=1000, random_state=SEED).fit(x.astype(np.float32), y)
    onx = to_onnx(
        model,
        initial_types=[("input-0", FloatTensorType([None, 4]))],
        options={id(model): {"zipmap": False}},
        target_opset=17,
    )
    _rename_input(onx, "input-0")  # skl2onnx writes "input_0"; keep the V2 name of the other types
    path = _fresh(out_dir, model_id) / "model.onnx"
    path.write_bytes(onx.SerializeToString())
    sample = _sample().astype(np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, {"input-0": sample})
    outputs = [
        _tensor(name, "INT64" if r.dtype == np.int64 else "FP32", np.asarray(r)) for name, r in zip(names, results)
    ]
    return _entry("onnx", [_tensor("input-0", "FP32", sample)], outputs)


def _rename_input(onx: Any, new: str) -> None:
    old = onx.graph.input[0].name
    onx.graph.input[0].name = new
    for node in onx.graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def make_string(out_dir: Path, model_id: str = "string-1") -> dict[str, Any]:
    text = f"{model_id}:".encode()
    (_fresh(out_dir, model_id) / "model.string").write_bytes(text)
    sample = np.array([b"hello", b"world"], dtype=object)
    expected = np.array([text + s for s in sample], dtype=object)
    return _entry("string", [_tensor("input-0", "BYTES", sample)], [_tensor("output-0", "BYTES", expected)])


_DTYPES = {"BOOL": np.bool_, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
           "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
           "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}


def arrays_of(tensors: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Numpy arrays of tensors in the ``inputs.json`` form (name, datatype, shape, data); BYTES
    tensors become object arrays of ``bytes``."""
    out: dict[str, np.ndarray] = {}
    for t in tensors:
        if t["datatype"] == "BYTES":
            arr = np.empty(len(t["data"]), dtype=object)
            arr[:] = [d.encode() for d in t["data"]]
        else:
            arr = np.asarray(t["data"], dtype=_DTYPES[t["datatype"]])
        out[t["name"]] = arr.reshape(t["shape"])
    return out


# model id -> (maker, the libraries it trains with: a model whose libraries are missing is skipped)
TRAINED: dict[str, tuple[Callable[[Path], dict[str, Any]], tuple[str, ...]]] = {
    "sklearn-iris": (make_sklearn, ("sklearn", "joblib")),
    "xgboost-iris": (make_xgboost, ("sklearn", "xgboost")),
    "lightgbm-iris": (make_lightgbm, ("sklearn", "lightgbm")),
    "onnx-iris": (make_onnx, ("sklearn", "skl2onnx", "onnx", "onnxruntime")),
}


def missing_libraries(model_id: str) -> list[str]:
    """The training libraries of a trained example model that are not installed."""
    return [lib for lib in TRAINED[model_id][1] if importlib.util.find_spec(lib) is None]


def make_all(out_dir: Path, string_models: int = STRING_MODELS, *, installed_only: bool = False) -> dict[str, Any]:
    """Write every example model and ``inputs.json`` under ``out_dir``; return the inputs map.
    ``installed_only``: skip the models whose training libraries are not installed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs: dict[str, Any] = {}
    for model_id, (make, _libs) in TRAINED.items():
        if installed_only and missing_libraries(model_id):
            continue
        inputs[model_id] = make(out_dir)
    for n in range(1, string_models + 1):
        inputs[f"string-{n}"] = make_string(out_dir, f"string-{n}")
    (out_dir / "inputs.json").write_text(json.dumps(inputs, indent=1, sort_keys=True) + "\n")
    return inputs


def main(argv: list[str] | None = None, default_out: Path | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    installed_only = "--installed-only" in args
    args = [a for a in args if a != "--installed-only"]
    out_dir = Path(args[0]) if args else (default_out or Path("examples/models"))
    inputs = make_all(out_dir, installed_only=installed_only)
    print(f"wrote {len(inputs)} models and inputs.json to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
