"""What a model held by MLServer is reported to cost: predicted before a load from its bytes on
disk, and measured across the load as the growth of the MLServer process tree's resident memory,
never less than bytes on disk x ``floor_size_factor`` (MLServer keeps freed memory, so a later load
can measure small; the floor keeps the report honest)."""

from __future__ import annotations

import asyncio
import math

from kserve_mesh.core.records import ModelInfo
from kserve_mesh.runtime.builtin.models import resolve_model_spec
from kserve_mesh.runtime.builtin.sizing import disk_size_or_zero, local_path
from kserve_mesh.runtime.mlserver.config import MLServerConfig
from kserve_mesh.runtime.mlserver.memory import tree_rss_bytes
from kserve_mesh.runtime.mlserver.process import MLServerEndpoint


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


def measured_size(config: MLServerConfig, disk: int, before: int | None, after: int | None) -> int:
    """RSS growth of the MLServer process tree, never less than disk x ``floor_size_factor``."""
    floor = math.ceil(disk * config.floor_size_factor)
    delta = after - before if before is not None and after is not None else 0
    return max(delta, floor, 1)


def tree_rss(endpoint: MLServerEndpoint) -> int | None:
    """Resident bytes of the MLServer process tree (None without its pid: sizes are the floor)."""
    return tree_rss_bytes(endpoint.pid) if endpoint.pid else None
