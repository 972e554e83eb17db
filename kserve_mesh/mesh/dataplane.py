"""The data plane: what every front door does with a V2 request, written once.

The front doors (``api/grpc_v2.py``, the REST routers, the peer receiver) only convert: they hand
over the request, its routing headers read into a ``wire.Routing`` and their transport's deadline,
and convert the answer (or the mesh error raised) back. Here, in this order:

1. **target**: the routing headers checked against the id rules (``core.ids``), then resolved as
   ModelMesh does (``mm-vmodel-id``, ``mm-model-id``, then ``model_name`` as a vmodel, then as a
   model); in a mesh a miss is looked up in the store before it is ``NotFound``. A request
   forwarded by a peer names its concrete model and is trusted with it.
2. **deadline**: the transport's (a gRPC deadline) or ``DEFAULT_TIMEOUT_S``, shortened by
   ``mm-timeout-ms`` (how a forwarded request carries the sender's remaining time).
3. **dispatch**: local copy, forward, or load here (``dispatch.Dispatcher`` and ``router.py``);
   admission is the cache's (a load waits for space or fails clearly) and ``Overloaded`` comes
   from the runtime.
4. **telemetry**: each inference (and each relayed call of another gRPC method, ``relay.py``) timed once, from here in to the answer, and told to the
   ``RequestObserver`` with its error, if any, and its request and response sizes.
5. **payload logging**: the request and its successful response handed to the ``PayloadSink``
   (``payloads.PayloadLogger``: plain calls that queue, never await) by the instance the client
   called, which knows the vmodel it asked for; a peer's hop is not logged again.

Also here: server and model metadata, readiness, and the repository extension (index, load,
unload). Errors are the mesh's typed errors (``core/errors.py``); each transport maps them with
its one table (``api/errors.py``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol, Self, TypeVar

from kserve_mesh.core.errors import ModelLoadFailed
from kserve_mesh.core.ids import ModelId, check_id
from kserve_mesh.core.records import ModelState
from kserve_mesh.mesh.dispatch import DEFAULT_TIMEOUT_S
from kserve_mesh.mesh.hops import GRPC_INFER, GRPC_RELAY, GRPC_STREAM_INFER, REST_INFER, Decoder, Hop, RestAnswer
from kserve_mesh.mesh.instance import Instance
from kserve_mesh.mesh.relay import RawStream
from kserve_mesh.mesh.wire import MODEL_ID, VMODEL_ID, Routing, check_forwarded
from kserve_mesh.protocol import v2

T = TypeVar("T")

SERVER_NAME = "kserve-mesh"
EXTENSIONS = ("model_repository_extension", "binary_tensor_data", "modelmesh")
__all__ = ["GRPC_INFER", "REST_INFER", "DataPlane", "IndexEntry", "PayloadSink", "RequestObserver",
           "RestRequest", "ServerMetadata"]

_REPOSITORY_STATES = {ModelState.LOADED: "READY", ModelState.LOADING: "LOADING"}


class RequestObserver(Protocol):
    """Told of every inference when it ends (``api/telemetry.Telemetry``)."""

    def request_done(self, method: str, error: BaseException | None, seconds: float, model_id: str, *,
                     vmodel_id: str = "", request_bytes: int | None = None,
                     response_bytes: int | None = None) -> None:
        ...


class PayloadSink(Protocol):
    """Takes each inference's request and response (``payloads.PayloadLogger``); never awaits."""

    def request(self, model_id: str, request_id: str, body: object, *, vmodel_id: str = "",
                headers: dict[str, str] | None = None) -> str | None:
        ...

    def response(self, model_id: str, correlation_id: str, body: object, *, vmodel_id: str = "",
                 headers: dict[str, str] | None = None) -> None:
        ...


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One model in the repository index: its name, V2 state word and why it is not ready."""

    name: str
    state: str
    reason: str


class RestRequest(NamedTuple):
    """A V2 REST inference request as the front door read it."""

    data: bytes
    header_length: int | None
    path: str
    """The raw path ('' when it cannot be forwarded as it came)."""
    raw_headers: list[tuple[bytes, bytes]]
    """The ASGI headers (the ``wire.CARRIED`` ones travel with a forwarded request)."""
    request_id: str = ""
    """``X-Request-Id``, the correlation id of its payload events when given."""


class _Timed:
    """Times one request and tells the observer at the end, with the error if it raised, the model
    and vmodel it was for and its sizes (set by the caller as they become known)."""

    __slots__ = ("method", "model_id", "observer", "request_bytes", "response_bytes", "start", "vmodel_id")

    def __init__(self, observer: RequestObserver | None, method: str) -> None:
        self.observer, self.method, self.model_id, self.vmodel_id = observer, method, "", ""
        self.request_bytes: int | None = None
        self.response_bytes: int | None = None
        self.start = time.perf_counter()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> None:
        if self.observer is not None:
            self.observer.request_done(self.method, error, time.perf_counter() - self.start, self.model_id,
                                       vmodel_id=self.vmodel_id, request_bytes=self.request_bytes,
                                       response_bytes=self.response_bytes)


def _vmodel_of(name: str, route: Routing, model_id: str) -> str:
    """The vmodel a request asked for ('' when it named a model): its header, or its model name
    when that resolved to another id (a vmodel's current model)."""
    if route.vmodel_id:
        return route.vmodel_id
    return name if name and name != model_id and not route.model_id else ""


def _content_headers(raw_headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """A REST body's content type and binary-header length, for the payload sinks."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in raw_headers
            if k == b"content-type" or k == b"inference-header-content-length"}


class DataPlane:
    def __init__(self, instance: Instance, version: str, *, observer: RequestObserver | None = None,
                 payloads: PayloadSink | None = None) -> None:
        self._inst = instance
        self._version = version
        self._observer = observer
        self._payloads = payloads

    # -- health and metadata ---------------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Ready to serve (``Instance.serving_ready``): not while the runtime is lost."""
        return self._inst.serving_ready

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(SERVER_NAME, self._version, EXTENSIONS)

    async def model_metadata(self, name: str, route: Routing,
                             remaining_s: float | None = None) -> tuple[ModelId, v2.ModelMetadataResponse]:
        """The model's metadata from the runtime (loading the model here if needed)."""
        model_id = await self.target(name, route)
        return model_id, await self._inst.model_metadata(model_id, route.timeout_s(remaining_s, DEFAULT_TIMEOUT_S))

    async def model_ready(self, name: str, route: Routing) -> tuple[ModelId, bool]:
        """Whether the model has a loaded copy here."""
        model_id = await self.target(name, route)
        return model_id, self._inst.is_loaded(model_id)

    # -- inference -------------------------------------------------------------------------------
    async def infer(self, data: bytes, route: Routing, *, remaining_s: float | None = None,
                    peer: bool = False) -> v2.ModelInferResponse:
        """A serialized ``ModelInferRequest``: from gRPC, or (``peer``) forwarded by a peer to
        ``wire.FORWARD_PATH``, which takes only forwarded requests naming their model."""
        with _Timed(self._observer, GRPC_INFER) as call:
            if peer:
                check_forwarded(route)
            call.request_bytes = len(data)
            request = v2.parse(v2.ModelInferRequest, data)
            name = request.model_name
            model_id = call.model_id = await self.target(name, route, forwarded=route.forwarded)
            vmodel_id = call.vmodel_id = _vmodel_of(name, route, model_id)
            logger = None if route.forwarded else self._payloads
            cid = logger.request(model_id, request.id, request, vmodel_id=vmodel_id) if logger is not None else None
            resp = await self._dispatch(model_id, self._inst.hops.grpc(model_id, request, vmodel_id), route,
                                        remaining_s)
            if self._observer is not None:
                call.response_bytes = resp.ByteSize()
            if cid is not None:
                logger.response(model_id, cid, resp, vmodel_id=vmodel_id)  # type: ignore[union-attr]
            return resp

    async def infer_rest(self, name: str, route: Routing, read: Callable[[], Awaitable[RestRequest]],
                         decoder: Decoder, *, remaining_s: float | None = None) -> RestAnswer:
        """A V2 REST inference: its body is read (``read``) and checked only once its model is
        known to exist; forwarded to a peer as the bytes it came with, or decoded and run here."""
        with _Timed(self._observer, REST_INFER) as call:
            model_id = call.model_id = await self.target(name, route, forwarded=route.forwarded)
            vmodel_id = call.vmodel_id = _vmodel_of(name, route, model_id)
            body = await read()
            call.request_bytes = len(body.data)
            hop = self._inst.hops.rest(model_id, body.data, body.header_length, body.path, body.raw_headers, decoder,
                                       vmodel_id)
            logger = None if route.forwarded else self._payloads
            cid = None
            if logger is not None:
                cid = logger.request(model_id, body.request_id, body.data, vmodel_id=vmodel_id,
                                     headers=_content_headers(body.raw_headers))
            answer = await self._dispatch(model_id, hop, route, remaining_s)
            call.response_bytes = len(answer.body)
            if cid is not None:
                logger.response(model_id, cid, answer.body, vmodel_id=vmodel_id,  # type: ignore[union-attr]
                                headers={"content-type": answer.media_type, **answer.headers})
            return answer

    async def infer_stream(self, request: v2.ModelInferRequest, route: Routing,
                           send: Callable[[v2.ModelInferResponse], Awaitable[None]], *,
                           remaining_s: float | None = None) -> None:
        """A request whose model may answer several times (``ModelStreamInfer``, ``generate_stream``):
        routed like any inference, each response handed to ``send`` as it comes (a model that does
        not stream answers once). Not payload-logged: a stream's answers are many."""
        with _Timed(self._observer, GRPC_STREAM_INFER) as call:
            call.request_bytes = request.ByteSize() if self._observer is not None else None
            name = request.model_name
            model_id = call.model_id = await self.target(name, route, forwarded=route.forwarded)
            vmodel_id = call.vmodel_id = _vmodel_of(name, route, model_id)
            await self._dispatch(model_id, self._inst.hops.stream_infer(model_id, request, send, vmodel_id), route,
                                 remaining_s)

    async def relay(self, stream: RawStream, route: Routing, *, remaining_s: float | None = None) -> None:
        """Any other gRPC call naming its model in routing headers (``relay.py``): passed through to
        the runtime that holds the model, here or on a peer, loading it on demand. Its messages are
        never decoded, so it is not payload-logged."""
        with _Timed(self._observer, GRPC_RELAY) as call:
            model_id = call.model_id = await self.target("", route, forwarded=route.forwarded)
            vmodel_id = call.vmodel_id = _vmodel_of("", route, model_id)
            await self._dispatch(model_id, self._inst.hops.stream(model_id, stream, vmodel_id), route, remaining_s)

    def _dispatch(self, model_id: ModelId, hop: Hop[T], route: Routing, remaining_s: float | None) -> Awaitable[T]:
        return self._inst.dispatch(model_id, hop, route.timeout_s(remaining_s, DEFAULT_TIMEOUT_S),
                                   forwarded=route.forwarded, balanced=route.balanced)

    def target(self, name: str, route: Routing, *, forwarded: bool = False) -> Awaitable[ModelId]:
        """The concrete model a request is for (awaited by the caller). The id it is routed by
        follows the id rules; ``forwarded``: a peer's hop names the concrete model, trusted as is."""
        if route.vmodel_id:
            check_id(route.vmodel_id, f"header {VMODEL_ID}")
        elif route.model_id:
            check_id(route.model_id, f"header {MODEL_ID}")
        elif name:
            check_id(name, "model name")
        return self._inst.lookup(name, model_id=route.model_id, vmodel_id=route.vmodel_id, forwarded=forwarded)

    # -- the repository extension ----------------------------------------------------------------
    def repository_index(self, ready_only: bool = False) -> list[IndexEntry]:
        """Every registered model with its V2 state (READY, LOADING, UNAVAILABLE)."""
        return [IndexEntry(s.model_id, _REPOSITORY_STATES.get(s.state, "UNAVAILABLE"), "; ".join(s.errors))
                for s in self._inst.list_models() if not ready_only or s.state is ModelState.LOADED]

    async def repository_load(self, name: str, route: Routing) -> ModelId:
        """Load a copy here and wait for it; ``ModelLoadFailed`` with the reasons if it did not load."""
        model_id = await self.target(name, route)
        status = await self._inst.ensure_loaded(model_id, sync=True)
        if status.state is not ModelState.LOADED:
            raise ModelLoadFailed(f"model '{model_id}' did not load: {'; '.join(status.errors) or 'unknown reason'}")
        return model_id

    async def repository_unload(self, name: str, route: Routing) -> ModelId:
        """Unload the copy here (the model stays registered)."""
        model_id = await self.target(name, route)
        await self._inst.unload_copy(model_id)
        return model_id
