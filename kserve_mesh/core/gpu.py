"""GPU memory accounting (issue 11): the second ledger, for runtimes that put models on a GPU.

A runtime that has a GPU reports the GPU memory models may use (``gpu_capacity_bytes``, its
devices' total) and, for each load, the GPU memory the model took (``gpu_bytes``, measured with NVML
across the load: ``runtime/gpu.py``). The cache then keeps two promises: bytes of host memory never
above ``capacity_bytes`` (``cache.CacheLedger``) and GPU bytes never above the GPU capacity (this
ledger). Before a load, the model's last measured GPU size is made room for; after it, the measured
size is held, and copies holding GPU memory are evicted (least recently used first, never one that
is loading or in use) until the GPU fits again. Without a GPU (capacity 0) nothing here is enforced
and ``status`` says why there is none.

Entries are pruned lazily: a model whose copy left the cache (``present`` no longer names it) holds
nothing, so no release hook is needed on every path a copy can leave by.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field


@dataclass(slots=True)
class GpuLedger:
    capacity_bytes: int = 0
    status: str = "no GPU"
    _held: dict[str, int] = field(default_factory=dict)
    _last: dict[str, int] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.capacity_bytes > 0

    def used_bytes(self, present: Collection[str]) -> int:
        """GPU bytes held by the copies in the cache (``present``); forgets the others."""
        for model_id in [m for m in self._held if m not in present]:
            del self._held[model_id]
        return sum(self._held.values())

    def free_bytes(self, present: Collection[str]) -> int:
        return self.capacity_bytes - self.used_bytes(present)

    def held(self, model_id: str) -> int:
        return self._held.get(model_id, 0)

    def expected(self, model_id: str) -> int:
        """The GPU bytes ``model_id`` took when it last loaded (0: never measured)."""
        return self._last.get(model_id, 0)

    def hold(self, model_id: str, gpu_bytes: int) -> None:
        """A loaded copy's measured GPU bytes (0 drops it)."""
        if gpu_bytes < 0:
            raise ValueError(f"GPU bytes of model '{model_id}' must be >= 0, got {gpu_bytes}")
        if gpu_bytes:
            self._held[model_id] = self._last[model_id] = gpu_bytes
        else:
            self._held.pop(model_id, None)

    def forget(self, model_id: str) -> None:
        """A model unregistered: no prediction kept for it."""
        self._held.pop(model_id, None)
        self._last.pop(model_id, None)

    def victims(self, needed_bytes: int, candidates: Iterable[tuple[str, int]]) -> list[str]:
        """Copies to evict so that ``needed_bytes`` more GPU bytes are free: from ``candidates``
        ((model id, last used ms) of evictable copies), least recently used first, only those
        holding GPU memory; fewer (or none) when they cannot free enough."""
        chosen: list[str] = []
        freed = 0
        for model_id, _ in sorted(candidates, key=lambda c: (c[1], c[0])):
            if freed >= needed_bytes:
                break
            if (gpu := self._held.get(model_id, 0)) > 0:
                chosen.append(model_id)
                freed += gpu
        return chosen

    def summary(self, present: Collection[str]) -> dict[str, object]:
        return {"status": self.status, "capacityBytes": self.capacity_bytes, "usedBytes": self.used_bytes(present),
                "models": len(self._held)}
