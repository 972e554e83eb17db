"""What a loaded model looks like to the built-in runtime, and how a model's type and file are found.

Every loader (``loaders.py``) returns a ``LoadedModel``: its V2 metadata (``TensorSpec`` inputs and
outputs) and a blocking ``predict`` on numpy arrays. The runtime validates requests against the
metadata before calling ``predict``, so loaders can assume well-formed inputs.

Model types arrive in two shapes:

- plainly, ``sklearn`` / ``xgboost`` / ``lightgbm`` / ``onnx`` / ``pytorch`` / ``tensorflow`` /
  ``keras`` / ``openvino_ir`` / ``python`` / ``string`` (an empty type means "detect it from the
  files": extensions, a ``saved_model.pb``, a ``model.py``);
- as ModelMesh-serving passes them: ``rt:<runtime-name>`` in the type, and the real format in the
  model key, a JSON object such as ``{"model_type": {"name": "sklearn", "version": "1"},
  "storage_key": "localMinIO", "storage_params": {...}, "disk_size_bytes": 1234}``.

``resolve_model_spec`` turns either into a ``ModelSpec`` (format, storage key, disk size hint, and
the model's own adaptive batching settings: ``"batching": {"max_batch_size": 8,
"max_batch_delay_ms": 2}`` in the key, ``batching.py``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kserve_mesh.core.batching import MAX_BATCH_DELAY_MS_LIMIT, MAX_BATCH_SIZE_LIMIT
from kserve_mesh.core.errors import ModelLoadFailed

logger = logging.getLogger(__name__)

SKLEARN = "sklearn"
XGBOOST = "xgboost"
LIGHTGBM = "lightgbm"
ONNX = "onnx"
STRING = "string"
PYTORCH = "pytorch"
TENSORFLOW = "tensorflow"
KERAS = "keras"
OPENVINO = "openvino_ir"
PYTHON = "python"

SAVED_MODEL_FILE = "saved_model.pb"
"""The file that marks a TensorFlow SavedModel directory (the model is the directory)."""
CUSTOM_MODEL_FILE = "model.py"
"""The file that marks a custom Python model directory (``kserve_mesh.model``)."""
CUSTOM_SETTINGS_FILE = "model-settings.json"
"""A custom model's settings: ``implementation`` (an importable class) and ``parameters``."""

# File extensions per format, in order of preference. ``.txt`` is LightGBM's text format, so the
# tiny string test model uses ``.string`` (or ``.str``).
EXTENSIONS: dict[str, tuple[str, ...]] = {
    SKLEARN: (".joblib", ".pkl", ".pickle"),
    XGBOOST: (".json", ".ubj"),
    LIGHTGBM: (".txt",),
    ONNX: (".onnx",),
    STRING: (".string", ".str"),
    PYTORCH: (".pt", ".pth", ".torchscript"),
    KERAS: (".keras", ".h5", ".hdf5"),
    TENSORFLOW: (SAVED_MODEL_FILE,),
    OPENVINO: (".xml",),
    PYTHON: (CUSTOM_MODEL_FILE,),
}

# Formats whose model is a directory, found by a marker file in it.
_DIRECTORY_FORMATS = {TENSORFLOW: SAVED_MODEL_FILE, PYTHON: CUSTOM_MODEL_FILE}

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
    "pytorch": PYTORCH,
    "torch": PYTORCH,
    "torchscript": PYTORCH,
    "tensorflow": TENSORFLOW,
    "tf": TENSORFLOW,
    "savedmodel": TENSORFLOW,
    "saved_model": TENSORFLOW,
    "keras": KERAS,
    "openvino_ir": OPENVINO,
    "openvino": OPENVINO,
    "openvino-ir": OPENVINO,
    "python": PYTHON,
    "custom": PYTHON,
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
    names a request may give this input (``INPUT_ALIASES`` where the name is ours). ``any_rank``:
    the model file does not say how many dimensions the input has (a TorchScript file without a
    config.pbtxt), so any shape is passed on and the metadata shows ``shape``.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    accepts: frozenset[str] = frozenset()
    dtype: Any = None
    aliases: frozenset[str] = frozenset()
    any_rank: bool = False


class LoadedModel:
    """A model in memory. Subclasses set the metadata in ``__init__`` and implement ``predict``."""

    model_type: str = ""
    platform: str = ""
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    free_inputs: bool = False
    """Whether the model takes whatever tensors a request sends, unchecked (a custom model that
    declares no inputs: its own code decides)."""
    predict_inline: bool = True
    """Whether a small request may predict on the event loop (False for user code, whose time is
    unknown: it always runs in a worker thread, under the request's deadline)."""

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on validated inputs keyed by the names in ``self.inputs``. Blocking."""
        raise NotImplementedError

    streams: bool = False
    """Whether ``predict_stream`` may give several answers per request (a custom model that streams)."""

    def predict_stream(self, inputs: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """The answers to one request as they come; one (``predict``'s) unless the model streams."""
        yield self.predict(inputs)

    def fixed_size_bytes(self) -> int | None:
        """A known in-memory size, for models too small for an RSS measurement to mean anything."""
        return None

    batch_by_default: bool = True
    """Whether the runtime's default batching applies (False for user code: a custom model opts in
    with its settings, ``batching``, or the model key's ``batching``)."""
    batching: BatchSettings | None = None
    """The model's own batching settings (a custom model's ``model-settings.json``)."""

    def stacks_rows(self, *, explicit: bool = False) -> str:
        """Why concurrent requests cannot be stacked along dim 0 for this model ("" when they can):
        every input must be numeric with a dynamic first dimension (-1: the batch). Unless batching
        was asked for ``explicit``-ly, every input must also have a dimension after the batch one: a
        lone ``[-1]`` may be one variable-length vector that the model reads as a whole."""
        if self.free_inputs:
            return ""  # undeclared inputs: each request is checked as it comes (batching.py)
        if not self.inputs:
            return "it has no inputs"
        for spec in self.inputs:
            if spec.any_rank:
                return f"input '{spec.name}' has no declared shape"
            if spec.datatype in BYTES_DATATYPES or spec.dtype is None:
                return f"input '{spec.name}' is {spec.datatype}"
            if not spec.shape or spec.shape[0] >= 0:
                return f"input '{spec.name}' has no batch dimension (shape {list(spec.shape)})"
            if len(spec.shape) < 2 and not explicit:
                return f"input '{spec.name}' has shape {list(spec.shape)}: perhaps no batch dimension"
        return ""

    def warm_up(self) -> None:
        """Run one tiny prediction so lazy allocations happen inside the measured load.

        Only for models whose inputs are numeric with every non-batch dimension known; any
        failure is logged and ignored (a model may reject zeros, and still serve real inputs).
        """
        feed: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            if spec.dtype is None or spec.any_rank or any(d < 0 for d in spec.shape[1:]) or not spec.shape:
                return
            feed[spec.name] = np.zeros((1, *spec.shape[1:]), dtype=spec.dtype)
        try:
            self.predict(feed)
        except Exception as exc:  # noqa: BLE001 - a warm-up is best effort
            logger.debug("warm-up of a %s model failed: %s", self.model_type, exc)

    def close(self) -> None:
        """Release what the model holds beyond Python references (sessions, handles)."""


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """Adaptive batching of one model: at most ``max_batch_size`` rows predicted together (0 or 1:
    off), a request waiting at most ``max_batch_delay_ms`` for others. None: the runtime's default."""

    max_batch_size: int | None = None
    max_batch_delay_ms: float | None = None


def parse_batch_settings(doc: Any, where: str) -> BatchSettings:
    """``{"max_batch_size": int >= 0, "max_batch_delay_ms": number >= 0}`` (both optional), or
    ``ModelLoadFailed`` saying what is wrong in ``where``."""
    if not isinstance(doc, dict):
        raise ModelLoadFailed(f"{where} must be an object such as {{\"max_batch_size\": 8, "
                              f"\"max_batch_delay_ms\": 2}}, got {json.dumps(doc)[:100]}")
    unknown = sorted(set(doc) - {"max_batch_size", "max_batch_delay_ms"})
    if unknown:
        raise ModelLoadFailed(f"{where} has unknown field(s) {', '.join(unknown)} (known: max_batch_size, "
                              "max_batch_delay_ms)")
    size, delay = doc.get("max_batch_size"), doc.get("max_batch_delay_ms")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)
                             or not 0 <= size <= MAX_BATCH_SIZE_LIMIT):
        raise ModelLoadFailed(f"{where}.max_batch_size must be an integer from 0 (off) to {MAX_BATCH_SIZE_LIMIT}, "
                              f"got {json.dumps(size)[:50]}")
    if delay is not None and (isinstance(delay, bool) or not isinstance(delay, int | float)
                              or not 0 <= delay <= MAX_BATCH_DELAY_MS_LIMIT):
        raise ModelLoadFailed(f"{where}.max_batch_delay_ms must be a number of milliseconds from 0 to "
                              f"{MAX_BATCH_DELAY_MS_LIMIT}, got {json.dumps(delay)[:50]}")
    return BatchSettings(size, None if delay is None else float(delay))


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A load request resolved: the format, the storage key for the fetcher, an optional size hint,
    the model's batching settings from the key (None: not given)."""

    model_type: str  # one of the formats above, or "" to detect from the file
    storage_key: str = ""
    disk_size_bytes: int = 0
    batching: BatchSettings | None = None


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
    batching = key_doc.get("batching")
    return ModelSpec(normalize_type(format_name), storage_key=storage_key, disk_size_bytes=disk_size_bytes,
                     batching=None if batching is None else parse_batch_settings(batching, "model key 'batching'"))


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

    A directory with a ``model.py`` at its top is a custom Python model (whatever data files lie
    beside it); one holding a ``saved_model.pb`` (at its top, or in a Triton-style version folder)
    is a TensorFlow SavedModel. Raises ``ModelLoadFailed`` when nothing (or more than one format)
    is recognised.
    """
    p = Path(path)
    if p.is_file():
        found = _type_of_file(p)
        if found is None:
            raise ModelLoadFailed(f"cannot tell the model type of '{p.name}' from its extension")
        return found
    if p.is_dir():
        if (p / CUSTOM_MODEL_FILE).is_file():
            return PYTHON
        types = {t for f in _model_files(p) if (t := _type_of_file(f)) is not None}
        if TENSORFLOW in types:  # a SavedModel's variables/ or assets/ hold no other model file
            types = {TENSORFLOW}
        if len(types) == 1:
            return types.pop()
        if not types:
            raise ModelLoadFailed(f"no model file with a known extension in directory '{p}'")
        raise ModelLoadFailed(f"directory '{p}' holds files of several model types: {', '.join(sorted(types))}")
    raise ModelLoadFailed(f"model path '{p}' does not exist")


def find_model_file(path: str | Path, model_type: str) -> Path:
    """The model file at ``path``: the path itself, or the one file of that type in a directory.

    For a SavedModel (``tensorflow``, or ``keras`` given a SavedModel) it is the directory that
    holds ``saved_model.pb``; for a custom Python model, the directory that holds ``model.py``
    (or ``model-settings.json``)."""
    p = Path(path)
    if model_type == PYTHON:
        return _custom_model_dir(p)
    if p.is_file():
        if p.name == SAVED_MODEL_FILE and model_type in (TENSORFLOW, KERAS):
            return p.parent
        return p
    if not p.is_dir():
        raise ModelLoadFailed(f"model path '{p}' does not exist")
    if model_type in (TENSORFLOW, KERAS):
        saved = _saved_model_dir(p)
        if saved is not None and (model_type == TENSORFLOW or not _files_with(p, EXTENSIONS[KERAS])):
            return saved
    files = _model_files(p)
    exts = EXTENSIONS.get(model_type, ())
    if model_type == TENSORFLOW:  # a tensorflow model may come as a Keras file too
        exts = EXTENSIONS[KERAS]
    for ext in exts:
        matches = [f for f in files if f.name.lower().endswith(ext)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(sorted(f.name for f in matches))
            raise ModelLoadFailed(f"directory '{p}' holds several {model_type} model files: {names}")
    if len(files) == 1 and model_type in _SINGLE_FILE_FALLBACK:
        return files[0]
    shown = " ".join(exts)
    if model_type == TENSORFLOW:
        shown = f"a {SAVED_MODEL_FILE} directory, or {shown}"
    raise ModelLoadFailed(f"no {model_type} model file ({shown}) in directory '{p}'")


# Formats that take a lone file of another name (as before the new formats came); the new ones
# need their own extension, so a config.pbtxt or a README is never mistaken for the model.
_SINGLE_FILE_FALLBACK = frozenset({SKLEARN, XGBOOST, LIGHTGBM, ONNX, STRING})

_MAX_DEPTH = 3
"""How deep a directory is searched for model files when its top holds none: Triton's layouts put
them one or two folders down (``<model>/1/model.pt``, ``<model>/1/model.savedmodel/saved_model.pb``)."""


def _visible_files(directory: Path) -> list[Path]:
    return [f for f in directory.iterdir() if f.is_file() and not f.name.startswith(".")]


def _model_files(directory: Path) -> list[Path]:
    """Regular files in ``directory``, skipping hidden files (``.meta`` etc.); when none of them
    has a known model extension, those of the shallowest level below (up to ``_MAX_DEPTH``) that
    has one: a model in a version folder beside a ``config.pbtxt``, as Triton lays them out."""
    files = _visible_files(directory)
    if not files or not any(_type_of_file(f) for f in files):
        level = [d for d in directory.iterdir() if d.is_dir() and not d.name.startswith(".")]
        for _depth in range(_MAX_DEPTH):
            below = [f for d in level for f in _visible_files(d)]
            if any(_type_of_file(f) for f in below):
                return sorted(below)
            if not files:
                files = below
            level = [s for d in level for s in d.iterdir() if s.is_dir() and not s.name.startswith(".")]
    return sorted(files)


def _files_with(directory: Path, exts: tuple[str, ...]) -> list[Path]:
    return [f for f in _model_files(directory) if f.name.lower().endswith(exts)]


def _saved_model_dir(directory: Path) -> Path | None:
    """The directory holding ``saved_model.pb``: ``directory`` itself, or one below it."""
    marked = [f.parent for f in _model_files(directory) if f.name == SAVED_MODEL_FILE]
    if len(marked) > 1:
        names = ", ".join(sorted(str(m.relative_to(directory)) for m in marked))
        raise ModelLoadFailed(f"directory '{directory}' holds several SavedModels: {names}")
    return marked[0] if marked else None


def _custom_model_dir(p: Path) -> Path:
    if p.is_file():
        if p.name != CUSTOM_MODEL_FILE:
            raise ModelLoadFailed(f"a python model is a directory with a {CUSTOM_MODEL_FILE} or a "
                                  f"{CUSTOM_SETTINGS_FILE}, not the file '{p.name}'")
        return p.parent
    if not p.is_dir():
        raise ModelLoadFailed(f"model path '{p}' does not exist")
    if (p / CUSTOM_MODEL_FILE).is_file() or (p / CUSTOM_SETTINGS_FILE).is_file():
        return p
    raise ModelLoadFailed(f"directory '{p}' has no {CUSTOM_MODEL_FILE} and no {CUSTOM_SETTINGS_FILE} "
                          "(a python model needs one of them)")


def _type_of_file(path: Path) -> str | None:
    name = path.name.lower()
    if name == SAVED_MODEL_FILE:
        return TENSORFLOW
    for model_type, exts in EXTENSIONS.items():
        if model_type in _DIRECTORY_FORMATS:
            continue
        if name.endswith(exts):
            return model_type
    return None
