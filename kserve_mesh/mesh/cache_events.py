"""What the cache tells the rest of the instance: each load's outcome (``LoadOutcome``, for the
records' bookkeeping) and the events the metrics count (``CacheObserver``, implemented by
``api/telemetry.Telemetry``; ``SilentObserver`` when nobody listens).

Every event is told on the event loop, at the moment it happens, in seconds (the observer converts
to its units). Which metric each event feeds is said at the event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kserve_mesh.core.errors import MeshError
from kserve_mesh.core.ids import ModelId


@dataclass(slots=True)
class LoadOutcome:
    """Told to the instance after each load, to update failure records and vmodels."""

    model_id: ModelId
    ok: bool
    error: MeshError | None = None
    size_bytes: int = 0
    duration_s: float = 0.0  # from the start of the load (after the loading queue) to its end
    runtime_fault: bool = False  # the runtime could not be reached: not the model's failure


class CacheObserver(Protocol):
    def cache_miss(self, model_id: str, seconds: float) -> None:
        """A request found no loaded copy here and waited ``seconds`` for a load here (its own or one
        it joined), successful or not (``cache_miss_milliseconds``)."""

    def request_queued(self, model_id: str, seconds: float) -> None:
        """A request served here waited ``seconds`` between reaching the instance's dispatch and its
        runtime call: 0 with a loaded copy, the load's wait (and the record look-up) after a miss
        (``req_queue_delay_milliseconds``)."""

    def load_started(self, model_id: str, queued_s: float) -> None:
        """A load left the loading queue after ``queued_s`` there (``loading_queue_delay_milliseconds``)."""

    def model_sized(self, model_id: str, seconds: float) -> None:
        """A loaded model whose load did not report its size was sized by the runtime in ``seconds``
        (``model_sizing_milliseconds``)."""

    def load_finished(self, outcome: LoadOutcome) -> None:
        """A load ended: its time and size when it worked (``loadmodel_milliseconds``,
        ``loaded_model_size_bytes``), a failure otherwise (``loadmodel_failure``)."""

    def evicted(self, model_id: str, idle_ms: int) -> None:
        """A copy was evicted to make room, ``idle_ms`` after its last use
        (``age_at_eviction_milliseconds``)."""

    def unload_attempt_failed(self, model_id: str) -> None:
        """One call to the runtime's unload failed; it may be retried (``unloadmodel_attempt_failure``)."""

    def unload_finished(self, model_id: str, seconds: float, ok: bool) -> None:
        """A copy left the cache ``seconds`` after its unload began: unloaded (``unloadmodel_milliseconds``)
        or not, every attempt having failed (``unloadmodel_failure``)."""


class SilentObserver:
    """The observer when nobody listens."""

    def cache_miss(self, model_id: str, seconds: float) -> None:
        pass

    def request_queued(self, model_id: str, seconds: float) -> None:
        pass

    def load_started(self, model_id: str, queued_s: float) -> None:
        pass

    def model_sized(self, model_id: str, seconds: float) -> None:
        pass

    def load_finished(self, outcome: LoadOutcome) -> None:
        pass

    def evicted(self, model_id: str, idle_ms: int) -> None:
        pass

    def unload_attempt_failed(self, model_id: str) -> None:
        pass

    def unload_finished(self, model_id: str, seconds: float, ok: bool) -> None:
        pass
