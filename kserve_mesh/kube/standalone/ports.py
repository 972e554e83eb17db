"""The port a standalone mesh keeps applied KServe resources behind: ``ResourceStore``.

``KubeService`` (``service.py``) needs four things of storage: read one resource, list a kind
(in one namespace or all), write one, delete one. It says so here and nothing more, so it never
sees store keys, encodings or revisions beyond the one it shows as ``resourceVersion``. The adapter
over the mesh's ``Store`` is ``kserve_mesh.store.kube_resources.KubeResourceStore``; tests may use
any object of this shape.

Resources are addressed as Kubernetes addresses them: ``plural`` (``inferenceservices``...),
``namespace`` (``""`` for a cluster-scoped kind) and ``name``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class StoredResource(Protocol):
    """One stored resource."""

    @property
    def resource(self) -> dict[str, Any]:
        """The resource as applied, with the metadata the mesh fills in (uid, generation...)."""

    @property
    def status(self) -> dict[str, Any]:
        """The status last written for it (``{}`` before any)."""

    @property
    def revision(self) -> int:
        """The store revision of its last write (shown as ``metadata.resourceVersion``)."""


class ResourceStore(Protocol):
    """Applied KServe resources, one record per object."""

    async def get(self, plural: str, namespace: str, name: str) -> StoredResource | None: ...

    async def list(self, plural: str, namespace: str | None = None) -> Sequence[StoredResource]:
        """Every resource of ``plural``; only those of ``namespace`` unless it is None."""
        ...

    async def put(self, plural: str, namespace: str, name: str, resource: Mapping[str, Any],
                  status: Mapping[str, Any]) -> None: ...

    async def delete(self, plural: str, namespace: str, name: str) -> None: ...
