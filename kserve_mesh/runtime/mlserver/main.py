"""The MLServer adapter as a runtime process for a mesh: ``python -m kserve_mesh.runtime.mlserver``.

It starts MLServer from its venv (or attaches to a running one with ``--attach-http`` /
``--attach-grpc`` / ``--attach-repository``), puts ``MLServerRuntime`` behind the same gRPC server
as the built-in runtime (``mmesh.ModelRuntime`` + V2 inference), prints
``runtime listening on HOST:PORT`` once it serves, and on SIGTERM/SIGINT stops serving, then stops
MLServer. A mesh instance uses it with ``--runtime remote --runtime-address HOST:PORT``.

    python -m kserve_mesh.runtime.mlserver --port 8085 --capacity-bytes 2Gi
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
from pathlib import Path

from kserve_mesh.core.errors import MeshError
from kserve_mesh.runtime.builtin.fetch import Fetcher
from kserve_mesh.runtime.builtin.runtime import RuntimeConfig
from kserve_mesh.runtime.mlserver.config import VENV_ENV, MLServerConfig
from kserve_mesh.runtime.mlserver.process import MLServerEndpoint
from kserve_mesh.runtime.mlserver.runtime import MLServerRuntime
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


def _parser() -> argparse.ArgumentParser:
    d = MLServerConfig()
    p = argparse.ArgumentParser(prog="python -m kserve_mesh.runtime.mlserver",
                                description="Serve an MLServer process as a ModelMesh runtime (gRPC).")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=8085, help="port to listen on, 0 for any (default %(default)s)")
    p.add_argument("--capacity-bytes", type=parse_bytes, default=d.capacity_bytes,
                   help="memory for models, e.g. 2Gi (default %(default)s)")
    p.add_argument("--max-loading-concurrency", type=int, default=d.max_loading_concurrency)
    p.add_argument("--model-loading-timeout-ms", type=int, default=d.model_loading_timeout_ms)
    p.add_argument("--default-model-size-bytes", type=parse_bytes, default=d.default_model_size_bytes)
    p.add_argument("--max-message-bytes", type=parse_bytes, default=DEFAULT_MAX_MESSAGE_BYTES)
    p.add_argument("--parallel-workers", type=int, default=d.parallel_workers,
                   help="MLServer's inference worker processes (default %(default)s: models in its main process)")
    p.add_argument("--start-timeout-s", type=float, default=d.start_timeout_s)
    p.add_argument("--venv", type=Path, default=None,
                   help=f"MLServer's virtual environment (default: ${VENV_ENV}, else .venv-mlserver)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="MLServer's settings, model settings and log (default: a temp dir, deleted at exit)")
    p.add_argument("--storage-config", type=Path, default=None,
                   help="storage-config Secret as a JSON file or a mounted directory (one file per key)")
    p.add_argument("--cache-dir", type=Path, default=None, help="where downloaded models go")
    add_storage_policy_flags(p)
    add_listen_guard_flag(p)
    attach = p.add_argument_group("attach to a running MLServer instead of starting one")
    attach.add_argument("--attach-http", default=None, help="its REST URL, e.g. http://127.0.0.1:8080")
    attach.add_argument("--attach-grpc", default=None, help="its gRPC host:port, e.g. 127.0.0.1:8081")
    attach.add_argument("--attach-repository", type=Path, default=None,
                        help="its model_repository_root (this process writes model settings there)")
    attach.add_argument("--attach-pid", type=int, default=None, help="its pid, to measure model sizes")
    p.add_argument("--log-level", default="INFO")
    return p


def _config(args: argparse.Namespace) -> MLServerConfig:
    return MLServerConfig(
        capacity_bytes=args.capacity_bytes,
        max_loading_concurrency=args.max_loading_concurrency,
        model_loading_timeout_ms=args.model_loading_timeout_ms,
        default_model_size_bytes=args.default_model_size_bytes,
        parallel_workers=args.parallel_workers,
        start_timeout_s=args.start_timeout_s,
        max_message_bytes=args.max_message_bytes,
    )


def _fetcher(args: argparse.Namespace) -> Fetcher:
    """The storage fetcher under the flags' storage policy; without --cache-dir downloads go to a
    temporary folder removed at exit."""
    from kserve_mesh.storage import make_fetcher

    cache = args.cache_dir
    if cache is None:
        cache = Path(tempfile.mkdtemp(prefix="kserve-mesh-mlserver-cache-"))
        atexit.register(shutil.rmtree, cache, True)
    return make_fetcher(args.storage_config, cache, storage_policy(args))


async def _runtime(args: argparse.Namespace) -> MLServerRuntime:
    config = _config(args)
    attach = (args.attach_http, args.attach_grpc, args.attach_repository)
    if any(a is not None for a in attach):
        if not all(a is not None for a in attach):
            raise ValueError("attaching needs all of --attach-http, --attach-grpc and --attach-repository")
        endpoint = MLServerEndpoint(args.attach_http.rstrip("/"), args.attach_grpc, args.attach_repository,
                                    args.attach_pid)
        return await MLServerRuntime.attach(endpoint, config, fetcher=_fetcher(args))
    return await MLServerRuntime.start(config, venv=args.venv, work_dir=args.work_dir, fetcher=_fetcher(args))


async def _run(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runtime = await _runtime(args)
    try:
        server, port = await serve(RuntimeConfig(), args.host, args.port, runtime=runtime,
                                   max_message_bytes=args.max_message_bytes)
        print(f"runtime listening on {args.host}:{port}", flush=True)
        try:
            await stop.wait()
        finally:
            logger.info("runtime stopping")
            await server.stop(grace=5.0)
    finally:
        await runtime.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m kserve_mesh.runtime.mlserver``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per MLServer call otherwise
    try:
        check_listen(args.host, "", args.allow_non_loopback)
        return asyncio.run(_run(args))
    except (OSError, ValueError, MeshError) as exc:
        print(f"kserve-mesh mlserver runtime: {exc}", file=sys.stderr)
        return 1
