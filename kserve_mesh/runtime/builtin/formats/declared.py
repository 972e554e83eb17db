"""Inputs and outputs declared beside a model whose file does not declare them: a ModelMesh model
schema (``schema.json``, KServe V2 tensor metadata) or a Triton ``config.pbtxt``.

A TorchScript file knows its arguments' names but not their datatypes or shapes. ModelMesh Serving
takes them from a schema file (``{"inputs": [{"name", "datatype", "shape"}], "outputs": [...]}``,
shapes with the batch dimension) or from Triton's ``config.pbtxt`` (``<model>/config.pbtxt`` beside
``<model>/1/model.pt``, as its pytorch example is laid out). This reads only what V2 metadata needs from the protobuf
text format: ``max_batch_size`` and each ``input`` / ``output`` block's ``name``, ``data_type`` and
``dims`` (a ``reshape`` or anything else is ignored). With ``max_batch_size > 0`` Triton's dims
leave out the batch dimension, so -1 is put in front.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from kserve_mesh.core.errors import ModelLoadFailed

CONFIG_FILE = "config.pbtxt"
SCHEMA_FILE = "schema.json"
_V2_DATATYPES = frozenset(("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                           "FP16", "FP32", "FP64", "BYTES"))

_TRITON_DATATYPES = {
    "TYPE_BOOL": "BOOL", "TYPE_UINT8": "UINT8", "TYPE_UINT16": "UINT16", "TYPE_UINT32": "UINT32",
    "TYPE_UINT64": "UINT64", "TYPE_INT8": "INT8", "TYPE_INT16": "INT16", "TYPE_INT32": "INT32",
    "TYPE_INT64": "INT64", "TYPE_FP16": "FP16", "TYPE_FP32": "FP32", "TYPE_FP64": "FP64",
    "TYPE_STRING": "BYTES",
}

_BLOCK_START = re.compile(r"(?<![\w.])(input|output)\s*:?\s*\[")
_MAX_BATCH = re.compile(r"\bmax_batch_size\s*:\s*(\d+)")
_NAME = re.compile(r"\bname\s*:\s*\"([^\"]*)\"")
_DATA_TYPE = re.compile(r"\bdata_type\s*:\s*(TYPE_\w+)")
_DIMS = re.compile(r"\bdims\s*:\s*\[([^\]]*)\]")


@dataclass(frozen=True, slots=True)
class DeclaredTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]


def declared_tensors(model_file: Path) -> tuple[list[DeclaredTensor], list[DeclaredTensor]] | None:
    """(inputs, outputs) from a ``schema.json`` or ``config.pbtxt`` beside the model file or one
    folder up (Triton's version folder); None when there is neither. The schema wins."""
    for name, reader in ((SCHEMA_FILE, read_schema), (CONFIG_FILE, read_config)):
        for folder in (model_file.parent, model_file.parent.parent):
            candidate = folder / name
            if candidate.is_file():
                return reader(candidate)
    return None


def read_schema(path: Path) -> tuple[list[DeclaredTensor], list[DeclaredTensor]]:
    """(inputs, outputs) of a ModelMesh model schema; ``ModelLoadFailed`` naming what is wrong."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadFailed(f"cannot read {path.name}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ModelLoadFailed(f"{path.name} must be a JSON object with 'inputs' and 'outputs'")
    found: dict[str, list[DeclaredTensor]] = {"inputs": [], "outputs": []}
    for kind, tensors in found.items():
        for entry in doc.get(kind) or []:
            ok = isinstance(entry, dict) and isinstance(entry.get("name"), str) and \
                entry.get("datatype") in _V2_DATATYPES and isinstance(entry.get("shape"), list) and \
                all(isinstance(d, int) and not isinstance(d, bool) for d in entry["shape"])
            if not ok:
                raise ModelLoadFailed(f"{path.name}: each of '{kind}' needs a name, a V2 datatype and an integer "
                                      f"shape, got {json.dumps(entry)[:200]}")
            tensors.append(DeclaredTensor(entry["name"], entry["datatype"], tuple(entry["shape"])))
    return found["inputs"], found["outputs"]


def read_config(path: Path) -> tuple[list[DeclaredTensor], list[DeclaredTensor]]:
    """(inputs, outputs) declared by a ``config.pbtxt``; ``ModelLoadFailed`` naming what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadFailed(f"cannot read {path.name}: {exc}") from exc
    text = re.sub(r"#[^\n]*", "", text)
    batch = _MAX_BATCH.search(text)
    batched = batch is not None and int(batch.group(1)) > 0
    found: dict[str, list[DeclaredTensor]] = {"input": [], "output": []}
    for kind, body in _blocks(text):
        for entry in _entries(body):
            name, dtype, dims = _NAME.search(entry), _DATA_TYPE.search(entry), _DIMS.search(entry)
            if name is None or dtype is None or dims is None:
                raise ModelLoadFailed(f"{path.name}: an {kind} needs name, data_type and dims: {entry.strip()[:200]}")
            if dtype.group(1) not in _TRITON_DATATYPES:
                raise ModelLoadFailed(f"{path.name}: {kind} '{name.group(1)}' has unknown data_type {dtype.group(1)}")
            try:
                shape = tuple(int(d) for d in dims.group(1).replace(",", " ").split())
            except ValueError as exc:
                raise ModelLoadFailed(f"{path.name}: {kind} '{name.group(1)}' has bad dims: {exc}") from exc
            found[kind].append(DeclaredTensor(name.group(1), _TRITON_DATATYPES[dtype.group(1)],
                                              ((-1,) if batched else ()) + shape))
    return found["input"], found["output"]


def _blocks(text: str) -> list[tuple[str, str]]:
    """Each top-level ``input [ ... ]`` / ``output [ ... ]`` list, brackets matched."""
    blocks = []
    pos = 0
    while (m := _BLOCK_START.search(text, pos)) is not None:
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"[": 1, "]": -1}.get(text[i], 0)
            i += 1
        blocks.append((m.group(1), text[m.end():i - 1]))
        pos = i
    return blocks


def _entries(body: str) -> list[str]:
    """The ``{ ... }`` entries of a list body (no nesting deeper than one level is needed)."""
    entries, depth, start = [], 0, 0
    for i, ch in enumerate(body):
        if ch == "{":
            if depth == 0:
                start = i + 1
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                entries.append(body[start:i])
    return entries
