"""KServe on the mesh: resources -> mesh specs (pure), the controller, and a standalone mesh.

Grouped by role, as kopf groups its own (``.importlinter`` keeps the roles apart)::

    core/         the KServe model, pure: parse and validate resources, select runtimes, translate
                  into mesh specs, map mesh status to resource status, read YAML/JSON documents.
                  No I/O, no asyncio; nothing of kopf, Kubernetes, the store, the mesh or api.
    reconcile.py  one reconcile of a model resource with the mesh, through the ``MeshManagement``
                  port: the one piece both sides drive, so it belongs to neither.
    controller/   the Kubernetes side: ``kserve-mesh controller`` (kopf), runtime Deployments, and
                  ``GrpcMesh`` (the port over ``mmesh.ModelMesh``). It never loads the mesh.
    standalone/   a mesh without Kubernetes: ``KubeService`` keeps resources behind its
                  ``ResourceStore`` port and reconciles them on its own ``Instance``.

The controller and the standalone side never import each other.

This module is the public face: everything outside ``kube`` imports from here. The pure model loads
at once (it is light); the two sides load on first use, so a mesh never loads kopf and the
controller never loads the mesh.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kserve_mesh.kube.core.errors import InvalidSpec, NoSupportingRuntime, RuntimeNotRecognized, RuntimeSelectionError
from kserve_mesh.kube.core.manifest import load_documents
from kserve_mesh.kube.core.parse import parse
from kserve_mesh.kube.core.resources import (
    KINDS,
    InferenceService,
    Predictor,
    Resource,
    ServingRuntime,
    is_modelmesh,
    is_namespaced,
    kind_of_plural,
    plural_of,
)
from kserve_mesh.kube.core.runtimes import BUILTIN_RUNTIMES, select_runtime
from kserve_mesh.kube.core.status import ServiceEndpoints
from kserve_mesh.kube.core.translate import MeshModelSpec, translate
from kserve_mesh.kube.reconcile import MeshManagement, Reconciler

if TYPE_CHECKING:
    from kserve_mesh.kube.controller.main import main as controller_main
    from kserve_mesh.kube.controller.mesh_client import GrpcMesh, MeshCredentials, MeshTls
    from kserve_mesh.kube.standalone.ports import ResourceStore
    from kserve_mesh.kube.standalone.service import Applied, KubeService

# name -> (module, attribute): loaded on first use (``__getattr__``)
_LAZY: dict[str, tuple[str, str]] = {
    "controller_main": ("kserve_mesh.kube.controller.main", "main"),
    "GrpcMesh": ("kserve_mesh.kube.controller.mesh_client", "GrpcMesh"),
    "MeshCredentials": ("kserve_mesh.kube.controller.mesh_client", "MeshCredentials"),
    "MeshTls": ("kserve_mesh.kube.controller.mesh_client", "MeshTls"),
    "Applied": ("kserve_mesh.kube.standalone.service", "Applied"),
    "KubeService": ("kserve_mesh.kube.standalone.service", "KubeService"),
    "ResourceStore": ("kserve_mesh.kube.standalone.ports", "ResourceStore"),
}

__all__ = [
    "BUILTIN_RUNTIMES",
    "KINDS",
    "Applied",
    "GrpcMesh",
    "InferenceService",
    "InvalidSpec",
    "KubeService",
    "MeshCredentials",
    "MeshManagement",
    "MeshModelSpec",
    "MeshTls",
    "NoSupportingRuntime",
    "Predictor",
    "Reconciler",
    "Resource",
    "ResourceStore",
    "RuntimeNotRecognized",
    "RuntimeSelectionError",
    "ServiceEndpoints",
    "ServingRuntime",
    "controller_main",
    "is_modelmesh",
    "is_namespaced",
    "kind_of_plural",
    "load_documents",
    "parse",
    "plural_of",
    "select_runtime",
    "translate",
]


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
