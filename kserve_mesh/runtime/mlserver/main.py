"""The MLServer adapter as a runtime process for a mesh: ``python -m kserve_mesh.runtime.mlserver``.

It starts MLServer from its venv (or attaches to a running one with ``--attach-http`` /
``--attach-grpc`` / ``--attach-repository``), puts ``MLServerRuntime`` behind the same gRPC server
as the built-in runtime (``mmesh.ModelRuntime`` + V2 inference), prints
``runtime listening on HOST:PORT`` once it serves, and on SIGTERM/SIGINT stops serving, then stops
MLServer (``runtime.adapters.cli``: the flags and the loop both adapters share). A mesh instance
uses it with ``--runtime remote --runtime-address HOST:PORT``.

    python -m kserve_mesh.runtime.mlserver --port 8085 --capacity-bytes 2Gi
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kserve_mesh.runtime.adapters import cli
from kserve_mesh.runtime.builtin.fetch import Fetcher
from kserve_mesh.runtime.mlserver.config import VENV_ENV, MLServerConfig
from kserve_mesh.runtime.mlserver.process import MLServerEndpoint
from kserve_mesh.runtime.mlserver.runtime import MLServerRuntime


def _parser() -> argparse.ArgumentParser:
    d = MLServerConfig()
    p = argparse.ArgumentParser(prog="python -m kserve_mesh.runtime.mlserver",
                                description="Serve an MLServer process as a ModelMesh runtime (gRPC).")
    cli.add_common_flags(p, d, server="MLServer", recycle_why=" (MLServer keeps unloaded models' memory)")
    p.add_argument("--parallel-workers", type=int, default=d.parallel_workers,
                   help="MLServer's inference worker processes (default %(default)s: models in its main process)")
    p.add_argument("--venv", type=Path, default=None,
                   help=f"MLServer's virtual environment (default: ${VENV_ENV}, else .venv-mlserver)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="MLServer's settings, model settings and log (default: a temp dir, deleted at exit)")
    attach = p.add_argument_group("attach to a running MLServer instead of starting one")
    attach.add_argument("--attach-http", default=None, help="its REST URL, e.g. http://127.0.0.1:8080")
    attach.add_argument("--attach-grpc", default=None, help="its gRPC host:port, e.g. 127.0.0.1:8081")
    attach.add_argument("--attach-repository", type=Path, default=None,
                        help="its model_repository_root (this process writes model settings there)")
    attach.add_argument("--attach-pid", type=int, default=None, help="its pid, to measure model sizes")
    return p


def _config(args: argparse.Namespace) -> MLServerConfig:
    return MLServerConfig(**cli.common_config(args), parallel_workers=args.parallel_workers)


def _fetcher(args: argparse.Namespace) -> Fetcher:
    return cli.fetcher(args, "kserve-mesh-mlserver-cache-")


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


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m kserve_mesh.runtime.mlserver``."""
    # httpx: one INFO line per MLServer call otherwise
    return cli.run_main(argv, _parser(), _runtime, name="mlserver", quiet_loggers=["httpx"])
