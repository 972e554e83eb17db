"""How many copies a model should have: ModelMesh's rate rules, plus per-model bounds.

ModelMesh checks request rates every 10 s (REFERENCE.md §4):

- a model used again 7–40 minutes after an earlier use gets a second copy (it is "recurring", and
  a second copy makes a loss of one instance invisible to it);
- a model whose copies each serve more than ``threshold_rpm`` requests per minute gets
  ``rpm / threshold`` more copies, at most ``max(2, instances / 3)`` at once;
- every 6 minutes, when free space is at most 5 %, idle extra copies are removed.

kserve-mesh adds per-model ``min_copies`` / ``max_copies`` (0 = unbounded), which users asked for.
All functions are pure: rates and times come in as numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SECOND_COPY_MIN_GAP_MS = 7 * 60_000
SECOND_COPY_MAX_GAP_MS = 40 * 60_000
DEFAULT_SCALEUP_RPM = 2000
SCALEDOWN_FREE_FRACTION = 0.05


@dataclass(frozen=True, slots=True)
class CopyBounds:
    min_copies: int = 0
    max_copies: int = 0

    def clamp(self, n: int, instances: int) -> int:
        upper = instances if self.max_copies <= 0 else min(self.max_copies, instances)
        lower = min(max(self.min_copies, 0), upper)
        return max(lower, min(n, upper))


def wants_second_copy(prev_used_ms: int, now_ms: int, copies: int) -> bool:
    """A single-copy model used again 7–40 min after its previous use."""
    gap = now_ms - prev_used_ms
    return copies == 1 and SECOND_COPY_MIN_GAP_MS <= gap <= SECOND_COPY_MAX_GAP_MS


def desired_copies(
    *,
    copies: int,
    rpm: float,
    instances: int,
    bounds: CopyBounds = CopyBounds(),
    threshold_rpm: int = DEFAULT_SCALEUP_RPM,
    recurring: bool = False,
) -> int:
    """Target copy count after one rate check (never below the current count: scaling down is
    ``scale_down_candidates``' job)."""
    target = max(copies, 1)
    if recurring:
        target = max(target, 2)
    if copies > 0 and rpm / copies > threshold_rpm:
        extra = math.floor(rpm / threshold_rpm) - copies
        step = max(2, instances // 3)
        target = max(target, copies + max(1, min(extra, step)))
    return bounds.clamp(target, instances)


@dataclass(frozen=True, slots=True)
class CopyUsage:
    model_id: str
    copies: int
    rpm: float
    bounds: CopyBounds = CopyBounds()


def scale_down_candidates(
    usage: list[CopyUsage],
    *,
    free_fraction: float,
    threshold_rpm: int = DEFAULT_SCALEUP_RPM,
) -> list[str]:
    """Models that should drop one copy because space is short: only when free space is at most 5 %,
    only models with more copies than their traffic and ``min_copies`` need, quietest first."""
    if free_fraction > SCALEDOWN_FREE_FRACTION:
        return []
    out = []
    for u in sorted(usage, key=lambda u: u.rpm / max(u.copies, 1)):
        needed = max(1, math.ceil(u.rpm / threshold_rpm), u.bounds.min_copies)
        if u.copies > needed:
            out.append(u.model_id)
    return out
