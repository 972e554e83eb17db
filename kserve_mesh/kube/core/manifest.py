"""Read resource documents from text: multi-document YAML, or JSON (an object, a list, or a
``kind: List`` with ``items``), as ``kubectl apply -f`` accepts them.

YAML timestamps stay strings (``creationTimestamp`` from ``kubectl get -o yaml`` round-trips as
JSON). Errors are ``InvalidSpec`` naming the document and the line.

What a caller sends is bounded before it is expanded: YAML aliases (``*name``, which repeat an
``&name`` anchor's node and let a few hundred bytes grow to gigabytes, "billion laughs") are
refused, as Kubernetes manifests never need them; JSON and YAML nest at most
``limits.MAX_NESTING`` levels (deeper is refused as it is read, never a ``RecursionError``).
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.scanner import ScannerError

from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.core.limits import MAX_NESTING, loads_json
from kserve_mesh.kube.core.errors import InvalidSpec


class _Loader(yaml.SafeLoader):
    """SafeLoader without the timestamp resolver (dates stay text), that refuses aliases and
    nesting deeper than ``MAX_NESTING`` as it reads, before anything is expanded."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ComposerError(None, None, f"YAML aliases are not accepted (found *{event.anchor}): "
                                "write the repeated part out (Kubernetes manifests need no anchors or aliases)",
                                event.start_mark)
        if self.check_event(yaml.ScalarEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                raise ComposerError(None, None, f"nested more than {MAX_NESTING} levels deep (lists and "
                                    f"mappings); at most {MAX_NESTING} are allowed", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        # The scanner reads ahead while a '[' or '{' may still start a key, up to 1024 characters:
        # '[' * 1024 costs it ~0.3 s (each token looks at every pending key). Stop at the limit.
        if self.flow_level >= MAX_NESTING:
            raise ScannerError(None, None, f"nested more than {MAX_NESTING} levels deep (lists and mappings); "
                               f"at most {MAX_NESTING} are allowed", self.get_mark())
        super().fetch_flow_collection_start(TokenClass)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_documents(text: str, content_type: str = "application/yaml") -> list[dict[str, Any]]:
    """The resource documents in ``text``; empty documents are skipped, ``List`` kinds expanded."""
    if "json" in content_type.lower():
        try:
            raw: list[Any] = [loads_json(text, "the JSON document")]
        except json.JSONDecodeError as exc:
            raise InvalidSpec("", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
        except InvalidArgument as exc:
            raise InvalidSpec("", str(exc)) from None
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
        except RecursionError:  # not expected (composing is bounded above), but never a 500
            raise InvalidSpec("", f"the YAML document is nested too deeply (at most {MAX_NESTING} levels)") from None
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
