"""Laying a fetched model out as Triton's model repository requires, as ModelMesh's triton-adapter does.

Triton loads ``<repository>/<name>/config.pbtxt`` and ``<repository>/<name>/<version>/model.<ext>``
and insists that ``name`` in the config equals the folder's name. The adapter makes one folder per
concrete model id (``triton_name``: the id itself when it is a safe file name, else a hashed safe
name), links the fetched files into it and writes the config:

- a model that brings a ``config.pbtxt`` at its top is a Triton model already: every other entry is
  linked as it is, and the config is kept with its top-level ``name`` rewritten to ours (and, for
  an ONNX model served through the Python backend, its ``platform``/``backend`` replaced);
- otherwise the files go into a version folder (the largest numbered folder the model brings, else
  ``1``) under the file name Triton's backend expects (``model.onnx``, ``model.pt``,
  ``model.savedmodel``; a Python model's folder as it is), and a config naming the backend is
  written; Triton completes the inputs and outputs (its backends do for ONNX, TensorFlow; a
  Python model's ``auto_complete_config`` does).

Which backend serves a format is decided by ``plan_backend``: the format's Triton backend when the
Triton has it; an ONNX model goes through the Python backend (``onnx_wrapper.py``) when Triton has
no onnxruntime backend but the Python backend's environment has the ``onnxruntime`` package; any
other format whose backend is missing fails with a message naming the backend.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from kserve_mesh.core.errors import ModelLoadFailed
from kserve_mesh.runtime.triton.onnx_wrapper import MODEL_PY
from kserve_mesh.storage import safe_name

CONFIG = "config.pbtxt"
PYTHON = "python"
ONNX = "onnx"
NATIVE = "triton"  # a model that brings its config.pbtxt and names its own backend

# Model type (lower case, aliases) -> our format name.
_ALIASES = {
    "onnx": ONNX,
    "python": PYTHON, "triton-python": PYTHON, "custom": PYTHON,
    "pytorch": "pytorch", "torchscript": "pytorch", "pt": "pytorch",
    "tensorflow": "tensorflow", "keras": "tensorflow", "savedmodel": "tensorflow",
    "tensorrt": "tensorrt", "openvino": "openvino", "openvino_ir": "openvino",
    "triton": NATIVE,
}
# Format -> (Triton backend, the model file or folder name in a version folder).
BACKENDS: dict[str, tuple[str, str]] = {
    ONNX: ("onnxruntime", "model.onnx"),
    "pytorch": ("pytorch", "model.pt"),
    "tensorflow": ("tensorflow", "model.savedmodel"),
    "tensorrt": ("tensorrt", "model.plan"),
    "openvino": ("openvino", "model.xml"),
    PYTHON: (PYTHON, "model.py"),
}
# config.pbtxt platform -> backend (Triton's own platform names).
_PLATFORMS = {
    "onnxruntime_onnx": "onnxruntime", "pytorch_libtorch": "pytorch", "tensorflow_savedmodel": "tensorflow",
    "tensorflow_graphdef": "tensorflow", "tensorrt_plan": "tensorrt",
}
_SAFE = re.compile(r"[A-Za-z0-9_.-]{1,200}")
_MODEL_EXT = {".onnx": ONNX, ".pt": "pytorch", ".pth": "pytorch", ".plan": "tensorrt", ".xml": "openvino"}


def triton_name(model_id: str) -> str:
    """The Triton model (and folder) name of a concrete model id."""
    if _SAFE.fullmatch(model_id) and not model_id.startswith("."):
        return model_id
    return safe_name(model_id)


def model_format(model_type: str, model_key: str) -> str:
    """Our format for a loadModel's type and key ("" = tell from the files). Like the other
    runtimes, a JSON key's ``model_type.name`` wins over the type."""
    name = model_type
    stripped = model_key.strip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ModelLoadFailed(f"model key looks like JSON but does not parse: {exc}") from exc
        mt = doc.get("model_type") if isinstance(doc, dict) else None
        found = mt.get("name") if isinstance(mt, dict) else mt
        if isinstance(found, str) and found:
            name = found
    cleaned = name.strip().lower().split(":", 1)[0]
    if not cleaned or cleaned.startswith("rt"):
        return ""
    fmt = _ALIASES.get(cleaned)
    if fmt is None:
        raise ModelLoadFailed(
            f"unsupported model type '{name}' for the Triton runtime; it knows {', '.join(sorted(set(_ALIASES)))}")
    return fmt


def storage_key(model_key: str) -> str:
    stripped = model_key.strip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(stripped)
        except json.JSONDecodeError:
            return ""
        return str(doc.get("storage_key") or "") if isinstance(doc, dict) else ""
    return model_key


def detect_format(local: Path) -> str:
    """The format of fetched files: a config.pbtxt makes them a Triton model, a model.py a Python one."""
    if local.is_dir():
        if (local / CONFIG).is_file():
            return NATIVE
        files = [p for p in local.rglob("*") if p.is_file()]
        if any(p.name == "model.py" for p in files):
            return PYTHON
        if any(p.name == "saved_model.pb" for p in files):
            return "tensorflow"
        found = {_MODEL_EXT[p.suffix.lower()] for p in files if p.suffix.lower() in _MODEL_EXT}
        if len(found) == 1:
            return found.pop()
        raise ModelLoadFailed(f"cannot tell the model type of the files in '{local.name}'"
                              + (f" (several: {', '.join(sorted(found))})" if found else ""))
    fmt = _MODEL_EXT.get(local.suffix.lower()) or (PYTHON if local.name == "model.py" else "")
    if not fmt:
        raise ModelLoadFailed(f"cannot tell the model type of '{local.name}' from its extension")
    return fmt


def config_backend(text: str) -> str:
    """The backend a config.pbtxt names (its ``backend``, else its ``platform`` mapped), or ""."""
    fields = {k: v for k, v, _s, _e in _top_level_fields(text)}
    backend = fields.get("backend", "")
    return backend or _PLATFORMS.get(fields.get("platform", ""), "")


@dataclass(frozen=True, slots=True)
class Plan:
    """How a model is served: Triton's ``backend`` and whether the ONNX wrapper stands in for it."""

    fmt: str
    backend: str
    onnx_wrapper: bool = False


def plan_backend(model_id: str, fmt: str, local: Path, backends: frozenset[str], onnxruntime_in_python: bool,
                 python_env: str) -> Plan:
    """The backend for ``fmt`` on a Triton with ``backends``; ``ModelLoadFailed`` naming what is missing."""
    if fmt == NATIVE:
        text = _read_config(local)
        backend = config_backend(text) if text is not None else ""
        if not backend:
            raise ModelLoadFailed(f"model '{model_id}': its config.pbtxt names no backend or platform")
        fmt = next((f for f, (b, _n) in BACKENDS.items() if b == backend), backend)
    backend = BACKENDS.get(fmt, (fmt, ""))[0]
    if backend in backends:
        return Plan(fmt, backend)
    if fmt == ONNX and PYTHON in backends:
        if onnxruntime_in_python:
            return Plan(fmt, PYTHON, onnx_wrapper=True)
        raise ModelLoadFailed(
            f"model '{model_id}' is an ONNX model: this Triton has no onnxruntime backend, and the onnxruntime "
            f"package, which serves ONNX through its Python backend, is not installed in {python_env}")
    raise ModelLoadFailed(
        f"model '{model_id}' needs Triton's '{backend}' backend, which this Triton does not have (it has: "
        f"{', '.join(sorted(backends)) or 'none'}); the nvidia-pytriton wheel ships only the Python backend")


def lay_out(local: Path, name: str, plan: Plan, repository: Path) -> Path:
    """Write ``<repository>/<name>`` for the fetched files at ``local``; returns that folder. Blocking."""
    dest = repository / name
    if dest.exists() or dest.is_symlink():
        shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    try:
        text = _read_config(local) if local.is_dir() else None
        if text is not None:  # a Triton model already: link its entries, keep its config
            for entry in local.iterdir():
                if entry.name != CONFIG:
                    (dest / entry.name).symlink_to(entry.resolve())
            if plan.onnx_wrapper:
                _add_wrapper(dest)
        else:
            _version_folder(local, plan, dest)
            text = ""
        (dest / CONFIG).write_text(rewrite_config(text, name, PYTHON if plan.onnx_wrapper else
                                                  (plan.backend if not text else None)))
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest


def _version_folder(local: Path, plan: Plan, dest: Path) -> None:
    source, version = local, "1"
    if local.is_dir():
        numbered = [p for p in local.iterdir() if p.is_dir() and p.name.isdigit()]
        if numbered:
            best = max(numbered, key=lambda p: int(p.name))
            source, version = best, best.name
    target = dest / version
    target.mkdir()
    file_name = BACKENDS[plan.fmt][1] if plan.fmt in BACKENDS else ""
    if plan.fmt == PYTHON or not file_name:  # the folder as it is (model.py and its files)
        if source.is_dir():
            for entry in source.iterdir():
                (target / entry.name).symlink_to(entry.resolve())
        else:
            (target / source.name).symlink_to(source.resolve())
        return
    model = _the_model_file(source, plan.fmt)
    (target / file_name).symlink_to(model.resolve())
    if plan.onnx_wrapper:
        (target / "model.py").write_text(MODEL_PY)


def _the_model_file(source: Path, fmt: str) -> Path:
    if source.is_file():
        return source
    if fmt == "tensorflow":
        found = [p.parent for p in source.rglob("saved_model.pb")]
    else:
        exts = [e for e, f in _MODEL_EXT.items() if f == fmt]
        found = [p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in exts]
    if len(found) != 1:
        raise ModelLoadFailed(f"expected one {fmt} model file in '{source.name}', found {len(found)}")
    return found[0]


def _add_wrapper(dest: Path) -> None:
    versions = [p for p in dest.iterdir() if p.name.isdigit()]
    if not versions:
        raise ModelLoadFailed(f"the Triton model in '{dest.name}' has no numbered version folder")
    for version in versions:
        real = version.resolve()
        link = dest / version.name
        link.unlink()
        link.mkdir()
        for entry in real.iterdir():
            if entry.name != "model.py":
                (link / entry.name).symlink_to(entry.resolve())
        (link / "model.py").write_text(MODEL_PY)


def _read_config(local: Path) -> str | None:
    path = local / CONFIG
    if not path.is_file():
        return None
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadFailed(f"cannot read {CONFIG}: {exc}") from exc


# -- config.pbtxt (protobuf text format), top level only ----------------------------------------

_TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|[{}\[\]<>:;,]|[^\s{}\[\]<>:;,"\'#]+')


def _top_level_fields(text: str) -> list[tuple[str, str, int, int]]:
    """(key, unquoted value, start, end) of each top-level scalar field. Nested messages are skipped;
    an unbalanced text yields what was read before the problem (Triton reports the problem)."""
    out: list[tuple[str, str, int, int]] = []
    tokens = [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)
              if not m.group().isspace() and not m.group().startswith("#")]
    depth = 0
    i = 0
    while i < len(tokens):
        tok, start, _end = tokens[i]
        if tok in "{[<" and len(tok) == 1:
            depth += 1
        elif tok in "}]>" and len(tok) == 1:
            depth = max(0, depth - 1)
        elif depth == 0 and i + 2 < len(tokens) and tokens[i + 1][0] == ":" and tokens[i + 2][0] not in "{[<":
            value, _vs, vend = tokens[i + 2]
            if value[:1] in "\"'":
                value = value[1:-1]
            out.append((tok, value, start, vend))
            i += 3
            continue
        i += 1
    return out


def rewrite_config(text: str, name: str, backend: str | None) -> str:
    """``text`` with its top-level ``name`` set to ``name`` (and, given ``backend``, its
    ``platform``/``backend`` replaced by that backend); other fields as they were."""
    drop = {"name"} | ({"platform", "backend"} if backend else set())
    spans = [(s, e) for key, _v, s, e in _top_level_fields(text) if key in drop]
    for start, end in reversed(spans):
        text = text[:start] + text[end:]
    head = f'name: "{name}"\n' + (f'backend: "{backend}"\n' if backend else "")
    return head + text
