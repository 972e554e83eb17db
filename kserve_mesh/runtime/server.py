"""The built-in runtime as its own process: a gRPC server of ``mmesh.ModelRuntime`` and of the V2
inference methods (ModelInfer, ModelMetadata, ModelReady, ServerLive, ServerReady, ServerMetadata).

A mesh instance drives it exactly as ModelMesh drives a runtime adapter: management calls on
``mmesh.ModelRuntime``, inference forwarded to ``inference.GRPCInferenceService`` with the concrete
model id in ``model_name`` (``runtimeStatus`` says so in ``methodInfos``). Handlers are registered
as generic handlers over the ``v2`` message classes: importing kserve's generated servicer would
import all of kserve. Errors leave as a status code and a message (``grpc_errors``), never a
traceback.

    python -m kserve_mesh.runtime.server --port 8085 --capacity-bytes 2Gi
    python -m kserve_mesh.runtime.server --listen unix:/run/mesh/runtime.sock

A mesh instance starts its child runtime on a Unix domain socket in a private folder: a loopback
TCP port can be reached by every local user, and ``loadModel`` loads whatever path it is given.
The socket file is made owner-only (0600) as well. ``--host``/``--port`` serve the runtime
container of a Kubernetes pod, which its mesh container reaches over the pod's loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from kserve_mesh import __version__
from kserve_mesh.core.errors import MeshError, ModelNotFound
from kserve_mesh.core.net import is_loopback
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.protocol import v2
from kserve_mesh.protos import model_runtime_pb2 as pb
from kserve_mesh.protos import v2_repository_pb2 as repo_pb
from kserve_mesh.runtime.builtin import BuiltinRuntime, RuntimeConfig
from kserve_mesh.runtime.builtin.fetch import Fetcher
from kserve_mesh.runtime.grpc_errors import ERROR_KIND_KEY, code_of
from kserve_mesh.runtime.local_link import remove_stale_socket, serve_link
from kserve_mesh.runtime.spi import ModelRuntime, RuntimeState

if TYPE_CHECKING:
    from kserve_mesh.storage import StoragePolicy

logger = logging.getLogger(__name__)

RUNTIME_SERVICE = "mmesh.ModelRuntime"
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Methods whose request carries the model id in field 1 (``model_name`` / ``name``).
_ID_FIELD_METHODS = ("ModelInfer", "ModelMetadata", "ModelReady")

Handler = Callable[[Any], Awaitable[Any]]


def _guard(name: str, fn: Handler) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(request)
        except MeshError as err:
            code, message, kind = code_of(err), str(err), type(err).__name__
        except Exception as exc:
            logger.exception("unexpected error in %s", name)
            code, message, kind = grpc.StatusCode.INTERNAL, f"internal error in {name}: {type(exc).__name__}", ""
        await context.abort(code, message, trailing_metadata=((ERROR_KIND_KEY, kind),) if kind else ())

    return handler


class _Service:
    """Converts between the wire messages and the ModelRuntime port."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime

    # mmesh.ModelRuntime
    async def load_model(self, req: pb.LoadModelRequest) -> pb.LoadModelResponse:
        info = ModelInfo(type=req.modelType, path=req.modelPath, key=req.modelKey)
        result = await self.runtime.load_model(req.modelId, info)
        return pb.LoadModelResponse(sizeInBytes=result.size_bytes, maxConcurrency=result.max_concurrency,
                                    residentDeltaBytes=result.resident_delta_bytes, gpuBytes=result.gpu_bytes)

    async def unload_model(self, req: pb.UnloadModelRequest) -> pb.UnloadModelResponse:
        await self.runtime.unload_model(req.modelId)
        return pb.UnloadModelResponse()

    async def predict_model_size(self, req: pb.PredictModelSizeRequest) -> pb.PredictModelSizeResponse:
        info = ModelInfo(type=req.modelType, path=req.modelPath, key=req.modelKey)
        return pb.PredictModelSizeResponse(sizeInBytes=await self.runtime.predict_model_size(req.modelId, info))

    async def model_size(self, req: pb.ModelSizeRequest) -> pb.ModelSizeResponse:
        return pb.ModelSizeResponse(sizeInBytes=await self.runtime.model_size(req.modelId))

    async def runtime_status(self, req: pb.RuntimeStatusRequest) -> pb.RuntimeStatusResponse:
        status = await self.runtime.runtime_status()
        resp = pb.RuntimeStatusResponse(
            status=status.state.value,
            capacityInBytes=status.capacity_bytes,
            maxLoadingConcurrency=status.max_loading_concurrency,
            modelLoadingTimeoutMs=status.model_loading_timeout_ms,
            defaultModelSizeInBytes=status.default_model_size_bytes,
            runtimeVersion=status.runtime_version,
            limitModelConcurrency=status.limit_model_concurrency,
            residentBytes=status.resident_bytes,
            baselineBytes=status.baseline_bytes,
            gpuCapacityBytes=status.gpu_capacity_bytes,
            gpuStatus=status.gpu_status,
            batchSizeCounts=status.batch_size_counts,
            batchSizeTotal=status.batch_size_total,
        )
        for method in _ID_FIELD_METHODS:
            resp.methodInfos[f"{v2.SERVICE}/{method}"].idInjectionPath.append(1)
        return resp

    # inference.GRPCInferenceService
    async def model_infer(self, req: v2.ModelInferRequest) -> v2.ModelInferResponse:
        return await self.runtime.infer(req)

    async def model_metadata(self, req: v2.ModelMetadataRequest) -> v2.ModelMetadataResponse:
        return await self.runtime.model_metadata(req.name)

    async def model_ready(self, req: v2.ModelReadyRequest) -> v2.ModelReadyResponse:
        try:
            await self.runtime.model_metadata(req.name)
        except ModelNotFound:
            return v2.ModelReadyResponse(ready=False)
        return v2.ModelReadyResponse(ready=True)

    async def server_live(self, req: v2.ServerLiveRequest) -> v2.ServerLiveResponse:
        return v2.ServerLiveResponse(live=True)

    async def server_ready(self, req: v2.ServerReadyRequest) -> v2.ServerReadyResponse:
        status = await self.runtime.runtime_status()
        return v2.ServerReadyResponse(ready=status.state == RuntimeState.READY)

    async def server_metadata(self, req: v2.ServerMetadataRequest) -> v2.ServerMetadataResponse:
        return v2.ServerMetadataResponse(name="kserve-mesh-runtime", version=__version__)

    async def model_stream_infer(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        """Triton's ModelStreamInfer on the runtime's port: each request answered with every response
        its model streams (``infer_stream``), or with the one of ``infer``. An error ends the call
        with its code, as on the unary methods (the mesh sends one request per call)."""
        stream = getattr(self.runtime, "infer_stream", None)
        try:
            async for request in requests:
                if stream is None:
                    answer = await self.runtime.infer(request, timeout=context.time_remaining())
                    await context.write(repo_pb.ModelStreamInferResponse(infer_response=answer.SerializeToString()))
                    continue
                async for answer in stream(request, timeout=context.time_remaining()):
                    await context.write(repo_pb.ModelStreamInferResponse(infer_response=answer.SerializeToString()))
        except MeshError as err:
            await context.abort(code_of(err), str(err), trailing_metadata=((ERROR_KIND_KEY, type(err).__name__),))
        except Exception as exc:  # the edge: log the bug, answer a clean INTERNAL
            logger.exception("unexpected error in ModelStreamInfer")
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error in ModelStreamInfer: {type(exc).__name__}")

    def generic_handlers(self) -> list[grpc.GenericRpcHandler]:
        def unary(name: str, fn: Handler, req: Any, resp: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                _guard(name, fn), request_deserializer=req.FromString, response_serializer=resp.SerializeToString
            )

        runtime = {
            "loadModel": unary("loadModel", self.load_model, pb.LoadModelRequest, pb.LoadModelResponse),
            "unloadModel": unary("unloadModel", self.unload_model, pb.UnloadModelRequest, pb.UnloadModelResponse),
            "predictModelSize": unary(
                "predictModelSize", self.predict_model_size, pb.PredictModelSizeRequest, pb.PredictModelSizeResponse
            ),
            "modelSize": unary("modelSize", self.model_size, pb.ModelSizeRequest, pb.ModelSizeResponse),
            "runtimeStatus": unary(
                "runtimeStatus", self.runtime_status, pb.RuntimeStatusRequest, pb.RuntimeStatusResponse
            ),
        }
        inference = {
            "ModelInfer": unary("ModelInfer", self.model_infer, v2.ModelInferRequest, v2.ModelInferResponse),
            "ModelMetadata": unary(
                "ModelMetadata", self.model_metadata, v2.ModelMetadataRequest, v2.ModelMetadataResponse
            ),
            "ModelReady": unary("ModelReady", self.model_ready, v2.ModelReadyRequest, v2.ModelReadyResponse),
            "ServerLive": unary("ServerLive", self.server_live, v2.ServerLiveRequest, v2.ServerLiveResponse),
            "ServerReady": unary("ServerReady", self.server_ready, v2.ServerReadyRequest, v2.ServerReadyResponse),
            "ServerMetadata": unary(
                "ServerMetadata", self.server_metadata, v2.ServerMetadataRequest, v2.ServerMetadataResponse
            ),
        }
        inference["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
            self.model_stream_infer, request_deserializer=v2.ModelInferRequest.FromString,
            response_serializer=repo_pb.ModelStreamInferResponse.SerializeToString)
        return [
            grpc.method_handlers_generic_handler(RUNTIME_SERVICE, runtime),
            grpc.method_handlers_generic_handler(v2.SERVICE, inference),
        ]


class RuntimeServer:
    """A running runtime server: the gRPC server and the runtime behind it."""

    def __init__(self, server: grpc.aio.Server, runtime: ModelRuntime, port: int, owns_runtime: bool,
                 address: str = "") -> None:
        self.grpc_server = server
        self.runtime = runtime
        self.port = port  # 0 on a Unix domain socket
        self.address = address  # what a client dials: ``host:port`` or ``unix:/path``
        self._owns_runtime = owns_runtime

    async def stop(self, grace: float | None = 5.0) -> None:
        """Stop accepting calls, let calls in flight finish (up to ``grace`` s), close the runtime."""
        await self.grpc_server.stop(grace)
        if self._owns_runtime:
            await self.runtime.close()

    async def wait_for_termination(self) -> None:
        await self.grpc_server.wait_for_termination()


async def serve(
    config: RuntimeConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    runtime: ModelRuntime | None = None,
    fetcher: Fetcher | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    listen: str = "",
    extra_handlers: Sequence[grpc.GenericRpcHandler] = (),
) -> tuple[RuntimeServer, int]:
    """Start a runtime server on ``host:port`` (0: an ephemeral port), or on ``listen`` when given
    (``unix:/path`` or ``host:port``); returns it and the bound port (0 for a Unix socket).

    Without ``runtime`` a ``BuiltinRuntime(config, fetcher)`` is created and closed with the server.
    ``extra_handlers``: more services on the same port (a runtime's own APIs, which the mesh relays
    to it for calls naming a model: ``mesh/relay.py``).
    """
    owns = runtime is None
    rt: ModelRuntime = runtime if runtime is not None else BuiltinRuntime(config, fetcher)
    options = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(handlers=[*_Service(rt).generic_handlers(), *extra_handlers], options=options)
    address = listen or (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    socket_path = address[len("unix:"):] if address.startswith("unix:") else ""
    try:
        if socket_path:
            remove_stale_socket(socket_path)
        bound = server.add_insecure_port(address)
        if bound == 0:
            raise RuntimeError("nothing was bound")
        if socket_path:
            os.chmod(socket_path, 0o600)  # owner only, besides the folder's own permissions
    except (RuntimeError, OSError) as exc:
        if owns:
            await rt.close()
        raise OSError(f"cannot listen on {address}: {exc}") from exc
    await server.start()
    if socket_path:
        bound, where = 0, address
    else:
        host_part = address.rsplit(":", 1)[0]
        where = f"{host_part}:{bound}"
    logger.info("runtime gRPC server listening on %s", where)
    return RuntimeServer(server, rt, bound, owns, where), bound


_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_bytes(text: str) -> int:
    """``"512Mi"``, ``"2G"``, ``"1048576"`` -> bytes (Kubernetes quantity suffixes)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]i?)?[bB]?\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"not a byte size: {text!r} (examples: 1048576, 512Mi, 2G)")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


def parser() -> argparse.ArgumentParser:
    """The flags of ``kserve-mesh runtime`` (``kserve-mesh runtime --help`` draws them)."""
    return _parser()


def _parser() -> argparse.ArgumentParser:
    d = RuntimeConfig()
    p = argparse.ArgumentParser(prog="kserve-mesh runtime", description="Run the built-in model runtime: the "
                                "ModelRuntime SPI and KServe V2 gRPC, for a mesh instance (--runtime remote).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8085, help="port to listen on, 0 for any")
    p.add_argument("--listen", default="", metavar="unix:PATH|HOST:PORT",
                   help="where to listen instead of --host/--port, e.g. unix:/run/mesh/runtime.sock (a Unix "
                        "domain socket, made owner-only)")
    p.add_argument("--link", default="", metavar="unix:PATH",
                   help="also serve ModelInfer over the local link (runtime/local_link.py: framed, multiplexed) "
                        "on this Unix socket, made owner-only: what a mesh instance uses for --runtime process")
    p.add_argument("--parent-pid", type=int, default=0, metavar="PID",
                   help="stop when this process (the mesh instance that started the runtime) ends")
    p.add_argument("--capacity-bytes", type=parse_bytes, default=d.capacity_bytes,
                   help="memory for models, e.g. 2Gi")
    p.add_argument("--max-loading-concurrency", type=int, default=d.max_loading_concurrency,
                   help="loads run at once")
    p.add_argument("--model-loading-timeout-ms", type=int, default=d.model_loading_timeout_ms,
                   help="timeout of one load, from its start")
    p.add_argument("--default-model-size-bytes", type=parse_bytes, default=d.default_model_size_bytes,
                   help="size assumed when a model's size cannot be predicted")
    p.add_argument("--release-memory", action=argparse.BooleanOptionalAction, default=d.release_memory,
                   help="after unloads, give the allocator's free memory back to the OS (glibc malloc_trim)")
    p.add_argument("--batch-max-size", type=int, default=d.batch_max_size,
                   help="adaptive batching: rows per model call at most, for models that take a batch dimension "
                        "(0 or 1: off; a model key's 'batching' overrides)")
    p.add_argument("--batch-max-delay-ms", type=float, default=d.batch_max_delay_ms,
                   help="adaptive batching: longest a request waits for others (0: no deliberate wait)")
    p.add_argument("--max-message-bytes", type=parse_bytes, default=DEFAULT_MAX_MESSAGE_BYTES,
                   help="largest gRPC message accepted or sent")
    p.add_argument("--storage-config", type=Path, default=None,
                   help="storage-config Secret as a JSON file or a mounted directory (one file per key)")
    p.add_argument("--cache-dir", type=Path, default=None, help="where downloaded models go (default: a temp dir)")
    add_storage_policy_flags(p)
    add_listen_guard_flag(p)
    p.add_argument("--log-level", default="INFO", help="DEBUG | INFO | WARNING | ERROR")
    return p


def add_listen_guard_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-non-loopback", action="store_true",
                   help="listen on an address other machines can reach although the runtime API has no "
                        "authentication (only where a network policy lets nothing but the mesh reach it)")


def check_listen(host: str, listen: str, allow_non_loopback: bool) -> None:
    """Refuse to serve the runtime API where others can reach it, unless told to on purpose: it has no
    authentication, and ``loadModel`` of a pickled model from any URL runs that model's code."""
    if listen.startswith("unix:") or allow_non_loopback:
        return
    where = listen.rsplit(":", 1)[0] if listen else host
    if not is_loopback(where):
        raise ValueError(f"refusing to listen on {where}: the runtime API has no authentication, and anyone who "
                         "reaches it can load any model file (a pickled model runs its code). Listen on loopback "
                         "(--host 127.0.0.1) or a Unix socket (--listen unix:PATH) beside the mesh instance, or "
                         "pass --allow-non-loopback where a network policy lets only the mesh reach this port")


def add_storage_policy_flags(p: argparse.ArgumentParser) -> None:
    """The flags of the storage policy (which local folders, PVC claims and hosts models may come
    from), as ``kserve-mesh instance`` names them; the instance passes its own to a runtime child."""
    g = p.add_argument_group("storage policy (what model paths may name)")
    g.add_argument("--allow-local-path", type=Path, action="append", default=[], metavar="DIR",
                   help="a folder local model paths may point into (repeat for more); none: local paths are refused")
    g.add_argument("--pvc-mount-root", type=Path, default=Path("/pvc_mounts"),
                   help="where PVCs are mounted: pvc://claim/path reads ROOT/claim/path (default %(default)s)")
    g.add_argument("--allow-any-pvc", action="store_true",
                   help="pvc:// paths of any claim (else only claims named by a pvc entry of the storage-config)")
    g.add_argument("--http-allowed-host", action="append", default=[], metavar="HOST",
                   help="a host http(s) model paths may name, '.example.com' for its subdomains "
                        "(repeat for more; none: any host)")


def storage_policy(args: argparse.Namespace) -> StoragePolicy:
    """The ``StoragePolicy`` of :func:`add_storage_policy_flags`' flags."""
    from kserve_mesh.storage import StoragePolicy

    return StoragePolicy.of(allow_local_paths=args.allow_local_path, pvc_mount_root=args.pvc_mount_root,
                            allow_any_pvc=args.allow_any_pvc, http_allowed_hosts=args.http_allowed_host)


def _fetcher(args: argparse.Namespace) -> Fetcher:
    from kserve_mesh.storage import make_fetcher

    return make_fetcher(args.storage_config, args.cache_dir, storage_policy(args))


async def _run(args: argparse.Namespace) -> int:
    config = RuntimeConfig(
        capacity_bytes=args.capacity_bytes,
        max_loading_concurrency=args.max_loading_concurrency,
        model_loading_timeout_ms=args.model_loading_timeout_ms,
        default_model_size_bytes=args.default_model_size_bytes,
        release_memory=args.release_memory,
        batch_max_size=args.batch_max_size,
        batch_max_delay_ms=args.batch_max_delay_ms,
    )
    server, port = await serve(
        config, args.host, args.port, fetcher=_fetcher(args), max_message_bytes=args.max_message_bytes,
        listen=args.listen,
    )
    link = None
    if args.link:  # served before the ready line below: the instance connects once it reads that
        try:
            link = await serve_link(_link_path(args.link), server.runtime.infer, infer_rest=server.runtime.infer_rest,
                                    max_message_bytes=args.max_message_bytes)
        except (OSError, ValueError):
            await server.stop(grace=0)
            raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"runtime listening on {server.address if args.listen else f'{args.host}:{port}'}", flush=True)
    try:
        await stop.wait()
    finally:
        logger.info("runtime stopping")
        if link is not None:
            await asyncio.gather(link.close(grace=5.0), server.stop(grace=5.0))
        else:
            await server.stop(grace=5.0)
    return 0


def _link_path(link: str) -> str:
    if not link.startswith("unix:") or len(link) <= len("unix:"):
        raise ValueError(f"--link {link}: the local link listens on a Unix socket only (unix:PATH)")
    return link[len("unix:"):]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``kserve-mesh runtime`` and ``python -m kserve_mesh.runtime.server``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        check_listen(args.host, args.listen, args.allow_non_loopback)
    except ValueError as exc:
        print(f"kserve-mesh runtime: {exc}", file=sys.stderr)
        return 2
    if args.parent_pid:
        _stop_with_parent(args.parent_pid)
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 0
    except (OSError, ValueError, MeshError) as exc:
        print(f"kserve-mesh runtime: {exc}", file=sys.stderr)
        return 1


def _stop_with_parent(parent_pid: int) -> None:
    """Get SIGTERM when the parent ends, even by SIGKILL (Linux ``PR_SET_PDEATHSIG``). Set here,
    not in a ``preexec_fn`` of the parent: Python code between fork and exec in a process full of
    gRPC threads can deadlock, and without one the parent spawns the child with vfork."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent ended before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main())
