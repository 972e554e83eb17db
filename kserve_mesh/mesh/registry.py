"""The registry view of one instance: models and vmodels, written through to the Store.

For the single-instance mesh the in-memory maps are the working copy and the store is the durable
one (a restart re-reads it). Every change goes to the store first, then to the maps, so a store
that is down makes registration fail with ``Unavailable`` instead of leaving the two apart. Reads
on the request path touch only the maps.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from kserve_mesh.core.ids import ModelId, VModelId
from kserve_mesh.core.records import ModelRecord, VModelRecord
from kserve_mesh.store import codec
from kserve_mesh.store.base import Store
from kserve_mesh.store.keys import Keys

log = logging.getLogger(__name__)


class Registry:
    def __init__(self, store: Store, keys: Keys) -> None:
        self._store = store
        self._keys = keys
        self.models: dict[ModelId, ModelRecord] = {}
        self.vmodels: dict[VModelId, VModelRecord] = {}

    async def load(self) -> None:
        """Read every model and vmodel record from the store (startup and resync)."""
        models = await self._store.range(self._keys.models_prefix())
        self.models = {}
        for kv in models:
            rec = codec.decode_model(kv.value)
            self.models[rec.model_id] = rec
        vmodels = await self._store.range(self._keys.vmodels_prefix())
        self.vmodels = {}
        for kv in vmodels:
            vm = codec.decode_vmodel(kv.value)
            self.vmodels[vm.vmodel_id] = vm
        log.info("registry loaded: %d models, %d vmodels", len(self.models), len(self.vmodels))

    def model(self, model_id: str) -> ModelRecord | None:
        return self.models.get(model_id)  # type: ignore[call-overload]

    def vmodel(self, vmodel_id: str) -> VModelRecord | None:
        return self.vmodels.get(vmodel_id)  # type: ignore[call-overload]

    async def put_model(self, rec: ModelRecord) -> None:
        await self._store.put(self._keys.model(rec.model_id), codec.encode_model(rec))
        self.models[rec.model_id] = rec

    async def delete_model(self, model_id: ModelId) -> None:
        await self._store.delete(self._keys.model(model_id))
        self.models.pop(model_id, None)

    async def put_vmodel(self, vm: VModelRecord) -> None:
        await self._store.put(self._keys.vmodel(vm.vmodel_id), codec.encode_vmodel(vm))
        self.vmodels[vm.vmodel_id] = vm

    async def delete_vmodel(self, vmodel_id: VModelId) -> None:
        await self._store.delete(self._keys.vmodel(vmodel_id))
        self.vmodels.pop(vmodel_id, None)

    async def update_model(self, model_id: ModelId, **changes: object) -> ModelRecord | None:
        rec = self.models.get(model_id)
        if rec is None:
            return None
        new = replace(rec, **changes)  # type: ignore[arg-type]
        await self.put_model(new)
        return new

    def refcount(self, model_id: ModelId) -> int:
        return sum(1 for vm in self.vmodels.values() if model_id in (vm.active, vm.target))
