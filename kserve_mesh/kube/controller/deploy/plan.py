"""What to change so a namespace runs exactly the runtimes its predictors use (pure).

Input: the runtimes a namespace can use (raw ServingRuntime / ClusterServingRuntime documents, a
namespaced one already overriding a cluster one of the same name), the names in use, the runtime
Deployments we manage there, whether the Service exists, ``now``, and what the controller checked
in the namespace for each runtime's pods (the TLS Secret, the PVC claims: ``PodInputs``). Output:
a list of ``Create`` / ``Patch`` / ``Delete`` actions for the controller to carry out.

- A runtime in use gets its Deployment (created, or patched when what we would build differs:
  a hash of the built spec is kept in an annotation, so defaults the API server adds do not count
  as differences) at full replicas.
- A runtime no longer in use is marked with the time it became unused (an annotation, so a
  restarted controller keeps counting) and scaled to 0 once the scale-to-zero grace has passed.
- A Deployment whose runtime no longer exists is deleted.
- The Service exists as soon as any runtime Deployment does.
- A runtime annotated ``serving.kserve.io/autoscalerClass: hpa`` gets a HorizontalPodAutoscaler
  for its Deployment (``autoscaling.py``): created, updated when the annotations change, deleted
  when they go or when the runtime scales to zero; while it exists it owns the replicas.
  Annotation problems become ``Warn`` actions (a Warning Event on the runtime).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from kserve_mesh.kube.controller.deploy.autoscaling import autoscaling_of, hpa_differs, runtime_hpa
from kserve_mesh.kube.controller.deploy.config import ServingConfig
from kserve_mesh.kube.controller.deploy.objects import (
    ANNOTATION_LAST_USED,
    LABEL_RUNTIME,
    deployment_name,
    desired_replicas,
    runtime_deployment,
    runtime_service,
)
from kserve_mesh.kube.controller.deploy.security import PodInputs

ANNOTATION_SPEC_HASH = "modelmesh-serving.kserve.io/spec-hash"


@dataclass(frozen=True)
class Create:
    kind: str  # Deployment | Service
    body: dict[str, Any]


@dataclass(frozen=True)
class Patch:
    kind: str
    name: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Delete:
    kind: str
    name: str


@dataclass(frozen=True)
class Warn:
    """A Warning Event to post about a runtime (``kind``/``name``): ``key`` identifies the problem."""

    kind: str
    name: str
    key: str
    reason: str
    message: str


Action = Create | Patch | Delete | Warn
HPA = "HorizontalPodAutoscaler"


def spec_hash(deployment: Mapping[str, Any]) -> str:
    """Hash of what we build (labels, owner, pod template), replicas left out."""
    spec = dict(deployment["spec"])
    spec.pop("replicas", None)
    meta = deployment["metadata"]
    doc = {"labels": meta.get("labels"), "owners": meta.get("ownerReferences"), "spec": spec}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def plan_namespace(config: ServingConfig, namespace: str, runtimes: Mapping[str, Mapping[str, Any]],
                   in_use: AbstractSet[str], deployments: Mapping[str, Mapping[str, Any]], service_exists: bool,
                   now: float, inputs: Mapping[str, PodInputs] | None = None,
                   hpas: Mapping[str, Mapping[str, Any]] | None = None) -> list[Action]:
    """Actions for ``namespace``. ``deployments`` maps runtime name -> our Deployment of it;
    ``now`` is epoch seconds (stored in the unused-since annotation); ``inputs`` maps runtime name ->
    what its pods get besides the config (absent: ``PodInputs()``); ``hpas`` maps runtime name ->
    our HorizontalPodAutoscaler of it."""
    actions: list[Action] = []
    hpas = dict(hpas or {})
    for name in sorted(in_use):
        runtime = runtimes.get(name)
        if runtime is None:
            continue  # the runtime vanished; its predictors report RuntimeNotRecognized
        spec = runtime.get("spec") or {}
        autoscaling, problems = autoscaling_of(runtime)
        kind = runtime.get("kind") or "ServingRuntime"
        actions += [Warn(kind, name, f"autoscaling/{p.annotation}", "InvalidAutoscaling", str(p)) for p in problems]
        full = desired_replicas(config, spec, True, None, now) if autoscaling is None else autoscaling.min_replicas
        desired = runtime_deployment(config, runtime, namespace, full, (inputs or {}).get(name, PodInputs()))
        digest = spec_hash(desired)
        desired["metadata"]["annotations"] = {ANNOTATION_SPEC_HASH: digest}
        existing = deployments.get(name)
        if existing is None:
            actions.append(Create("Deployment", desired))
        else:
            replicas = (existing.get("spec") or {}).get("replicas")
            annotations = _annotations(existing)
            # With an HPA the replicas are its own: set only when coming back from zero.
            target = desired["spec"]["replicas"] if autoscaling is None or not replicas else replicas
            if annotations.get(ANNOTATION_SPEC_HASH) != digest:
                body = dict(desired)
                body["metadata"] = {**desired["metadata"], "annotations": {ANNOTATION_SPEC_HASH: digest,
                                                                           ANNOTATION_LAST_USED: None}}
                body["spec"] = {**desired["spec"], "replicas": target}
                actions.append(Patch("Deployment", desired["metadata"]["name"], body))
            elif replicas != target or ANNOTATION_LAST_USED in annotations:
                actions.append(Patch("Deployment", desired["metadata"]["name"], {
                    "metadata": {"annotations": {ANNOTATION_LAST_USED: None}},
                    "spec": {"replicas": target}}))
        actions += _plan_hpa(config, namespace, runtime, autoscaling, hpas.pop(name, None))
    for name, existing in sorted(deployments.items()):
        if name in in_use:
            continue
        dep_name = existing["metadata"]["name"]
        runtime = runtimes.get(name)
        hpa = hpas.pop(name, None)
        if runtime is None:
            if hpa is not None:
                actions.append(Delete(HPA, hpa["metadata"]["name"]))
            actions.append(Delete("Deployment", dep_name))
            continue
        annotations = _annotations(existing)
        since_text = annotations.get(ANNOTATION_LAST_USED)
        try:
            since = float(since_text) if since_text is not None else None
        except ValueError:
            since = None
        replicas = desired_replicas(config, runtime.get("spec") or {}, False, since, now)
        autoscaling, _ = autoscaling_of(runtime)
        body: dict[str, Any] = {}
        if since is None:
            body["metadata"] = {"annotations": {ANNOTATION_LAST_USED: f"{now:.0f}"}}
        if replicas == 0 or autoscaling is None:
            if hpa is not None:  # an HPA cannot hold zero replicas: it goes first
                actions.append(Delete(HPA, hpa["metadata"]["name"]))
            if (existing.get("spec") or {}).get("replicas") != replicas:
                body["spec"] = {"replicas": replicas}
        else:  # still in its grace period, autoscaled: the HPA keeps the replicas
            actions += _plan_hpa(config, namespace, runtime, autoscaling, hpa)
        if body:
            actions.append(Patch("Deployment", dep_name, body))
    for hpa in hpas.values():  # ours, with no Deployment of ours any more
        actions.append(Delete(HPA, hpa["metadata"]["name"]))
    wants_service = bool(in_use & runtimes.keys()) or bool(deployments)
    if wants_service and not service_exists:
        actions.append(Create("Service", runtime_service(config, namespace)))
    return actions


def _plan_hpa(config: ServingConfig, namespace: str, runtime: Mapping[str, Any], autoscaling: Any,
              existing: Mapping[str, Any] | None) -> list[Action]:
    if autoscaling is None:
        return [Delete(HPA, existing["metadata"]["name"])] if existing is not None else []
    desired = runtime_hpa(config, runtime, namespace, autoscaling)
    if existing is None:
        return [Create(HPA, desired)]
    if hpa_differs(desired, existing):
        return [Patch(HPA, desired["metadata"]["name"], {"metadata": {"labels": desired["metadata"]["labels"]},
                                                         "spec": desired["spec"]})]
    return []


def managed_deployments(config: ServingConfig, deployments: list[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Our runtime Deployments among ``deployments``, by runtime name (label selectors are applied
    here too: not every API server honours them)."""
    out: dict[str, Mapping[str, Any]] = {}
    for dep in deployments:
        meta = dep.get("metadata") or {}
        labels = meta.get("labels") or {}
        runtime = labels.get(LABEL_RUNTIME)
        if runtime and labels.get("app.kubernetes.io/managed-by") == "kserve-mesh-controller" \
                and meta.get("name") == deployment_name(config, runtime):
            out[runtime] = dep
    return out


def managed_hpas(config: ServingConfig, hpas: list[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Our HorizontalPodAutoscalers among ``hpas``, by runtime name."""
    out: dict[str, Mapping[str, Any]] = {}
    for hpa in hpas:
        meta = hpa.get("metadata") or {}
        labels = meta.get("labels") or {}
        runtime = labels.get(LABEL_RUNTIME)
        if runtime and labels.get("app.kubernetes.io/managed-by") == "kserve-mesh-controller" \
                and meta.get("name") == deployment_name(config, runtime):
            out[runtime] = hpa
    return out
