"""What a model held by MLServer is reported to cost: predicted before a load from its bytes on
disk; measured across the load as the growth of the MLServer process tree's resident memory, never
less than bytes on disk x ``floor_size_factor`` (``runtime.adapters.loads.measured_size``: MLServer
keeps freed memory, so a later load can measure small; the floor keeps the report honest)."""

from __future__ import annotations

import asyncio
import math

from kserve_mesh.core.records import ModelInfo
from kserve_mesh.runtime.builtin.models import resolve_model_spec
from kserve_mesh.runtime.builtin.sizing import disk_size_or_zero, local_path
from kserve_mesh.runtime.mlserver.config import MLServerConfig


async def predicted_size(info: ModelInfo, config: MLServerConfig) -> int:
    """Bytes on disk x ``predict_size_factor`` + overhead when the files are local (or the
    model key carries ``disk_size_bytes``); the default model size otherwise. No download."""
    spec = resolve_model_spec(info.type, info.key)
    disk = spec.disk_size_bytes
    if not disk:
        local = local_path(info.path)
        if local is not None:
            disk = await asyncio.to_thread(disk_size_or_zero, local)
    if not disk:
        return config.default_model_size_bytes
    return math.ceil(disk * config.predict_size_factor) + config.model_overhead_bytes
