"""A JSON Schema of KServe's InferenceService, derived from the model classes of the ``kserve``
wheel (which ships no CRD YAML), for checking the example InferenceServices offline.

    python manifests_kserve_schema.py        # prints the schema as JSON

Run it as its own process: importing ``kserve`` loads its V2 protobuf set, and a test process may
hold only one (``kserve_mesh.protocol.v2``). Every generated class lists its fields with their
types (``openapi_types``) and JSON names (``attribute_map``); a field is required when its setter
refuses ``None``. The schema rejects unknown fields (``additionalProperties: false``), as the API
server's strict field validation does; Kubernetes core types come from the ``kubernetes`` package
the same way. A type the wheels lack a class for is left free-form and listed under
``x-unresolved``. Values a Kubernetes quantity accepts as numbers (``dict(str, str)`` resources) are
accepted as numbers too.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from typing import Any

_LIST = re.compile(r"^list\[(.+)\]$")
_DICT = re.compile(r"^dict\(str, (.+)\)$")
_VERSIONED = re.compile(r"V[0-9]+(?:alpha[0-9]+|beta[0-9]+)?[A-Z]")
_PRIMITIVES: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "datetime": {"type": "string"},
    "date": {"type": "string"},
    "object": {},
}


def _find_class(name: str) -> type:
    import kserve.models as kserve_models
    import kubernetes.client.models as kube_models

    for module in (kserve_models, kube_models):
        cls = getattr(module, name, None)
        if cls is not None:
            return cls
    # Fully qualified OpenAPI names, e.g. K8sIoApiAutoscalingV2HorizontalPodAutoscalerBehavior
    # → kubernetes' V2HorizontalPodAutoscalerBehavior.
    for match in _VERSIONED.finditer(name):
        cls = getattr(kube_models, name[match.start():], None)
        if cls is not None:
            return cls
    raise LookupError(f"no model class {name} in kserve or kubernetes")


def _required(cls: type, attribute: str) -> bool:
    prop = getattr(cls, attribute, None)
    if not isinstance(prop, property) or prop.fset is None:
        return False
    return "must not be `None`" in inspect.getsource(prop.fset)


class SchemaBuilder:
    """Turns model classes into JSON Schema definitions, one ``$defs`` entry per class."""

    def __init__(self) -> None:
        self.defs: dict[str, dict[str, Any]] = {}
        self.unresolved: list[str] = []

    def of_type(self, type_name: str, *, in_string_map: bool = False) -> dict[str, Any]:
        if type_name in _PRIMITIVES:
            if type_name == "str" and in_string_map:
                # dict(str, str) holds quantities (resources) and labels; YAML may write 1 for "1".
                return {"type": ["string", "integer", "number"]}
            return dict(_PRIMITIVES[type_name])
        match = _LIST.match(type_name)
        if match:
            return {"type": "array", "items": self.of_type(match.group(1))}
        match = _DICT.match(type_name)
        if match:
            return {"type": "object",
                    "additionalProperties": self.of_type(match.group(1), in_string_map=True)}
        return self.of_class(type_name)

    def of_class(self, name: str) -> dict[str, Any]:
        if name not in self.defs:
            self.defs[name] = {}  # placeholder: recursive types refer to it while it is built
            try:
                cls = _find_class(name)
            except LookupError:
                self.unresolved.append(name)  # left free-form; listed in the output
                return {"$ref": f"#/$defs/{name}"}
            properties = {cls.attribute_map[attr]: self.of_type(type_name)
                          for attr, type_name in cls.openapi_types.items()}
            required = sorted(cls.attribute_map[attr] for attr in cls.openapi_types
                              if _required(cls, attr))
            schema: dict[str, Any] = {"type": "object", "properties": properties,
                                      "additionalProperties": False}
            if required:
                schema["required"] = required
            self.defs[name] = schema
        return {"$ref": f"#/$defs/{name}"}


def inference_service_schema() -> dict[str, Any]:
    builder = SchemaBuilder()
    root = builder.of_class("V1beta1InferenceService")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **root, "$defs": builder.defs,
            "x-unresolved": sorted(builder.unresolved)}


if __name__ == "__main__":
    json.dump(inference_service_schema(), sys.stdout)
