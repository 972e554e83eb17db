"""``python`` models: user classes derived from ``kserve_mesh.model.Model`` (the public base class,
documented there), from a folder's ``model.py`` or an installed class named by its
``model-settings.json``.

User code is treated as untrusted for the runtime's health (never for security: it is code, run
with the runtime's permissions; only storage the policy allows is ever read). Every call into it
is fenced: an exception (or ``SystemExit``) in import, ``__init__`` or ``load`` is a
``ModelLoadFailed`` naming the model, the exception and the line of ``model.py``; in ``predict``,
``ValueError``/``TypeError`` are the model refusing the input (the client sees its words), anything
else an ``InternalError`` naming the model (traceback in the log only), and so is a return value
that is not a dict of arrays or an array. ``predict`` always runs in a worker thread.

Adaptive batching (``batching.py``) is off for custom models unless they opt in: MLServer's
``max_batch_size`` (rows) and ``max_batch_time`` (seconds) in ``model-settings.json``, or the
model key's ``batching``. A batched model's ``predict`` gets the requests' rows stacked along dim 0
and must answer every output with that many rows.

Each ``model.py`` is imported as a module of its own (``kserve_mesh_custom_<hash>``), so two models
with the same class names never meet, and dropped from ``sys.modules`` on unload.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import re
import sys
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kserve_mesh.core.errors import InternalError, ModelLoadFailed
from kserve_mesh.model import Model, Tensor
from kserve_mesh.runtime.builtin.formats.common import V2_DTYPES, input_spec
from kserve_mesh.runtime.builtin.models import (
    CUSTOM_MODEL_FILE,
    CUSTOM_SETTINGS_FILE,
    PYTHON,
    BatchSettings,
    LoadedModel,
    TensorSpec,
    parse_batch_settings,
)

logger = logging.getLogger(__name__)

# What user code may raise that must end as a failed load, never as the runtime's own exit.
_USER_FAULTS = (Exception, SystemExit, KeyboardInterrupt)

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
_SETTINGS_MAX_BYTES = 1 << 20


class CustomModel(LoadedModel):
    """A user's ``Model`` behind the runtime's ``LoadedModel`` face."""

    model_type = PYTHON
    platform = "kserve-mesh_python"
    predict_inline = False
    batch_by_default = False  # user code opts in (model-settings.json max_batch_size)

    def __init__(self, model_id: str, user: Model, module_name: str | None) -> None:
        self._id = model_id
        self._user = user
        self._module_name = module_name
        self._source = f"{type(user).__module__}.{type(user).__qualname__}"
        declared_in = _tensors(model_id, "inputs", getattr(user, "inputs", ()))
        declared_out = _tensors(model_id, "outputs", getattr(user, "outputs", ()))
        single = len(declared_in) == 1
        self.inputs = tuple(input_spec(t.name, t.datatype, tuple(t.shape), single=single) for t in declared_in)
        self.outputs = tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in declared_out)
        self.free_inputs = not self.inputs
        self.streams = type(user).predict_stream is not Model.predict_stream

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._user_code("predict"):
            result = self._user.predict(inputs)
        return self._outputs(result)

    def predict_stream(self, inputs: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """The user's ``predict_stream`` answers, each checked as ``predict``'s; closing this
        generator (the client went away) closes the user's."""
        if not self.streams:
            yield self.predict(inputs)
            return
        with self._user_code("predict_stream"):
            answers = iter(self._user.predict_stream(inputs))
        try:
            while True:
                with self._user_code("predict_stream"):
                    try:
                        result = next(answers)
                    except StopIteration:
                        return
                yield self._outputs(result)
        finally:
            close = getattr(answers, "close", None)
            if close is not None:
                with self._user_code("predict_stream"):
                    close()

    @contextlib.contextmanager
    def _user_code(self, step: str) -> Iterator[None]:
        """User code's failures as the runtime reports them: ValueError/TypeError are the model
        refusing its input (in its own words); anything else an internal error naming the model."""
        try:
            yield
        except (ValueError, TypeError):
            raise  # the model refusing its input, in its own words
        except Exception as exc:
            logger.error("custom model %s (%s) failed in %s", self._id, self._source, step, exc_info=exc)
            raise InternalError(f"model '{self._id}' failed in {step}(): {type(exc).__name__} "
                                f"{_where(exc)}; see the server log") from exc
        except BaseException as exc:  # SystemExit, KeyboardInterrupt raised by user code: not ours to obey
            if not isinstance(exc, (SystemExit, KeyboardInterrupt)):
                raise
            logger.error("custom model %s (%s) raised %s in %s", self._id, self._source, type(exc).__name__, step)
            raise InternalError(f"model '{self._id}' raised {type(exc).__name__} in {step}()") from None

    def _outputs(self, result: Any) -> dict[str, np.ndarray]:
        if isinstance(result, Mapping):
            items = list(result.items())
        elif isinstance(result, (np.ndarray, list)):
            name = self.outputs[0].name if len(self.outputs) == 1 else "output-0"
            items = [(name, result)]
        else:
            raise InternalError(
                f"model '{self._id}' returned {type(result).__name__} from predict(); it must return a dict of "
                "output name to array, or one array")
        out: dict[str, np.ndarray] = {}
        for name, value in items:
            if not isinstance(name, str):
                raise InternalError(f"model '{self._id}' returned an output named {name!r}; names must be str")
            try:
                arr = np.asarray(value)
            except Exception as exc:  # noqa: BLE001 - any conversion failure is the model's
                raise InternalError(f"model '{self._id}' returned output '{name}' that is not an array: "
                                    f"{type(exc).__name__}") from None
            if arr.dtype.kind in "UO":  # text: V2 BYTES, each element bytes
                flat = [v.encode() if isinstance(v, str) else v for v in arr.ravel()]
                if not all(isinstance(v, bytes) for v in flat):
                    raise InternalError(f"model '{self._id}' returned output '{name}' holding objects that are "
                                        "neither str nor bytes")
                arr = np.array(flat, dtype=object).reshape(arr.shape)
            elif arr.dtype.kind not in "biufS":
                raise InternalError(f"model '{self._id}' returned output '{name}' of dtype {arr.dtype}, which no V2 "
                                    "datatype carries")
            out[name] = arr
        declared = {o.name for o in self.outputs}
        if declared and not set(out) <= declared:
            extra = ", ".join(sorted(set(out) - declared))
            raise InternalError(f"model '{self._id}' returned output(s) {extra} it does not declare "
                                f"(outputs: {', '.join(sorted(declared))})")
        return out

    def warm_up(self) -> None:
        return None  # user code: no call the user did not ask for

    def close(self) -> None:
        try:
            self._user.unload()
        except Exception as exc:  # noqa: BLE001 - an unload must always complete
            logger.warning("custom model %s: unload() raised %s: %s", self._id, type(exc).__name__, exc)
        if self._module_name is not None:
            sys.modules.pop(self._module_name, None)


def _tensors(model_id: str, what: str, declared: Any) -> list[Tensor]:
    try:
        items = list(declared or ())
    except TypeError:
        raise ModelLoadFailed(f"{what} must be a list of kserve_mesh.model.Tensor") from None
    for t in items:
        if not isinstance(t, Tensor):
            raise ModelLoadFailed(f"{what} must be a list of kserve_mesh.model.Tensor, got {type(t).__name__}")
        if t.datatype not in V2_DTYPES:
            raise ModelLoadFailed(f"{what[:-1]} '{t.name}' has datatype {t.datatype!r}, not a V2 datatype "
                                  f"({', '.join(V2_DTYPES)})")
        if not all(isinstance(d, int) for d in t.shape):
            raise ModelLoadFailed(f"{what[:-1]} '{t.name}' has shape {list(t.shape)}: dimensions must be int")
    return items


def _where(exc: BaseException) -> str:
    """``(model.py, line N)``: the innermost frame in a custom model file, or the innermost at all."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if Path(f.filename).name == CUSTOM_MODEL_FILE] or frames[-1:]
    if not mine:
        return ""
    f = mine[-1]
    return f"at {Path(f.filename).name}, line {f.lineno}"


def _fail(model_id: str, step: str, exc: BaseException) -> ModelLoadFailed:
    detail = str(exc).strip()
    where = _where(exc)
    return ModelLoadFailed(f"cannot load python model '{model_id}': {step} raised {type(exc).__name__}"
                           f"{': ' + detail[:500] if detail else ''}{' (' + where + ')' if where else ''}")


def _read_settings(folder: Path) -> dict[str, Any]:
    path = folder / CUSTOM_SETTINGS_FILE
    if not path.is_file():
        return {}
    if path.stat().st_size > _SETTINGS_MAX_BYTES:
        raise ModelLoadFailed(f"{CUSTOM_SETTINGS_FILE} is larger than {_SETTINGS_MAX_BYTES} bytes")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadFailed(f"{CUSTOM_SETTINGS_FILE} does not parse: {exc}") from exc
    if not isinstance(doc, dict):
        raise ModelLoadFailed(f"{CUSTOM_SETTINGS_FILE} must be a JSON object")
    if not isinstance(doc.get("parameters", {}), dict):
        raise ModelLoadFailed(f"'parameters' in {CUSTOM_SETTINGS_FILE} must be an object")
    return doc


def _batch_settings(settings: dict[str, Any]) -> BatchSettings | None:
    """MLServer's ``max_batch_size`` (rows) and ``max_batch_time`` (seconds) of a model-settings.json."""
    size, seconds = settings.get("max_batch_size"), settings.get("max_batch_time")
    if size is None and seconds is None:
        return None
    doc: dict[str, Any] = {}
    if size is not None:
        doc["max_batch_size"] = size
    if seconds is not None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ModelLoadFailed(f"max_batch_time in {CUSTOM_SETTINGS_FILE} must be a number of seconds, "
                                  f"got {json.dumps(seconds)[:50]}")
        doc["max_batch_delay_ms"] = seconds * 1000
    return parse_batch_settings(doc, CUSTOM_SETTINGS_FILE)


def _import_model_file(model_id: str, folder: Path) -> tuple[Any, str]:
    path = folder / CUSTOM_MODEL_FILE
    digest = hashlib.sha256(f"{model_id}\0{path.resolve()}".encode()).hexdigest()[:16]
    name = f"kserve_mesh_custom_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadFailed(f"cannot load python model '{model_id}': {CUSTOM_MODEL_FILE} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickle look classes up there
    try:
        spec.loader.exec_module(module)
    except _USER_FAULTS as exc:
        sys.modules.pop(name, None)
        raise _fail(model_id, f"importing {CUSTOM_MODEL_FILE}", exc) from exc
    return module, name


def _pick_class(model_id: str, module: Any, wanted: str) -> type[Model]:
    defined = [v for v in vars(module).values()
               if isinstance(v, type) and issubclass(v, Model) and v is not Model and v.__module__ == module.__name__]
    if wanted:
        short = wanted.rsplit(".", 1)[-1]
        chosen = [c for c in defined if c.__name__ == short]
        if not chosen:
            names = ", ".join(sorted(c.__name__ for c in defined)) or "none"
            raise ModelLoadFailed(f"cannot load python model '{model_id}': {CUSTOM_MODEL_FILE} defines no Model "
                                  f"subclass '{short}' (it defines: {names})")
        return chosen[0]
    if len(defined) == 1:
        return defined[0]
    if not defined:
        raise ModelLoadFailed(f"cannot load python model '{model_id}': {CUSTOM_MODEL_FILE} defines no subclass of "
                              "kserve_mesh.model.Model")
    names = ", ".join(sorted(c.__name__ for c in defined))
    raise ModelLoadFailed(f"cannot load python model '{model_id}': {CUSTOM_MODEL_FILE} defines several Model "
                          f"subclasses ({names}); name one as 'implementation' in {CUSTOM_SETTINGS_FILE}")


def _import_class(model_id: str, dotted: str) -> type[Model]:
    if not _DOTTED.match(dotted):
        raise ModelLoadFailed(f"cannot load python model '{model_id}': implementation {dotted!r} is not a dotted "
                              "class path (package.module.ClassName)")
    module_name, _, class_name = dotted.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except _USER_FAULTS as exc:
        raise _fail(model_id, f"importing {module_name}", exc) from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise ModelLoadFailed(f"cannot load python model '{model_id}': {dotted} is not a subclass of "
                              "kserve_mesh.model.Model")
    return cls


def load_custom_model(folder: Path, model_id: str) -> LoadedModel:
    """Import, construct and ``load()`` a custom model from its folder."""
    model_id = model_id or folder.name
    settings = _read_settings(folder)
    batching = _batch_settings(settings)
    implementation = settings.get("implementation") or ""
    if not isinstance(implementation, str):
        raise ModelLoadFailed(f"'implementation' in {CUSTOM_SETTINGS_FILE} must be a string")
    module_name = None
    if (folder / CUSTOM_MODEL_FILE).is_file():
        module, module_name = _import_model_file(model_id, folder)
        try:
            cls = _pick_class(model_id, module, implementation)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
    elif implementation:
        cls = _import_class(model_id, implementation)
    else:
        raise ModelLoadFailed(f"cannot load python model '{model_id}': no {CUSTOM_MODEL_FILE}, and "
                              f"{CUSTOM_SETTINGS_FILE} names no implementation")
    try:
        try:
            user = cls(model_id, folder, settings.get("parameters") or {})
        except _USER_FAULTS as exc:
            raise _fail(model_id, f"{cls.__name__}()", exc) from exc
        try:
            user.load()
        except _USER_FAULTS as exc:
            raise _fail(model_id, f"{cls.__name__}.load()", exc) from exc
        model = CustomModel(model_id, user, module_name)
        model.batching = batching
        return model
    except BaseException:
        if module_name is not None:
            sys.modules.pop(module_name, None)
        raise
