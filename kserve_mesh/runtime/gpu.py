"""The GPU memory of a runtime process, from NVML (``nvidia-ml-py``), for GPU memory accounting.

``GpuProbe.open()`` finds the NVIDIA devices this process may use (``CUDA_VISIBLE_DEVICES`` when it
lists device indexes, else every device NVML sees) and reports their total memory as the GPU
capacity. ``used_bytes()`` is the GPU memory the process (``pid``) uses on them now, from NVML's
per-process accounting; the runtime measures it before and after a load (``LoadResult.gpu_bytes``).
Without a GPU (no ``nvidia-ml-py``, no driver, no device) the probe is disabled: capacity 0 and a
``status`` saying why, which ``runtimeStatus`` and ``kserve-mesh status`` show; nothing is enforced.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class GpuProbe:
    capacity_bytes: int = 0
    status: str = "no GPU"
    pid: int = 0
    _nvml: Any = None
    _handles: tuple[Any, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.capacity_bytes > 0

    @classmethod
    def open(cls, pid: int | None = None, nvml: Any = None) -> GpuProbe:
        """Probe NVML (``nvml``: the ``pynvml`` module, injectable for tests)."""
        pid = os.getpid() if pid is None else pid
        if nvml is None:
            try:
                import pynvml as nvml  # nvidia-ml-py
            except ImportError:
                return cls(status="no GPU: nvidia-ml-py is not installed (pip install 'kserve-mesh[gpu]')", pid=pid)
        try:
            nvml.nvmlInit()
            count = nvml.nvmlDeviceGetCount()
            indexes = _visible(count)
            handles = tuple(nvml.nvmlDeviceGetHandleByIndex(i) for i in indexes)
            total = sum(int(nvml.nvmlDeviceGetMemoryInfo(h).total) for h in handles)
            names = sorted({_text(nvml.nvmlDeviceGetName(h)) for h in handles})
        except Exception as exc:  # noqa: BLE001 - NVMLError and friends: no usable GPU, said plainly
            return cls(status=f"no GPU: NVML is not usable ({exc})", pid=pid)
        if not handles:
            return cls(status=f"no GPU: NVML sees {count} devices, none visible to this process", pid=pid)
        status = f"nvml: {len(handles)} device{'s' if len(handles) > 1 else ''} ({', '.join(names)})"
        return cls(capacity_bytes=total, status=status, pid=pid, _nvml=nvml, _handles=handles)

    def used_bytes(self) -> int:
        """GPU memory this process uses on the visible devices now (0 without a GPU)."""
        if not self.enabled:
            return 0
        nvml, total = self._nvml, 0
        for handle in self._handles:
            try:
                procs = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
            except Exception as exc:  # noqa: BLE001 - a failed reading counts nothing, logged
                log.warning("NVML could not list the processes of a GPU: %s", exc)
                continue
            total += sum(int(p.usedGpuMemory or 0) for p in procs if p.pid == self.pid)
        return total


def _visible(count: int) -> list[int]:
    """The device indexes CUDA_VISIBLE_DEVICES allows (all when unset or not plain indexes)."""
    text = os.environ.get("CUDA_VISIBLE_DEVICES")
    if text is None:
        return list(range(count))
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not all(p.isdigit() for p in parts):
        return list(range(count))  # UUIDs or MIG names: NVML's own order, all of them
    return [int(p) for p in parts if int(p) < count]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
