"""Distinct id types, so a model id is never passed where an instance id belongs, and the rules a
model or vmodel id must follow.

An id travels everywhere: in store keys, HTTP headers and paths, gRPC metadata, logs, every model
listing. So it is bounded and printable: not empty, at most ``MAX_ID_BYTES`` bytes of UTF-8, and no
control characters (C0 ``U+0000``-``U+001F``, DEL ``U+007F``, C1 ``U+0080``-``U+009F``). A
refusal names the rule and shows the id cut short (``shown``), so a 1 MiB id is never echoed back.
"""

from __future__ import annotations

import re
from typing import NewType

from kserve_mesh.core.errors import InvalidArgument

ModelId = NewType("ModelId", str)
VModelId = NewType("VModelId", str)
InstanceId = NewType("InstanceId", str)

MAX_ID_BYTES = 256
"""Longest model / vmodel id, in bytes of UTF-8."""

SHOWN_CHARS = 64
"""How much of an id an error message shows."""

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


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


def check_ids(*, model_id: str | None = None, vmodel_id: str | None = None) -> None:
    """Check the ids given (see ``check_id``); ``None`` means not given."""
    if vmodel_id is not None:
        check_id(vmodel_id, "vmodel id")
    if model_id is not None:
        check_id(model_id, "model id")
