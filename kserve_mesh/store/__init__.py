"""The Store port and its adapters; see ``kserve_mesh.store.base``."""

from kserve_mesh.store.base import (
    CasResult,
    Compacted,
    Compare,
    Delete,
    EventType,
    Get,
    KeyValue,
    LeaseId,
    LeaseNotFound,
    Put,
    RangeResult,
    Store,
    TxnResult,
    Watch,
    WatchEvent,
)
from kserve_mesh.store.keys import Keys
from kserve_mesh.store.memory import MemoryStore

__all__ = [
    "CasResult",
    "Compacted",
    "Compare",
    "Delete",
    "EventType",
    "Get",
    "KeyValue",
    "Keys",
    "LeaseId",
    "LeaseNotFound",
    "MemoryStore",
    "Put",
    "RangeResult",
    "Store",
    "TxnResult",
    "Watch",
    "WatchEvent",
]
