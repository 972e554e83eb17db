"""The Triton adapter as a runtime process for a mesh: ``python -m kserve_mesh.runtime.triton``.

It starts Triton (``--tritonserver``, else found in ``.venv-triton`` or this environment; see
``config.py``) or attaches to a running one (``--attach-grpc`` / ``--attach-repository``), puts
``TritonRuntime`` behind the same gRPC server as the built-in runtime (``mmesh.ModelRuntime`` + V2
inference), prints ``runtime listening on HOST:PORT`` once it serves, and on SIGTERM/SIGINT stops
serving, then stops Triton (``runtime.adapters.cli``: the flags and the loop both adapters share).
A mesh instance uses it with ``--runtime remote --runtime-address HOST:PORT``.

    python -m kserve_mesh.runtime.triton --port 8085 --capacity-bytes 2Gi
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from kserve_mesh.runtime.adapters import cli
from kserve_mesh.runtime.builtin.fetch import Fetcher
from kserve_mesh.runtime.triton.config import VENV_ENV, TritonConfig
from kserve_mesh.runtime.triton.process import TritonEndpoint
from kserve_mesh.runtime.triton.runtime import TritonRuntime

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    d = TritonConfig()
    p = argparse.ArgumentParser(prog="python -m kserve_mesh.runtime.triton",
                                description="Serve a Triton Inference Server as a ModelMesh runtime (gRPC).")
    cli.add_common_flags(p, d, server="Triton")
    p.add_argument("--restart-backoff-max-s", type=float, default=d.restart_backoff_max_s,
                   help="longest wait between tries to start a Triton that died (default %(default)s)")
    p.add_argument("--tritonserver", type=Path, default=None,
                   help="the tritonserver binary of an nvidia-pytriton install (default: found in --triton-venv)")
    p.add_argument("--triton-venv", type=Path, default=None,
                   help=f"a venv with nvidia-pytriton (default: ${VENV_ENV}, else .venv-triton, else this one)")
    p.add_argument("--backend-python", type=Path, default=None,
                   help="the Python that Triton's Python backend embeds (numpy < 2; onnxruntime to serve ONNX); "
                        "default: that of the venv Triton was found in")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="Triton's model repository, backends and log (default: a temp dir, deleted at exit)")
    attach = p.add_argument_group("attach to a running Triton (--model-control-mode=explicit) instead of starting one")
    attach.add_argument("--attach-grpc", default=None, help="its gRPC host:port, e.g. 127.0.0.1:8001")
    attach.add_argument("--attach-repository", type=Path, default=None,
                        help="its --model-repository (this process lays models out there)")
    attach.add_argument("--attach-pid", type=int, default=None, help="its pid, to measure model sizes")
    attach.add_argument("--attach-backends", default="python",
                        help="comma-separated backends it has (default %(default)s)")
    attach.add_argument("--attach-onnx-via-python", action="store_true",
                        help="its Python backend's environment has onnxruntime: serve ONNX models through it")
    return p


def _config(args: argparse.Namespace) -> TritonConfig:
    return TritonConfig(**cli.common_config(args), restart_backoff_max_s=args.restart_backoff_max_s)


def _fetcher(args: argparse.Namespace) -> Fetcher:
    return cli.fetcher(args, "kserve-mesh-triton-cache-")


async def _runtime(args: argparse.Namespace) -> TritonRuntime:
    config = _config(args)
    if args.attach_grpc is not None or args.attach_repository is not None:
        if args.attach_grpc is None or args.attach_repository is None:
            raise ValueError("attaching needs both --attach-grpc and --attach-repository")
        endpoint = TritonEndpoint(args.attach_grpc, args.attach_repository, args.attach_pid)
        backends = frozenset(b.strip() for b in args.attach_backends.split(",") if b.strip())
        return await TritonRuntime.attach(endpoint, config, fetcher=_fetcher(args), backends=backends,
                                          onnxruntime_in_python=args.attach_onnx_via_python)
    return await TritonRuntime.start(config, tritonserver=args.tritonserver, venv=args.triton_venv,
                                     backend_python=args.backend_python, work_dir=args.work_dir,
                                     fetcher=_fetcher(args))


def _announce(runtime: TritonRuntime) -> None:
    logger.info("Triton runtime %s serves %s", runtime.version, ", ".join(runtime.formats()))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m kserve_mesh.runtime.triton``."""
    return cli.run_main(argv, _parser(), _runtime, name="triton", announce=_announce)
