"""Bounds on the JSON and YAML a caller sends, and how a model path is shown to those who may read it.

Request bodies parsed as JSON or YAML nest at most ``MAX_NESTING`` levels (``loads_json``,
``check_nesting``): a deeper document is refused with ``InvalidArgument`` naming it, instead of
running the parser (or whatever walks the result) out of Python stack.

``redacted_path`` is a model path as a status listing shows it: in a URL, user info becomes
``***@``, the value of each query parameter ``***`` (presigned URLs carry their signature there)
and a fragment ``***``; ``redacted_key`` does the same for a modelKey's ``storage_params``.
Registration stores and uses the whole path and key.
"""

from __future__ import annotations

import json
import re
from typing import Any

from kserve_mesh.core.errors import InvalidArgument

MAX_NESTING = 100
"""Deepest nesting of lists and objects in a JSON or YAML document a caller sends (Kubernetes
resources and modelKeys nest a dozen levels at most)."""

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
REDACTED = "***"


def nesting_depth(value: Any, limit: int = MAX_NESTING) -> int:
    """How deep lists, tuples and dicts nest in ``value`` (a scalar: 0), counted no further than
    ``limit + 1``; iterative, so any depth is safe to measure."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        stack.extend((child, depth) for child in children if isinstance(child, dict | list | tuple))
    return deepest


def check_nesting(value: Any, what: str, limit: int = MAX_NESTING) -> Any:
    """``value`` if its lists and objects nest at most ``limit`` levels, else ``InvalidArgument``."""
    if nesting_depth(value, limit) > limit:
        raise InvalidArgument(f"{what} is nested more than {limit} levels deep (lists and objects); "
                              f"at most {limit} are allowed")
    return value


def loads_json(text: str | bytes, what: str, limit: int = MAX_NESTING) -> Any:
    """``json.loads(text)`` nested at most ``limit`` levels deep, else ``InvalidArgument`` naming
    ``what``; malformed JSON raises ``json.JSONDecodeError`` (a ``ValueError``) as usual."""
    try:
        value = json.loads(text)
    except RecursionError:  # far deeper than the limit: the parser ran out of stack on the way
        raise InvalidArgument(f"{what} is nested more than {limit} levels deep (lists and objects); "
                              f"at most {limit} are allowed") from None
    return check_nesting(value, what, limit)


def _redact_query(query: str) -> str:
    out = []
    for item in query.split("&"):
        name, eq, value = item.partition("=")
        if eq:
            out.append(f"{name}={REDACTED}" if value else item)
        else:
            out.append(REDACTED if item else item)  # a bare value: nothing says it is not a secret
    return "&".join(out)


def redacted_path(path: str) -> str:
    """``path`` as a listing may show it: in a URL (``scheme://...``), user info becomes ``***@``,
    each query value ``***`` (names kept) and a fragment ``***``; anything else as it is."""
    match = _SCHEME.match(path)
    if match is None or ("@" not in path and "?" not in path and "#" not in path):
        return path
    scheme, rest = match.group(), path[match.end():]
    authority_end = next((i for i, ch in enumerate(rest) if ch in "/?#"), len(rest))
    authority, tail = rest[:authority_end], rest[authority_end:]
    if "@" in authority:
        authority = f"{REDACTED}@{authority.rpartition('@')[2]}"
    tail, hash_mark, fragment = tail.partition("#")
    tail, question, query = tail.partition("?")
    if question:
        tail += "?" + _redact_query(query)
    if hash_mark:
        tail += "#" + (REDACTED if fragment else "")
    return scheme + authority + tail


# storage_params fields that say where a model is, not how to get in: shown as they are.
_PLAIN_PARAMS = frozenset({"type", "bucket", "default_bucket", "endpoint_url", "region", "name", "url"})


def redacted_key(key: str) -> str:
    """A modelKey as a listing may show it: the values of ``storage_params`` (which may override a
    storage entry's credentials or headers) other than where-to-look fields become ``***``, and URLs
    in them lose their credentials. A key that is not a JSON object is shown as it is (a bare
    storage key name)."""
    if "storage_params" not in key:
        return key
    try:
        doc = json.loads(key)
    except (ValueError, RecursionError):
        return key
    params = doc.get("storage_params") if isinstance(doc, dict) else None
    if not isinstance(params, dict):
        return key
    doc["storage_params"] = {k: (redacted_path(str(v)) if k in _PLAIN_PARAMS else REDACTED) for k, v in params.items()}
    return json.dumps(doc)
