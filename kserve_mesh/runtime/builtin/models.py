"""What a loaded model looks like to the built-in runtime, and how a model's type and file are found.

Every loader (``loaders.py``) returns a ``LoadedModel``: its V2 metadata (``TensorSpec`` inputs and
outputs) and a blocking ``predict`` on numpy arrays. The runtime validates requests against the
metadata before calling ``predict``, so loaders can assume well-formed inputs.

Model types arrive in two shapes:

- plainly, ``sklearn`` / ``xgboost`` / ``lightgbm`` / ``onnx`` / ``string`` (an empty type means
  "detect it from the file extension");
- as ModelMesh-serving passes them: ``rt:<runtime-name>`` in the type, and the real format in the
  model key, a JSON object such as ``{"model_type": {"name": "sklearn", "version": "1"},
  "storage_key": "localMinIO", "storage_params": {...}, "disk_size_bytes": 1234}``.

``resolve_model_spec`` turns either into a ``ModelSpec`` (format, storage key, disk size hint).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kserve_mesh.core.errors import ModelLoadFailed

logger = logging.getLogger(__name__)

SKLEARN = "sklearn"
XGBOOST = "xgboost"
LIGHTGBM = "lightgbm"
ONNX = "onnx"
STRING = "string"

# File extensions per format, in order of preference. ``.txt`` is LightGBM's text format, so the
# tiny string test model uses ``.string`` (or ``.str``).
EXTENSIONS: dict[str, tuple[str, ...]] = {
    SKLEARN: (".joblib", ".pkl", ".pickle"),
    XGBOOST: (".json", ".ubj"),
    LIGHTGBM: (".txt",),
    ONNX: (".onnx",),
    STRING: (".string", ".str"),
}

_ALIASES = {
    "sklearn": SKLEARN,
    "scikit-learn": SKLEARN,
    "scikit_learn": SKLEARN,
    "xgboost": XGBOOST,
    "xgb": XGBOOST,
    "lightgbm": LIGHTGBM,
    "lgbm": LIGHTGBM,
    "onnx": ONNX,
    "string": STRING,
}

NUMERIC_DATATYPES = frozenset(
    {"BOOL", "FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
INTEGER_DATATYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
BYTES_DATATYPES = frozenset({"BYTES"})
_DTYPES = {"BOOL": np.bool_, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "INT8": np.int8,
           "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8, "UINT16": np.uint16,
           "UINT32": np.uint32, "UINT64": np.uint64}

INPUT_ALIASES = frozenset({"input-0", "input_0", "input__0", "predict"})
"""Names an input answers to when its name is ours, not the model file's (sklearn, xgboost, lightgbm
and string models do not name their inputs): KServe's examples say ``input-0``, ModelMesh's and
MLServer's ``predict``, Triton's ``input__0``."""


def accepted_datatypes(datatype: str) -> frozenset[str]:
    """The request datatypes an input of ``datatype`` takes (each cast to the model's dtype).

    Floating-point inputs take FP32 and FP64 (clients produce either by default) and integers;
    FP16 inputs take FP16, FP32 and FP64; integer inputs take the integer datatypes that cast to
    theirs without loss; BOOL and BYTES take only themselves. Anything else (a BOOL or FP16
    tensor for an FP64 model, say) is a request meant for another model and is refused."""
    if datatype in ("FP32", "FP64"):
        return frozenset({"FP32", "FP64"}) | INTEGER_DATATYPES
    if datatype == "FP16":
        return frozenset({"FP16", "FP32", "FP64"})
    if datatype in INTEGER_DATATYPES:
        target = _DTYPES[datatype]
        return frozenset(d for d in INTEGER_DATATYPES if np.can_cast(_DTYPES[d], target, "safe"))
    return frozenset({datatype})


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output in a model's V2 metadata.

    ``shape`` uses -1 for a variable dimension (the batch). ``accepts`` lists the request datatypes
    the model takes for this input (numeric inputs are cast to ``dtype``). ``aliases`` are other
    names a request may give this input (``INPUT_ALIASES`` where the name is ours).
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    accepts: frozenset[str] = frozenset()
    dtype: Any = None
    aliases: frozenset[str] = frozenset()


class LoadedModel:
    """A model in memory. Subclasses set the metadata in ``__init__`` and implement ``predict``."""

    model_type: str = ""
    platform: str = ""
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on validated inputs keyed by the names in ``self.inputs``. Blocking."""
        raise NotImplementedError

    def fixed_size_bytes(self) -> int | None:
        """A known in-memory size, for models too small for an RSS measurement to mean anything."""
        return None

    def warm_up(self) -> None:
        """Run one tiny prediction so lazy allocations happen inside the measured load.

        Only for models whose inputs are numeric with every non-batch dimension known; any
        failure is logged and ignored (a model may reject zeros, and still serve real inputs).
        """
        feed: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            if spec.dtype is None or any(d < 0 for d in spec.shape[1:]) or not spec.shape:
                return
            feed[spec.name] = np.zeros((1, *spec.shape[1:]), dtype=spec.dtype)
        try:
            self.predict(feed)
        except Exception as exc:  # noqa: BLE001 - a warm-up is best effort
            logger.debug("warm-up of a %s model failed: %s", self.model_type, exc)

    def close(self) -> None:
        """Release what the model holds beyond Python references (sessions, handles)."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A load request resolved: the format, the storage key for the fetcher, an optional size hint."""

    model_type: str  # one of the formats above, or "" to detect from the file
    storage_key: str = ""
    disk_size_bytes: int = 0


def normalize_type(name: str) -> str:
    """Map a format name (any case, a few aliases) to one of ours; ``""`` stays ``""``."""
    cleaned = name.strip().lower()
    if not cleaned:
        return ""
    base = cleaned.split(":", 1)[0] if not cleaned.startswith("rt:") else cleaned
    found = _ALIASES.get(base)
    if found is None:
        raise ModelLoadFailed(
            f"unsupported model type '{name}'; the built-in runtime serves {', '.join(sorted(EXTENSIONS))}"
        )
    return found


def resolve_model_spec(model_type: str, model_key: str) -> ModelSpec:
    """Resolve the type and key of a loadModel call (plain or ModelMesh-serving style)."""
    key_doc = _parse_key(model_key)
    if key_doc is None:
        if model_type.strip().lower().startswith("rt:"):
            raise ModelLoadFailed(
                f"model type '{model_type}' names a runtime; the model key must then be a JSON object "
                "with model_type.name (got a plain key)"
            )
        return ModelSpec(normalize_type(model_type), storage_key=model_key)
    storage_key = str(key_doc.get("storage_key") or "")
    disk_size = key_doc.get("disk_size_bytes") or 0
    format_name = ""
    mt = key_doc.get("model_type")
    if isinstance(mt, dict):
        format_name = str(mt.get("name") or "")
    elif isinstance(mt, str):
        format_name = mt
    if not format_name and not model_type.strip().lower().startswith("rt:"):
        format_name = model_type
    try:
        disk_size_bytes = max(0, int(disk_size))
    except (TypeError, ValueError):
        disk_size_bytes = 0
    return ModelSpec(normalize_type(format_name), storage_key=storage_key, disk_size_bytes=disk_size_bytes)


def _parse_key(model_key: str) -> dict[str, Any] | None:
    stripped = model_key.strip()
    if not stripped.startswith("{"):
        return None
    try:
        doc = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise ModelLoadFailed(f"model key looks like JSON but does not parse: {exc}") from exc
    return doc if isinstance(doc, dict) else None


def detect_model_type(path: str | Path) -> str:
    """The format of a model file (or of the one model file in a directory), by extension.

    Raises ``ModelLoadFailed`` when nothing (or more than one format) is recognised.
    """
    p = Path(path)
    if p.is_file():
        found = _type_of_file(p)
        if found is None:
            raise ModelLoadFailed(f"cannot tell the model type of '{p.name}' from its extension")
        return found
    if p.is_dir():
        types = {t for f in _model_files(p) if (t := _type_of_file(f)) is not None}
        if len(types) == 1:
            return types.pop()
        if not types:
            raise ModelLoadFailed(f"no model file with a known extension in directory '{p}'")
        raise ModelLoadFailed(f"directory '{p}' holds files of several model types: {', '.join(sorted(types))}")
    raise ModelLoadFailed(f"model path '{p}' does not exist")


def find_model_file(path: str | Path, model_type: str) -> Path:
    """The model file at ``path``: the path itself, or the one file of that type in a directory."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise ModelLoadFailed(f"model path '{p}' does not exist")
    files = _model_files(p)
    for ext in EXTENSIONS.get(model_type, ()):
        matches = [f for f in files if f.name.lower().endswith(ext)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(sorted(f.name for f in matches))
            raise ModelLoadFailed(f"directory '{p}' holds several {model_type} model files: {names}")
    if len(files) == 1:
        return files[0]
    exts = " ".join(EXTENSIONS.get(model_type, ()))
    raise ModelLoadFailed(f"no {model_type} model file ({exts}) in directory '{p}'")


def _model_files(directory: Path) -> list[Path]:
    """Regular files in ``directory`` and one level below, skipping hidden files (``.meta`` etc.)."""
    files = [f for f in directory.iterdir() if f.is_file() and not f.name.startswith(".")]
    if not files:
        for sub in directory.iterdir():
            if sub.is_dir() and not sub.name.startswith("."):
                files.extend(f for f in sub.iterdir() if f.is_file() and not f.name.startswith("."))
    return sorted(files)


def _type_of_file(path: Path) -> str | None:
    name = path.name.lower()
    for model_type, exts in EXTENSIONS.items():
        if name.endswith(exts):
            return model_type
    return None
