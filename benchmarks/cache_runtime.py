#!/usr/bin/env python3
"""A runtime server for ``cache_replay.py``: the built-in runtime, each load delayed by its model's time.

Real model loads take from milliseconds to minutes; the ``string`` test model loads in
microseconds. To replay a cache workload whose loads cost what they would, this serves the real
``BuiltinRuntime`` over the real ModelRuntime gRPC server (``kserve_mesh.runtime.server.serve``)
and sleeps before each load for the model's time in ``--delays`` (a JSON object: model id ->
milliseconds; models not in it load at once). Sizes stay the runtime's own (a string model's file
size plus its overhead). It prints ``runtime listening on HOST:PORT`` once serving and stops on
SIGTERM/SIGINT or when ``--parent-pid`` exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kserve_mesh.core.records import ModelInfo
from kserve_mesh.runtime.builtin.config import RuntimeConfig
from kserve_mesh.runtime.builtin.runtime import BuiltinRuntime
from kserve_mesh.runtime.server import serve
from kserve_mesh.runtime.spi import LoadResult
from kserve_mesh.storage import StoragePolicy, make_fetcher


class DelayedRuntime(BuiltinRuntime):
    """``BuiltinRuntime`` whose loads first wait the model's configured time."""

    def __init__(self, config: RuntimeConfig, fetcher, delays_ms: dict[str, float]) -> None:  # type: ignore[no-untyped-def]
        super().__init__(config, fetcher)
        self._delays = delays_ms

    async def load_model(self, model_id: str, info: ModelInfo) -> LoadResult:
        delay = self._delays.get(model_id, 0.0)
        if delay > 0:
            await asyncio.sleep(delay / 1000.0)
        return await super().load_model(model_id, info)


async def _run(args: argparse.Namespace) -> int:
    delays = {str(k): float(v) for k, v in json.loads(Path(args.delays).read_text()).items()}
    config = RuntimeConfig(capacity_bytes=args.capacity_bytes, max_loading_concurrency=args.max_loading_concurrency,
                           model_loading_timeout_ms=args.model_loading_timeout_ms,
                           default_model_size_bytes=args.default_model_size_bytes)
    fetcher = make_fetcher(None, args.cache_dir, StoragePolicy.of(allow_local_paths=[args.models]))
    runtime = DelayedRuntime(config, fetcher, delays)
    server, port = await serve(config, "127.0.0.1", 0, runtime=runtime)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"runtime listening on 127.0.0.1:{port}", flush=True)
    try:
        while not stop.is_set():
            if args.parent_pid and not _alive(args.parent_pid):
                break
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass
    finally:
        await server.stop(grace=2.0)
        await runtime.close()
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--delays", required=True, help="JSON file: model id -> load delay in milliseconds")
    p.add_argument("--models", required=True, type=Path, help="the folder model paths may point into")
    p.add_argument("--cache-dir", required=True, type=Path)
    p.add_argument("--capacity-bytes", type=int, required=True)
    p.add_argument("--max-loading-concurrency", type=int, default=2)
    p.add_argument("--model-loading-timeout-ms", type=int, default=60_000)
    p.add_argument("--default-model-size-bytes", type=int, default=1 << 20)
    p.add_argument("--parent-pid", type=int, default=0, help="stop when this process is gone")
    args = p.parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
