"""Records the mesh keeps about models, vmodels and instances, and their states.

Records are frozen dataclasses: a change makes a new record, which is what a compare-and-set store
wants. Times are epoch milliseconds (ModelMesh's unit for last-used stamps).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from kserve_mesh.core.ids import InstanceId, ModelId, VModelId

# A newly registered model is placed behind recently used ones in the LRU, as ModelMesh does:
# one hour back if it is to load now, six hours back otherwise.
NEW_MODEL_AGE_LOAD_NOW_MS = 3_600_000
NEW_MODEL_AGE_LAZY_MS = 6 * 3_600_000


class ModelState(enum.Enum):
    """Status of a model as ModelMesh's getModelStatus reports it (same names and numbers)."""

    NOT_FOUND = 0
    NOT_LOADED = 1
    LOADING = 2
    LOADED = 3
    LOADING_FAILED = 4
    UNKNOWN = 5


class VModelState(enum.Enum):
    """Status of a vmodel as getVModelStatus reports it (same names and numbers)."""

    NOT_FOUND = 0
    DEFINED = 1
    TRANSITIONING = 2
    TRANSITION_FAILED = 3
    UNKNOWN = 5


class CopyState(enum.Enum):
    """State of one copy of a model in one instance's cache."""

    LOADING = "LOADING"
    LOADED = "LOADED"
    FAILED = "FAILED"
    UNLOADING = "UNLOADING"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a runtime needs to find and load a model: opaque to the mesh, passed to loadModel."""

    type: str
    path: str = ""
    key: str = ""


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """One failed load attempt of a model on an instance."""

    instance: InstanceId
    time_ms: int
    message: str


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """A registered model as the store keeps it.

    ``instances`` maps instance id -> load start time of each copy; ``failures`` holds recent load
    failures (see ``core.failures``). ``min_copies``/``max_copies`` bound the number of copies
    (0 = no bound); ModelMesh had no such control. ``registered_ms`` is when it was registered (0:
    unknown): a ``last_used_ms`` before it is the seed of its LRU place, so the model was never used.
    """

    model_id: ModelId
    info: ModelInfo
    last_used_ms: int
    auto_delete: bool = False
    refcount: int = 0
    instances: dict[InstanceId, int] = field(default_factory=dict)
    failures: tuple[FailureRecord, ...] = ()
    min_copies: int = 0
    max_copies: int = 0
    registered_ms: int = 0


@dataclass(frozen=True, slots=True)
class VModelRecord:
    """A vmodel: a stable name routed to ``active``, moving to ``target`` once it is loaded."""

    vmodel_id: VModelId
    owner: str
    active: ModelId
    target: ModelId
    failed: bool = False

    @property
    def transitioning(self) -> bool:
        return self.active != self.target


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """What an instance publishes about itself for placement (REFERENCE.md §4)."""

    instance_id: InstanceId
    endpoint: str
    capacity_bytes: int
    used_bytes: int
    model_count: int
    lru_time_ms: int
    loading_threads: int = 1
    loads_in_progress: int = 0
    requests_per_minute: int = 0
    shutting_down: bool = False
    recycling: bool = False
    """Its runtime process is being restarted (memory truth, issue 16): no new copies are placed
    here until it is back; the copies it held are gone and load again on demand."""
    start_time_ms: int = 0
    version: str = ""
    zone: str = ""
    labels: tuple[str, ...] = ()
    victim_value: int = -1
    """The eviction policy's value of the copy this instance would evict first (core/eviction.py:
    estimated requests x load ms per MB, rounded); -1 when unknown (the lru policy, an empty cache,
    an older instance). Placement puts a new copy where it displaces the least value."""

    def label(self, key: str) -> str:
        """The value of a ``key=value`` label ('' when absent), e.g. ``label("rest")``."""
        prefix = key + "="
        for item in self.labels:
            if item.startswith(prefix):
                return item[len(prefix):]
        return ""

    @property
    def accepts_loads(self) -> bool:
        """Whether new copies may be placed here (not leaving the mesh, its runtime not restarting)."""
        return not (self.shutting_down or self.recycling)
