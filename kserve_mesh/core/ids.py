"""Distinct id types, so a model id is never passed where an instance id belongs, the rules a
model or vmodel id must follow, and the bounds of the ``modelInfo`` registered with a model id.

An id travels everywhere: in store keys, HTTP headers and paths, gRPC metadata, logs, every model
listing. So it is bounded and printable: not empty, at most ``MAX_ID_BYTES`` bytes of UTF-8, and no
control characters (C0 ``U+0000``-``U+001F``, DEL ``U+007F``, C1 ``U+0080``-``U+009F``). A
refusal names the rule and shows the id cut short (``shown``), so a 1 MiB id is never echoed back.

A model's ``modelInfo`` travels with its id (the store, every listing, every load and its log
lines), so ``check_model_info`` bounds it the same way, before anything is stored or resolved:

- ``type``: at most ``MAX_TYPE_BYTES`` bytes of UTF-8, no control characters;
- ``path``: at most ``MAX_PATH_BYTES`` bytes (``PATH_MAX``) in at most ``MAX_PATH_COMPONENTS``
  components (``/`` or ``\\`` separated), no control characters (a newline in a path would start a
  line of its own in the logs). Resolving a local path takes time in its number of components:
  the bound keeps that short;
- ``key``: at most ``MAX_KEY_BYTES`` bytes; a JSON modelKey nests at most ``limits.MAX_NESTING``
  levels.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NewType

from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.core.limits import loads_json

if TYPE_CHECKING:
    from kserve_mesh.core.records import ModelInfo

ModelId = NewType("ModelId", str)
VModelId = NewType("VModelId", str)
InstanceId = NewType("InstanceId", str)

MAX_ID_BYTES = 256
"""Longest model / vmodel id, in bytes of UTF-8."""

SHOWN_CHARS = 64
"""How much of an id an error message shows."""

MAX_TYPE_BYTES = 128
"""Longest ``modelInfo.type``, in bytes of UTF-8."""

MAX_PATH_BYTES = 4096
"""Longest ``modelInfo.path``, in bytes of UTF-8 (``PATH_MAX`` on Linux)."""

MAX_PATH_COMPONENTS = 256
"""Most non-empty components of ``modelInfo.path`` (separated by ``/`` or ``\\``)."""

MAX_KEY_BYTES = 16 * 1024
"""Longest ``modelInfo.key``, in bytes of UTF-8."""

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_SEPARATORS = re.compile(r"[\\/]+")


def shown(value: str, limit: int = SHOWN_CHARS) -> str:
    """``value`` quoted for a message, cut to ``limit`` characters, control characters escaped."""
    cut = value if len(value) <= limit else value[:limit]
    text = repr(cut)
    if len(cut) < len(value):
        text += f"... ({len(value)} characters)"
    return text


def check_id(value: str, what: str = "model id") -> str:
    """``value`` if it follows the id rules, else ``InvalidArgument`` naming the broken rule.

    ``what`` names the id in the message (``model id``, ``vmodel id``, ``header mm-model-id``)."""
    if value.isascii() and value.isprintable() and 0 < len(value) <= MAX_ID_BYTES:
        return value  # the common case, in two C-speed scans
    if not value:
        raise InvalidArgument(f"{what} must not be empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument(f"{what} {shown(value)} is not valid Unicode text (it holds a lone surrogate)") from None
    if size > MAX_ID_BYTES:
        raise InvalidArgument(f"{what} is {size} bytes long; ids are at most {MAX_ID_BYTES} bytes of UTF-8 "
                              f"(got {shown(value)})")
    bad = _CONTROL.search(value)
    if bad is not None:
        raise InvalidArgument(f"{what} {shown(value)} contains the control character U+{ord(bad.group()):04X} "
                              f"at position {bad.start()}; ids must not contain control characters")
    return value


def check_ids(*, model_id: str | None = None, vmodel_id: str | None = None, info: ModelInfo | None = None) -> None:
    """Check the ids given (see ``check_id``) and the ``modelInfo`` registered with ``model_id``
    (see ``check_model_info``); ``None`` means not given."""
    if vmodel_id is not None:
        check_id(vmodel_id, "vmodel id")
    if model_id is not None:
        check_id(model_id, "model id")
    if info is not None:
        check_model_info(info, model_id or "")


def _size(value: str, what: str) -> int:
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument(f"{what} {shown(value)} is not valid Unicode text (it holds a lone surrogate)") from None


def _bounded(value: str, what: str, limit: int, *, printable: bool) -> None:
    if value.isascii() and len(value) <= limit and (not printable or value.isprintable()):
        return  # the common case, in C-speed scans
    size = _size(value, what)
    if size > limit:
        raise InvalidArgument(f"{what} is {size} bytes long; at most {limit} bytes of UTF-8 are allowed "
                              f"(got {shown(value)})")
    if printable:
        bad = _CONTROL.search(value)
        if bad is not None:
            raise InvalidArgument(f"{what} {shown(value)} contains the control character U+{ord(bad.group()):04X} "
                                  f"at position {bad.start()}; control characters are not allowed")


def check_model_info(info: ModelInfo, model_id: str = "") -> ModelInfo:
    """``info`` if its type, path and key are within bounds, else ``InvalidArgument`` naming the
    field and the bound (``model_id`` names the model in the message)."""
    where = f"model {shown(model_id)}: " if model_id else ""
    _bounded(info.type, f"{where}modelInfo.type", MAX_TYPE_BYTES, printable=True)
    _bounded(info.path, f"{where}modelInfo.path", MAX_PATH_BYTES, printable=True)
    components = sum(1 for part in _SEPARATORS.split(info.path) if part)
    if components > MAX_PATH_COMPONENTS:
        raise InvalidArgument(f"{where}modelInfo.path has {components} components; at most "
                              f"{MAX_PATH_COMPONENTS} are allowed (got {shown(info.path)})")
    _bounded(info.key, f"{where}modelInfo.key", MAX_KEY_BYTES, printable=False)
    if info.key.lstrip().startswith(("{", "[")):
        try:
            loads_json(info.key, f"{where}modelInfo.key")
        except ValueError:
            pass  # not JSON: the storage layer says what is wrong with it
    return info
