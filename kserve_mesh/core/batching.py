"""Adaptive batching's shared numbers (issue 15): the bounds of a model's batching settings, as the
model key, the InferenceService and the runtime check them, and the buckets of the batch size
histogram, as the runtime counts them and ``kserve_mesh_batch_size`` shows them."""

from __future__ import annotations

MAX_BATCH_SIZE_LIMIT = 65_536
"""Largest ``max_batch_size`` (rows per model call) a model may ask for."""
MAX_BATCH_DELAY_MS_LIMIT = 60_000
"""Largest ``max_batch_delay_ms`` a model may ask for."""

BATCH_SIZE_BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
"""Upper bounds of the batch size histogram (requests per model call); the counts a runtime
reports have one more entry, for calls above the largest bound."""
