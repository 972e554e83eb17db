"""Runtime selection: which ServingRuntime serves a model, and the runtimes the mesh ships.

Rules (REFERENCE.md §7, with ModelMesh's surprises fixed):

1. A namespaced ServingRuntime overrides a ClusterServingRuntime of the same name.
2. An explicit runtime (``predictor.model.runtime``, the ``serving.kserve.io/servingRuntime``
   annotation, or a Predictor's ``runtime.name``) wins: it must exist (else ``RuntimeNotRecognized``),
   not be disabled, be ``multiModel``, support the model format (``autoSelect`` not needed) and the
   protocol (else ``NoSupportingRuntime``).
3. Otherwise every enabled multi-model runtime with an ``autoSelect`` format of the model's name whose
   version matches qualifies; the highest ``priority`` wins (ModelMesh ignored it), then namespaced
   before cluster runtimes, then the name (so the choice is stable).

Versions: a model without ``modelFormat.version`` takes any version; a runtime format without a
version supports every version; otherwise the dotted versions must agree on the parts both give
(``"1"`` matches ``"1.2"``, ``"1.2"`` does not match ``"1.3"``). Format names compare case-blind.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from kserve_mesh.kube.core.errors import NoSupportingRuntime, RuntimeNotRecognized
from kserve_mesh.kube.core.resources import (
    ModelFormat,
    ModelSource,
    ObjectMeta,
    ServingRuntime,
    SupportedModelFormat,
)

BUILTIN_RUNTIME = "kserve-mesh-python"
MLSERVER_RUNTIME = "mlserver-1.x"


def _formats(names: Iterable[str], priority: int) -> tuple[SupportedModelFormat, ...]:
    return tuple(SupportedModelFormat(n, None, True, priority) for n in names)


# The ClusterServingRuntimes the mesh knows without any being applied (manifests/ ships the same
# ones as YAML). The built-in Python runtime outranks MLServer for the formats both serve.
BUILTIN_RUNTIMES: tuple[ServingRuntime, ...] = (
    ServingRuntime(
        meta=ObjectMeta(BUILTIN_RUNTIME, ""),
        formats=_formats(("sklearn", "xgboost", "lightgbm", "onnx", "string", "pytorch", "tensorflow", "keras",
                          "openvino_ir", "python"), 2),
        cluster=True, multi_model=True, protocol_versions=("grpc-v2", "v2"),
        grpc_data_endpoint="port:8001", grpc_endpoint="port:8085",
    ),
    ServingRuntime(
        meta=ObjectMeta(MLSERVER_RUNTIME, ""),
        formats=_formats(("sklearn", "xgboost", "lightgbm"), 1),
        cluster=True, multi_model=True, protocol_versions=("grpc-v2", "v2"),
        grpc_data_endpoint="port:8001", grpc_endpoint="port:8085",
    ),
)


def builtin_runtime(name: str) -> ServingRuntime:
    for rt in BUILTIN_RUNTIMES:
        if rt.name == name:
            return rt
    raise KeyError(name)


def effective_runtimes(namespace: str, runtimes: Iterable[ServingRuntime]) -> list[ServingRuntime]:
    """The runtimes a model in ``namespace`` can use: namespaced ones there, plus cluster ones whose
    name no namespaced runtime there takes."""
    local = {rt.name: rt for rt in runtimes if not rt.cluster and rt.meta.namespace == namespace}
    cluster = [rt for rt in runtimes if rt.cluster and rt.name not in local]
    return sorted(local.values(), key=lambda r: r.name) + sorted(cluster, key=lambda r: r.name)


def versions_match(wanted: str | None, offered: str | None) -> bool:
    if wanted is None or offered is None:
        return True
    a, b = wanted.strip().lower().split("."), offered.strip().lower().split(".")
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def supported_format(runtime: ServingRuntime, fmt: ModelFormat, *, auto: bool) -> SupportedModelFormat | None:
    """The runtime's entry serving ``fmt`` (only ``autoSelect`` entries when ``auto``), best priority."""
    matches = [f for f in runtime.formats
               if f.name.lower() == fmt.name.lower() and versions_match(fmt.version, f.version)
               and (f.auto_select or not auto)]
    if not matches:
        return None
    return max(matches, key=lambda f: f.priority or 0)


def _protocol_ok(runtime: ServingRuntime, protocol: str | None) -> bool:
    return protocol is None or protocol in runtime.protocol_versions


def _describe(fmt: ModelFormat, protocol: str | None) -> str:
    text = f"model format '{fmt.name}'"
    if fmt.version:
        text += f" version '{fmt.version}'"
    if protocol:
        text += f" with protocol '{protocol}'"
    return text


def select_runtime(model: ModelSource, namespace: str, runtimes: Sequence[ServingRuntime]) -> ServingRuntime:
    """The runtime that serves ``model``; raises ``RuntimeNotRecognized`` / ``NoSupportingRuntime``."""
    candidates = effective_runtimes(namespace, runtimes)
    if model.runtime:
        return _explicit(model, namespace, candidates)
    ranked: list[tuple[int, int, str, ServingRuntime]] = []
    for rt in candidates:
        if rt.disabled or not rt.multi_model or not _protocol_ok(rt, model.protocol_version):
            continue
        entry = supported_format(rt, model.format, auto=True)
        if entry is not None:
            ranked.append((-(entry.priority or 0), 1 if rt.cluster else 0, rt.name, rt))
    if not ranked:
        raise NoSupportingRuntime(_no_runtime_message(model, namespace, candidates))
    ranked.sort(key=lambda item: item[:3])
    return ranked[0][3]


def _explicit(model: ModelSource, namespace: str, candidates: list[ServingRuntime]) -> ServingRuntime:
    name = model.runtime or ""
    found = next((rt for rt in candidates if rt.name == name), None)
    if found is None:
        known = ", ".join(rt.name for rt in candidates) or "none"
        raise RuntimeNotRecognized(
            f"runtime '{name}' not found: no ServingRuntime '{name}' in namespace '{namespace}' and no "
            f"ClusterServingRuntime '{name}' (known runtimes: {known})")
    if found.disabled:
        raise RuntimeNotRecognized(f"{found.kind} '{name}' is disabled")
    if not found.multi_model:
        raise RuntimeNotRecognized(f"{found.kind} '{name}' is not a multi-model runtime (multiModel: true is "
                                   "required in ModelMesh mode)")
    if supported_format(found, model.format, auto=False) is None:
        offered = ", ".join(f.name + (f":{f.version}" if f.version else "") for f in found.formats) or "none"
        raise NoSupportingRuntime(f"{found.kind} '{name}' does not support {_describe(model.format, None)} "
                                  f"(it supports: {offered})")
    if not _protocol_ok(found, model.protocol_version):
        raise NoSupportingRuntime(f"{found.kind} '{name}' does not support protocol '{model.protocol_version}' "
                                  f"(it supports: {', '.join(found.protocol_versions)})")
    return found


def _no_runtime_message(model: ModelSource, namespace: str, candidates: list[ServingRuntime]) -> str:
    msg = (f"no ServingRuntime in namespace '{namespace}' or ClusterServingRuntime supports "
           f"{_describe(model.format, model.protocol_version)} with autoSelect")
    near = []
    for rt in candidates:
        if supported_format(rt, model.format, auto=False) is None:
            continue
        why = ("disabled" if rt.disabled else "not multiModel" if not rt.multi_model
               else "protocol not supported" if not _protocol_ok(rt, model.protocol_version)
               else "format not autoSelect")
        near.append(f"{rt.name} ({why})")
    if near:
        msg += f"; runtimes that list the format but were skipped: {', '.join(near)}"
    return msg
