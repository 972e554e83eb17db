"""Errors of the KServe layer, in the mesh's one error tree (``core.errors``).

``InvalidSpec`` is a bad resource: its message starts with the field path that is wrong, e.g.
``spec.predictor.model.storageUri: exactly one of storageUri or storage.path is required``.
``NoSupportingRuntime`` / ``RuntimeNotRecognized`` are runtime-selection failures; they are not
input errors (the resource is fine, the cluster lacks a runtime), so they end up in the resource's
status (``lastFailureInfo.reason``) rather than as a refused request.
"""

from __future__ import annotations

from kserve_mesh.core.errors import FailedPrecondition, InvalidArgument


class InvalidSpec(InvalidArgument):
    """A resource that does not parse or validate. ``path`` names the field (``""`` = the object)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


class RuntimeSelectionError(FailedPrecondition):
    """No runtime can serve a model; ``reason`` is the status failure reason ModelMesh used."""

    reason = ""


class NoSupportingRuntime(RuntimeSelectionError):
    reason = "NoSupportingRuntime"


class RuntimeNotRecognized(RuntimeSelectionError):
    reason = "RuntimeNotRecognized"
