"""What ``python -m kserve_mesh.runtime.mlserver`` and ``python -m kserve_mesh.runtime.triton`` share:
their common flags, the config fields those flags set, the storage fetcher and the main loop.

``add_common_flags`` adds the flags every adapter takes (where to listen, what ``runtimeStatus``
reports, message size, start timeout, recycle threshold, storage, the listen guard, log level);
the adapter adds its own (how to find and run its server, how to attach to a running one) and
builds its config from ``common_config(args)`` and those. ``run_main`` parses the flags, checks
where it is to listen, opens the runtime, serves it behind the same gRPC server as the built-in
runtime (``mmesh.ModelRuntime`` + V2 inference), prints ``runtime listening on HOST:PORT`` once it
serves, and on SIGTERM/SIGINT stops serving, then closes the runtime (which stops its server). A
bad set-up ends with one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import logging
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from kserve_mesh.core.errors import MeshError
from kserve_mesh.runtime.builtin.fetch import Fetcher
from kserve_mesh.runtime.builtin.runtime import RuntimeConfig
from kserve_mesh.runtime.server import (
    DEFAULT_MAX_MESSAGE_BYTES,
    add_listen_guard_flag,
    add_storage_policy_flags,
    check_listen,
    parse_bytes,
    serve,
    storage_policy,
)

logger = logging.getLogger(__name__)

R = TypeVar("R")


def add_common_flags(p: argparse.ArgumentParser, d: Any, *, server: str, recycle_why: str = "") -> None:
    """The flags of every adapter; ``d``: its config's defaults. ``recycle_why`` (e.g. " (MLServer
    keeps unloaded models' memory)") explains the recycle flag."""
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=8085, help="port to listen on, 0 for any (default %(default)s)")
    p.add_argument("--capacity-bytes", type=parse_bytes, default=d.capacity_bytes,
                   help="memory for models, e.g. 2Gi (default %(default)s)")
    p.add_argument("--max-loading-concurrency", type=int, default=d.max_loading_concurrency)
    p.add_argument("--model-loading-timeout-ms", type=int, default=d.model_loading_timeout_ms)
    p.add_argument("--default-model-size-bytes", type=parse_bytes, default=d.default_model_size_bytes)
    p.add_argument("--max-message-bytes", type=parse_bytes, default=DEFAULT_MAX_MESSAGE_BYTES)
    p.add_argument("--start-timeout-s", type=float, default=d.start_timeout_s)
    p.add_argument("--recycle-bytes", type=parse_bytes, default=d.recycle_bytes,
                   help=f"restart the {server} this adapter started once it holds this much memory beyond its "
                        f"baseline and its models{recycle_why}, reloading its models; 0: never (default %(default)s)")
    p.add_argument("--storage-config", type=Path, default=None,
                   help="storage-config Secret as a JSON file or a mounted directory (one file per key)")
    p.add_argument("--cache-dir", type=Path, default=None, help="where downloaded models go")
    add_storage_policy_flags(p)
    add_listen_guard_flag(p)
    p.add_argument("--log-level", default="INFO")


def common_config(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields the common flags set (keyword arguments of the adapter's config)."""
    return {
        "capacity_bytes": args.capacity_bytes,
        "max_loading_concurrency": args.max_loading_concurrency,
        "model_loading_timeout_ms": args.model_loading_timeout_ms,
        "default_model_size_bytes": args.default_model_size_bytes,
        "start_timeout_s": args.start_timeout_s,
        "max_message_bytes": args.max_message_bytes,
        "recycle_bytes": args.recycle_bytes,
    }


def fetcher(args: argparse.Namespace, cache_prefix: str) -> Fetcher:
    """The storage fetcher under the flags' storage policy; without --cache-dir downloads go to a
    temporary folder (named ``cache_prefix``...) removed at exit."""
    from kserve_mesh.storage import make_fetcher

    cache = args.cache_dir
    if cache is None:
        cache = Path(tempfile.mkdtemp(prefix=cache_prefix))
        atexit.register(shutil.rmtree, cache, True)
    return make_fetcher(args.storage_config, cache, storage_policy(args))


async def serve_runtime(args: argparse.Namespace, open_runtime: Callable[[argparse.Namespace], Awaitable[R]],
                        announce: Callable[[R], None] | None = None) -> int:
    """Open the runtime, serve it until SIGTERM/SIGINT, then stop serving and close it."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runtime: Any = await open_runtime(args)
    try:
        server, port = await serve(RuntimeConfig(), args.host, args.port, runtime=runtime,
                                   max_message_bytes=args.max_message_bytes)
        print(f"runtime listening on {args.host}:{port}", flush=True)
        if announce is not None:
            announce(runtime)
        try:
            await stop.wait()
        finally:
            logger.info("runtime stopping")
            await server.stop(grace=5.0)
    finally:
        await runtime.close()
    return 0


def run_main(argv: list[str] | None, parser: argparse.ArgumentParser,
             open_runtime: Callable[[argparse.Namespace], Awaitable[R]], *, name: str,
             announce: Callable[[R], None] | None = None, quiet_loggers: Iterable[str] = ()) -> int:
    """The entry point of an adapter's command: errors of the set-up end as ``kserve-mesh NAME
    runtime: ...`` on stderr and exit status 1. ``quiet_loggers`` log warnings and up only."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for quiet in quiet_loggers:
        logging.getLogger(quiet).setLevel(logging.WARNING)
    try:
        check_listen(args.host, "", args.allow_non_loopback)
        return asyncio.run(serve_runtime(args, open_runtime, announce))
    except (OSError, ValueError, MeshError) as exc:
        print(f"kserve-mesh {name} runtime: {exc}", file=sys.stderr)
        return 1
