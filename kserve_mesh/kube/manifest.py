"""Read resource documents from text: multi-document YAML, or JSON (an object, a list, or a
``kind: List`` with ``items``), as ``kubectl apply -f`` accepts them.

YAML timestamps stay strings (``creationTimestamp`` from ``kubectl get -o yaml`` round-trips as
JSON). Errors are ``InvalidSpec`` naming the document and the line.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from kserve_mesh.kube.errors import InvalidSpec


class _Loader(yaml.SafeLoader):
    """SafeLoader without the timestamp resolver: dates stay text."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_documents(text: str, content_type: str = "application/yaml") -> list[dict[str, Any]]:
    """The resource documents in ``text``; empty documents are skipped, ``List`` kinds expanded."""
    if "json" in content_type.lower():
        try:
            raw: list[Any] = [json.loads(text)]
        except json.JSONDecodeError as exc:
            raise InvalidSpec("", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
        if isinstance(raw[0], list):
            raw = raw[0]
    else:
        try:
            raw = list(yaml.load_all(text, Loader=_Loader))  # _Loader is a SafeLoader subclass
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise InvalidSpec("", f"invalid YAML{where}: {problem}") from exc
    docs: list[dict[str, Any]] = []
    for i, doc in enumerate(raw):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise InvalidSpec("", f"document {i + 1} is not an object (got {type(doc).__name__})")
        if doc.get("kind") == "List" or (str(doc.get("kind", "")).endswith("List") and "items" in doc):
            items = doc.get("items")
            if not isinstance(items, list) or not all(isinstance(it, dict) for it in items):
                raise InvalidSpec("items", f"document {i + 1}: a {doc.get('kind')} needs a list of objects")
            docs.extend(items)
        else:
            docs.append(doc)
    return docs
