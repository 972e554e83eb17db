"""KServe resources of a standalone mesh, kept in the ``Store``: the adapter of kube's ``ResourceStore``.

``kserve_mesh.kube.standalone.ports.ResourceStore`` is what ``kserve-mesh apply | get | delete``
needs of storage; this implements it over the Store port and the key layout (``keys.py``), so the
kube side never builds a key or decodes a value. Keys: InferenceServices under ``Keys.isvc``, the
other kinds under ``Keys.kube_resource``. Each value is JSON ``{"object": <the resource as applied,
with metadata filled in>, "status": <last status>}``, written with sorted keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kserve_mesh.store.base import KeyValue, Store
from kserve_mesh.store.keys import Keys

ISVC_PLURAL = "inferenceservices"
"""Kept under the InferenceService keys the mesh has always used (``Keys.isvc``)."""


@dataclass(frozen=True, slots=True)
class StoredKubeResource:
    resource: dict[str, Any]
    status: dict[str, Any]
    revision: int


class KubeResourceStore:
    """``ResourceStore`` over a ``Store``, under one mesh root (``keys``)."""

    def __init__(self, store: Store, keys: Keys) -> None:
        self.store = store
        self.keys = keys

    def _key(self, plural: str, namespace: str, name: str) -> str:
        if plural == ISVC_PLURAL:
            return self.keys.isvc(namespace, name)
        return self.keys.kube_resource(plural, namespace, name)

    def _prefix(self, plural: str, namespace: str | None) -> str:
        if plural == ISVC_PLURAL:
            return self.keys.isvcs_prefix(namespace)
        return self.keys.kube_resources_prefix(plural, namespace)

    async def get(self, plural: str, namespace: str, name: str) -> StoredKubeResource | None:
        kv = await self.store.get(self._key(plural, namespace, name))
        return None if kv is None else _decoded(kv)

    async def list(self, plural: str, namespace: str | None = None) -> Sequence[StoredKubeResource]:
        return [_decoded(kv) for kv in await self.store.range(self._prefix(plural, namespace))]

    async def put(self, plural: str, namespace: str, name: str, resource: Mapping[str, Any],
                  status: Mapping[str, Any]) -> None:
        value = {"object": resource, "status": status}
        await self.store.put(self._key(plural, namespace, name), json.dumps(value, sort_keys=True).encode())

    async def delete(self, plural: str, namespace: str, name: str) -> None:
        await self.store.delete(self._key(plural, namespace, name))


def _decoded(kv: KeyValue) -> StoredKubeResource:
    value = json.loads(kv.value)
    return StoredKubeResource(value["object"], value.get("status") or {}, kv.mod_revision)
