"""Which load runs next when more loads are wanted than the runtime may run at once.

ModelMesh's rule: a load that a request is waiting for gets priority ``now + 2h``; a background load
(loadNow at registration, the leader filling free space, a second copy) gets the model's last-used
time. A cache miss therefore jumps every background load, and among background loads the most
recently used model goes first. A waiting request can raise the priority of a load already queued.
Ties go in arrival order.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from kserve_mesh.core.ids import ModelId

REQUEST_WAITING_BOOST_MS = 2 * 3_600_000


def load_priority(*, last_used_ms: int, now_ms: int, request_waiting: bool) -> int:
    """Higher runs first."""
    return now_ms + REQUEST_WAITING_BOOST_MS if request_waiting else last_used_ms


@dataclass(order=True, slots=True)
class _Item:
    sort_key: tuple[int, int]
    model_id: ModelId = field(compare=False)
    live: bool = field(default=True, compare=False)


class LoadQueue:
    """A max-priority queue of model ids; pushing a queued id again only ever raises its priority."""

    def __init__(self) -> None:
        self._heap: list[_Item] = []
        self._items: dict[ModelId, _Item] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._items

    def priority_of(self, model_id: ModelId) -> int | None:
        item = self._items.get(model_id)
        return None if item is None else -item.sort_key[0]

    def push(self, model_id: ModelId, priority: int) -> None:
        current = self._items.get(model_id)
        if current is not None:
            if -current.sort_key[0] >= priority:
                return
            current.live = False
        item = _Item((-priority, next(self._seq)), model_id)
        self._items[model_id] = item
        heapq.heappush(self._heap, item)

    def pop(self) -> ModelId | None:
        while self._heap:
            item = heapq.heappop(self._heap)
            if item.live:
                del self._items[item.model_id]
                return item.model_id
        return None

    def remove(self, model_id: ModelId) -> bool:
        item = self._items.pop(model_id, None)
        if item is None:
            return False
        item.live = False
        return True
