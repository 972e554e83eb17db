"""The registry view of one instance: models and vmodels, written through to the Store.

The in-memory maps serve every read on the request path. Writes go to the store first, then to the
maps, so a store that is down makes a registration fail with ``Unavailable`` instead of leaving the
two apart. In a mesh of several instances (``follow()``), a watch on the registry and vmodel
prefixes keeps the maps current with what the other instances write, and records that several
instances change (a model's copies, failures) are updated with compare-and-set retries
(``mutate_model``), so no instance overwrites another's change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kserve_mesh.core.errors import InvalidArgument, MeshError, ModelNotFound, Unavailable, VModelNotFound
from kserve_mesh.core.ids import ModelId, VModelId
from kserve_mesh.core.records import ModelRecord, VModelRecord
from kserve_mesh.store import codec
from kserve_mesh.store.base import Compacted, EventType, Store
from kserve_mesh.store.keys import Keys

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 20


class Registry:
    def __init__(self, store: Store, keys: Keys) -> None:
        self._store = store
        self._keys = keys
        self.models: dict[ModelId, ModelRecord] = {}
        self.vmodels: dict[VModelId, VModelRecord] = {}
        self.revision = 0
        self.listeners: list[Callable[[str, str], None]] = []  # (kind, id) after a watched change
        self.synced = asyncio.Event()

    @property
    def keys(self) -> Keys:
        """The store's key layout this registry reads and writes (a mesh's cluster shares it)."""
        return self._keys

    async def load(self) -> None:
        """Read every model and vmodel record from the store (startup and resync)."""
        models = await self._store.range(self._keys.models_prefix())
        vmodels = await self._store.range(self._keys.vmodels_prefix())
        self.models = {}
        for kv in models:
            rec = codec.decode_model(kv.value)
            self.models[rec.model_id] = rec
        self.vmodels = {}
        for kv in vmodels:
            vm = codec.decode_vmodel(kv.value)
            self.vmodels[vm.vmodel_id] = vm
        self.revision = max(models.revision, vmodels.revision)
        self.synced.set()
        log.info("registry loaded: %d models, %d vmodels", len(self.models), len(self.vmodels))

    async def follow(self, stop: asyncio.Event) -> None:
        """Keep the maps current from store watches until ``stop``; re-list after gaps or outages."""
        root = self._keys.root_prefix()
        backoff = 0.2
        while not stop.is_set():
            try:
                async with self._store.watch(root, start_revision=self.revision + 1) as watch:
                    backoff = 0.2
                    async for event in watch:
                        self._apply(event)
                        if stop.is_set():
                            return
            except Compacted:
                log.warning("registry watch fell behind the store's history; re-listing")
                await self._resync(stop)
            except (MeshError, OSError) as exc:
                log.warning("registry watch interrupted (%s); retrying in %.1f s", exc, backoff)
                self.synced.clear()
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, 5.0)
                await self._resync(stop)

    async def _resync(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.load()
                self._notify("resync", "")
                return
            except (MeshError, OSError) as exc:
                log.info("registry resync failed (%s); retrying", exc)
                await _sleep_or_stop(stop, 1.0)

    def _apply(self, event) -> None:  # type: ignore[no-untyped-def]
        key = event.kv.key
        self.revision = max(self.revision, event.revision)
        if key.startswith(self._keys.models_prefix()):
            mid = self._keys.model_id_of(key)
            if event.type is EventType.DELETE:
                self.models.pop(mid, None)
            else:
                self.models[mid] = codec.decode_model(event.kv.value)
            kind, ident = "model", mid
        elif key.startswith(self._keys.vmodels_prefix()):
            vid = self._keys.vmodel_id_of(key)
            if event.type is EventType.DELETE:
                self.vmodels.pop(vid, None)
            else:
                self.vmodels[vid] = codec.decode_vmodel(event.kv.value)
            kind, ident = "vmodel", vid
        else:
            return
        self._notify(kind, ident)

    def _notify(self, kind: str, ident: str) -> None:
        for listener in list(self.listeners):  # (a listener may remove itself)
            try:
                listener(kind, ident)
            except Exception:  # one listener's bug must not end the watch that keeps the view current
                log.exception("registry listener %r failed on %s %r", listener, kind, ident)

    async def fetch(self, ident: str) -> None:
        """Read one id's model and vmodel records straight from the store (a miss in the watched
        view can be a write the watch has not delivered yet)."""
        kv = await self._store.get(self._keys.model(ident))
        if kv is not None:
            self.models[ModelId(ident)] = codec.decode_model(kv.value)
        vkv = await self._store.get(self._keys.vmodel(ident))
        if vkv is not None:
            self.vmodels[VModelId(ident)] = codec.decode_vmodel(vkv.value)

    def model(self, model_id: str) -> ModelRecord | None:
        return self.models.get(model_id)  # type: ignore[call-overload]

    def resolve(self, name: str = "", *, model_id: str = "", vmodel_id: str = "") -> ModelId:
        """The concrete model a request is for, as ModelMesh routes: the routing headers first
        (``vmodel_id``, then ``model_id``), then ``name`` as a vmodel, then as a model."""
        if vmodel_id:
            vm = self.vmodels.get(vmodel_id)  # type: ignore[call-overload]
            if vm is None:
                raise VModelNotFound(vmodel_id)
            return vm.active
        if model_id:
            if model_id not in self.models:
                raise ModelNotFound(model_id)
            return ModelId(model_id)
        if not name:
            raise InvalidArgument("no model named: set model_name or the mm-model-id / mm-vmodel-id header")
        vm = self.vmodels.get(name)  # type: ignore[call-overload]
        if vm is not None:
            return vm.active
        if name in self.models:
            return ModelId(name)
        raise ModelNotFound(name)

    def vmodel(self, vmodel_id: str) -> VModelRecord | None:
        return self.vmodels.get(vmodel_id)  # type: ignore[call-overload]

    async def put_model(self, rec: ModelRecord) -> None:
        await self._store.put(self._keys.model(rec.model_id), codec.encode_model(rec))
        self.models[rec.model_id] = rec

    async def create_model(self, rec: ModelRecord) -> ModelRecord:
        """Create a record unless one exists (another instance may register the same id at once);
        returns the record now in the store."""
        res = await self._store.put_if(self._keys.model(rec.model_id), codec.encode_model(rec), expected_mod_revision=0)
        if res.succeeded or res.current is None:
            self.models[rec.model_id] = rec
            return rec
        current = codec.decode_model(res.current.value)
        self.models[rec.model_id] = current
        return current

    async def mutate_model(self, model_id: ModelId, change: Callable[[ModelRecord], ModelRecord]) -> ModelRecord | None:
        """Apply ``change`` to the stored record with compare-and-set retries; None if it is gone."""
        key = self._keys.model(model_id)
        for _ in range(CAS_ATTEMPTS):
            kv = await self._store.get(key)
            if kv is None:
                self.models.pop(model_id, None)
                return None
            rec = codec.decode_model(kv.value)
            new = change(rec)
            if new == rec:
                self.models[model_id] = rec
                return rec
            res = await self._store.put_if(key, codec.encode_model(new), expected_mod_revision=kv.mod_revision)
            if res.succeeded:
                self.models[model_id] = new
                return new
        raise Unavailable(f"could not update the record of model '{model_id}': too much contention")

    async def delete_model(self, model_id: ModelId) -> None:
        await self._store.delete(self._keys.model(model_id))
        self.models.pop(model_id, None)

    async def put_vmodel(self, vm: VModelRecord) -> None:
        await self._store.put(self._keys.vmodel(vm.vmodel_id), codec.encode_vmodel(vm))
        self.vmodels[vm.vmodel_id] = vm

    async def cas_vmodel(self, old: VModelRecord, new: VModelRecord) -> bool:
        """Replace ``old`` by ``new`` only if the stored vmodel still equals ``old`` (transitions)."""
        key = self._keys.vmodel(old.vmodel_id)
        kv = await self._store.get(key)
        if kv is None or codec.decode_vmodel(kv.value) != old:
            return False
        res = await self._store.put_if(key, codec.encode_vmodel(new), expected_mod_revision=kv.mod_revision)
        if res.succeeded:
            self.vmodels[new.vmodel_id] = new
        return res.succeeded

    async def delete_vmodel(self, vmodel_id: VModelId) -> None:
        await self._store.delete(self._keys.vmodel(vmodel_id))
        self.vmodels.pop(vmodel_id, None)

    def refcount(self, model_id: ModelId) -> int:
        return sum(1 for vm in self.vmodels.values() if model_id in (vm.active, vm.target))


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
