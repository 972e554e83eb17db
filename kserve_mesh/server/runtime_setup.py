"""The instance's runtime: made from the settings (in-process, a supervised child process on a Unix
socket, or a remote server), waited for until READY, and watched while the instance serves."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from kserve_mesh.core.clock import Clock
from kserve_mesh.core.errors import MeshError, Unavailable
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.mesh.cache_manager import CacheConfig
from kserve_mesh.mesh.runtime_process import RuntimeProcess, allocator_env, describe_exit
from kserve_mesh.runtime.spi import ModelRuntime, RuntimeState
from kserve_mesh.settings import MeshSettings
from kserve_mesh.storage import StoragePolicy

log = logging.getLogger(__name__)

RUNTIME_READY_TIMEOUT_S = 180.0


def builtin_type_check(s: MeshSettings) -> Callable[[ModelInfo], object] | None:
    """How a registration's model type and key are checked: as the built-in runtime (in process or a
    child process) would resolve them at load (its types, ``rt:<runtime>`` with the format in the
    key, the key's ``batching``), so a model it could never load is refused when registered; None
    for a remote runtime, whose types are not known here."""
    if s.runtime == "remote":
        return None
    from kserve_mesh.runtime.builtin.models import resolve_model_spec

    return lambda info: resolve_model_spec(info.type, info.key)


def child_args(s: MeshSettings, cache_dir: Path) -> list[str]:
    """The runtime child's flags that carry the instance's settings (cache, loading, storage)."""
    args = ["--capacity-bytes", str(s.capacity_bytes),
            "--max-loading-concurrency", str(s.max_loading_concurrency),
            "--model-loading-timeout-ms", str(s.model_loading_timeout_ms),
            "--default-model-size-bytes", str(s.default_model_size_bytes),
            "--cache-dir", str(cache_dir),
            "--release-memory" if s.runtime_release_memory else "--no-release-memory",
            "--batch-max-size", str(s.batch_max_size), "--batch-max-delay-ms", f"{s.batch_max_delay_ms:g}"]
    if s.storage_config is not None:
        args += ["--storage-config", str(s.storage_config)]
    return args + StoragePolicy.from_settings(s).flags()  # the same folders, claims and hosts


async def make_runtime(s: MeshSettings, cache_dir: Path) -> tuple[ModelRuntime, RuntimeProcess | None]:
    """The runtime the settings name, and its child process when the instance starts one."""
    if s.runtime == "inprocess":
        from kserve_mesh.runtime.builtin.runtime import BuiltinRuntime, RuntimeConfig
        from kserve_mesh.storage import make_fetcher

        config = RuntimeConfig(capacity_bytes=s.capacity_bytes, max_loading_concurrency=s.max_loading_concurrency,
                               model_loading_timeout_ms=s.model_loading_timeout_ms,
                               default_model_size_bytes=s.default_model_size_bytes,
                               release_memory=s.runtime_release_memory, batch_max_size=s.batch_max_size,
                               batch_max_delay_ms=s.batch_max_delay_ms)
        return BuiltinRuntime(config, make_fetcher(s.storage_config, cache_dir, StoragePolicy.from_settings(s))), None
    from kserve_mesh.runtime.grpc_client import GrpcRuntimeClient

    address, child = s.runtime_address, None
    if s.runtime == "process":
        # On a Unix socket in a private folder (mesh/runtime_process.py), never a loopback port;
        # inference over the local link beside it (runtime_link=frames), the rest over gRPC.
        link = s.runtime_link == "frames"
        child = RuntimeProcess([*child_args(s, cache_dir / "runtime"), "--max-message-bytes",
                                str(s.grpc_max_message_bytes)], env=allocator_env(s.runtime_allocator), link=link)
        address = await child.start()
        if link:
            from kserve_mesh.runtime.local_link import LinkedRuntimeClient

            return LinkedRuntimeClient(address, child.link_path, max_message_bytes=s.grpc_max_message_bytes), child
        return GrpcRuntimeClient(address, max_message_bytes=s.grpc_max_message_bytes), child
    return GrpcRuntimeClient(address), child


def cache_capacity(s: MeshSettings, reported: int) -> int:
    """The cache's capacity: what the runtime reports (ModelMesh's rule; the built-in runtime is
    given ``capacity_bytes``), but never more than a ``capacity_bytes`` set for a remote runtime
    (its own figure may be the whole pod's)."""
    if s.runtime == "remote" and "capacity_bytes" in s.model_fields_set and s.capacity_bytes < reported:
        log.info("cache capacity %d bytes (capacity_bytes), below the %d bytes the runtime reports",
                 s.capacity_bytes, reported)
        return s.capacity_bytes
    return reported


async def wait_runtime_ready(s: MeshSettings, runtime: ModelRuntime, child: RuntimeProcess | None,
                             clock: Clock) -> CacheConfig:
    """Poll runtimeStatus (each call bounded) until READY; fail at once if the child exits."""
    deadline = clock.monotonic() + RUNTIME_READY_TIMEOUT_S
    pause = 0.1
    while True:
        try:
            status = await asyncio.wait_for(runtime.runtime_status(), s.runtime_check_timeout_s)
            if status.state is RuntimeState.READY:
                return CacheConfig(cache_capacity(s, status.capacity_bytes), status.max_loading_concurrency,
                                   status.model_loading_timeout_ms / 1000, status.default_model_size_bytes,
                                   eviction_policy=s.eviction_policy.strip().lower(),
                                   gpu_capacity_bytes=status.gpu_capacity_bytes,
                                   gpu_status=status.gpu_status or "no GPU: the runtime reports none")
        except (MeshError, TimeoutError) as exc:
            log.info("runtime not ready yet: %s", exc or "no answer to runtimeStatus")
        if child is not None and child.returncode is not None:
            raise Unavailable(f"the runtime process exited ({describe_exit(child.returncode)})")
        if clock.monotonic() > deadline:
            raise Unavailable(f"the runtime was not READY within {RUNTIME_READY_TIMEOUT_S:g} s")
        await asyncio.sleep(pause)
        pause = min(2.0, pause * 2)
