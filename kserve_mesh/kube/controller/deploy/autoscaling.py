"""HorizontalPodAutoscalers for runtime Deployments, from the annotations KServe defines (pure).

A ServingRuntime or ClusterServingRuntime annotated ``serving.kserve.io/autoscalerClass: hpa`` gets
an ``autoscaling/v2`` HorizontalPodAutoscaler for its Deployment in every namespace that uses it,
as ModelMesh Serving does (its ``controllers/hpa``), with the same annotations and defaults:

==================================================  ====================================  =========
annotation                                          meaning                               default
==================================================  ====================================  =========
``serving.kserve.io/autoscalerClass``               ``hpa`` (``none`` or absent: no HPA)
``serving.kserve.io/metrics``                       ``cpu`` or ``memory``                 cpu
``serving.kserve.io/targetUtilizationPercentage``   average utilization target, 1-100     80
``serving.kserve.io/min-scale``                     minReplicas, >= 1                     1
``serving.kserve.io/max-scale``                     maxReplicas (raised to min-scale)     min-scale
==================================================  ====================================  =========

While an HPA runs, it owns the Deployment's replicas: the controller creates the Deployment with
min-scale replicas and never sets them again. A runtime no model uses still scales to zero after
the grace period: its HPA is deleted first (an HPA cannot hold zero replicas). Removing the
annotation deletes the HPA; changing one updates it. A bad value is reported (a Warning Event on
the runtime naming the annotation) and its default is used; an autoscaler class we do not have
(``kpa``, which needs Knative) is reported and makes no HPA.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kserve_mesh.kube.controller.deploy.config import ServingConfig
from kserve_mesh.kube.controller.deploy.objects import (
    LABEL_RUNTIME,
    RuntimeRef,
    common_labels,
    deployment_name,
    owner_reference,
)

AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
METRICS = "serving.kserve.io/metrics"
TARGET_UTILIZATION = "serving.kserve.io/targetUtilizationPercentage"
MIN_SCALE = "serving.kserve.io/min-scale"
MAX_SCALE = "serving.kserve.io/max-scale"
DEFAULT_TARGET = 80
DEFAULT_MIN = 1
HPA_METRICS = ("cpu", "memory")


@dataclass(frozen=True)
class Autoscaling:
    min_replicas: int = DEFAULT_MIN
    max_replicas: int = DEFAULT_MIN
    metric: str = "cpu"
    target_percent: int = DEFAULT_TARGET


@dataclass(frozen=True)
class AutoscalingProblem:
    """An annotation of a runtime that could not be used as written, and what was done instead."""

    annotation: str
    message: str

    def __str__(self) -> str:
        return f"{self.annotation}: {self.message}"


def autoscaling_of(runtime: Mapping[str, Any]) -> tuple[Autoscaling | None, list[AutoscalingProblem]]:
    """The HPA a runtime asks for (None: none), and the problems of its annotations."""
    annotations = (runtime.get("metadata") or {}).get("annotations") or {}
    problems: list[AutoscalingProblem] = []
    cls = str(annotations.get(AUTOSCALER_CLASS, "")).strip()
    if cls.lower() in ("", "none"):
        return None, problems
    if cls.lower() != "hpa":
        problems.append(AutoscalingProblem(AUTOSCALER_CLASS, f"{cls!r} is not supported here (supported: hpa, "
                                                             "none); no autoscaler is made"))
        return None, problems

    def number(key: str, default: int, low: int, high: int | None = None) -> int:
        raw = annotations.get(key)
        if raw is None:
            return default
        text = str(raw).strip()
        value = int(text) if text.isdigit() else None
        if value is None or value < low or (high is not None and value > high):
            span = f"{low}-{high}" if high is not None else f">= {low}"
            problems.append(AutoscalingProblem(key, f"must be an integer {span}, got {raw!r}; "
                                                    f"{default} is used instead"))
            return default
        return value

    metric = str(annotations.get(METRICS, "cpu")).strip().lower()
    if metric not in HPA_METRICS:
        problems.append(AutoscalingProblem(METRICS, f"must be cpu or memory, got {annotations.get(METRICS)!r}; "
                                                    "cpu is used instead"))
        metric = "cpu"
    target = number(TARGET_UTILIZATION, DEFAULT_TARGET, 1, 100)
    low = number(MIN_SCALE, DEFAULT_MIN, 1)
    high = number(MAX_SCALE, low, 1)
    if high < low:
        problems.append(AutoscalingProblem(MAX_SCALE, f"{high} is below {MIN_SCALE} {low}; {low} is used instead"))
        high = low
    return Autoscaling(low, high, metric, target), problems


def runtime_hpa(config: ServingConfig, runtime: Mapping[str, Any], namespace: str,
                autoscaling: Autoscaling) -> dict[str, Any]:
    """The HorizontalPodAutoscaler of ``runtime``'s Deployment in ``namespace`` (same name)."""
    ref = RuntimeRef.of(runtime)
    name = deployment_name(config, ref.name)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**common_labels(config), "name": name, LABEL_RUNTIME: ref.name},
            "ownerReferences": owner_reference(ref),
        },
        "spec": hpa_spec(name, autoscaling),
    }


def hpa_spec(deployment: str, autoscaling: Autoscaling) -> dict[str, Any]:
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
        "minReplicas": autoscaling.min_replicas,
        "maxReplicas": autoscaling.max_replicas,
        "metrics": [{"type": "Resource", "resource": {
            "name": autoscaling.metric,
            "target": {"type": "Utilization", "averageUtilization": autoscaling.target_percent}}}],
    }


def hpa_differs(desired: Mapping[str, Any], existing: Mapping[str, Any]) -> bool:
    """Whether what we would build differs from what exists (the fields we set; the API server's
    defaults, such as ``behavior``, do not count)."""
    have = existing.get("spec") or {}
    want = desired["spec"]
    return any(have.get(key) != want[key] for key in ("scaleTargetRef", "minReplicas", "maxReplicas", "metrics"))
