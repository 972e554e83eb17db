"""Load-failure bookkeeping: when a model counts as LOADING_FAILED and when it may be tried again.

ModelMesh's rules: each failed load leaves a record (instance, time, message). After
``MAX_FAILURES`` failures within ``FAILURE_WINDOW_MS`` no new load is attempted and the last error
is returned; records expire after ``FAILURE_EXPIRY_MS``, after which loading is tried again.
A model with any unexpired failure and no loaded copy reports LOADING_FAILED with the last error.
"""

from __future__ import annotations

from dataclasses import dataclass

from kserve_mesh.core.ids import InstanceId
from kserve_mesh.core.records import FailureRecord

MAX_FAILURES = 3
FAILURE_WINDOW_MS = 450_000  # 7.5 min
FAILURE_EXPIRY_MS = 900_000  # 15 min (MM_LOAD_FAILURE_EXPIRY_TIME_MS)


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    max_failures: int = MAX_FAILURES
    window_ms: int = FAILURE_WINDOW_MS
    expiry_ms: int = FAILURE_EXPIRY_MS

    def live(self, failures: tuple[FailureRecord, ...], now_ms: int) -> tuple[FailureRecord, ...]:
        """Failures that have not expired, oldest first."""
        return tuple(f for f in failures if now_ms - f.time_ms < self.expiry_ms)

    def record(
        self, failures: tuple[FailureRecord, ...], instance: InstanceId, message: str, now_ms: int
    ) -> tuple[FailureRecord, ...]:
        return self.live(failures, now_ms) + (FailureRecord(instance, now_ms, message),)

    def blocked(self, failures: tuple[FailureRecord, ...], now_ms: int) -> bool:
        """True when no new load may be attempted: too many recent failures."""
        recent = [f for f in self.live(failures, now_ms) if now_ms - f.time_ms < self.window_ms]
        return len(recent) >= self.max_failures

    def last_error(self, failures: tuple[FailureRecord, ...], now_ms: int) -> str | None:
        live = self.live(failures, now_ms)
        return live[-1].message if live else None

    def failed_instances(self, failures: tuple[FailureRecord, ...], now_ms: int) -> set[InstanceId]:
        return {f.instance for f in self.live(failures, now_ms)}
