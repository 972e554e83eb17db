"""A request as the router moves it: served by the runtime here, or sent to a peer.

Both kinds of inference side by side:

- ``GrpcHop``: a decoded V2 ``ModelInferRequest`` (from gRPC, or a peer's forwarded gRPC request).
  Here it goes to the runtime; to a peer as a serialized message over HTTP (``PeerPool.infer_proto``,
  received at ``wire.FORWARD_PATH``), or over gRPC when the model id cannot be an HTTP header.
- ``RestHop``: a V2 REST body. Here it is decoded (small bodies inline, large ones by the
  ``Decoder`` the REST front door injects, never on the event loop) and its answer rendered; a
  small body for a runtime that takes arrays (the built-in one in this process) goes straight to
  arrays, with no message in between; one for a runtime that takes REST bodies (the built-in one
  in its own process, over the local link) goes to it as it came. To a peer it travels as the
  bytes it came with (``PeerPool.infer_http``), undecoded, and the peer's answer comes back as
  bytes too.

Each runtime call here is timed and told to the ``InvokeObserver`` (``modelmesh_invoke_model_milliseconds``),
with the API method it serves; a forward is not an invocation here (the peer times its own).

A hop's answer is transport-neutral: a ``ModelInferResponse`` or a ``RestAnswer`` (body, media
type, headers) that the REST front door turns into its response. ``Hops`` makes both for one
instance (its runtime, and its peers once it joins a mesh).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc

from kserve_mesh.core.ids import ModelId
from kserve_mesh.core.records import InstanceRecord
from kserve_mesh.mesh.peers import PeerPool
from kserve_mesh.mesh.relay import RawStream, RelayedStatus, passed_through, relay
from kserve_mesh.mesh.wire import HEADER_LENGTH, MODEL_ID, MODEL_ID_BIN, carried_headers, header_safe, id_header
from kserve_mesh.protocol import rest as codec
from kserve_mesh.protocol import v2
from kserve_mesh.protocol.rest_arrays import ArrayRequest, parse_infer_arrays, render_arrays_response
from kserve_mesh.runtime.spi import ModelRuntime

T_co = TypeVar("T_co", covariant=True)
R = TypeVar("R")

GRPC_INFER = "inference.GRPCInferenceService/ModelInfer"
REST_INFER = "POST /v2/models/{name}/infer"
GRPC_STREAM_INFER = "inference.GRPCInferenceService/ModelStreamInfer"
GRPC_RELAY = "grpc relayed"
"""Any other gRPC method relayed to a model's runtime (one label for all: callers name methods)."""
"""How inference is named in the request metrics (``method`` label): per API, as ModelMesh does."""


class InvokeObserver(Protocol):
    """Told of each runtime invocation on this instance (``api/telemetry.Telemetry``)."""

    def invoked(self, method: str, error: BaseException | None, seconds: float, model_id: str,
                vmodel_id: str = "") -> None:
        ...


class Hop(Protocol[T_co]):
    """One request, as the router moves it: served here or sent to a peer."""

    def prepare(self) -> None:
        """Check and decode the request for serving here (raises InvalidArgument); idempotent."""

    async def run(self, timeout_s: float) -> T_co:
        """Serve it with the local copy (entered by the caller) within ``timeout_s``."""

    async def forward(self, peer: InstanceRecord, load: bool, timeout_s: float) -> T_co:
        """Send it to ``peer`` (``load``: the peer was chosen to load the model). Raises
        ``PeerUnavailable`` when another instance should be tried, ``ModelLoadFailed`` when the
        peer's load failed."""


class Decoder(Protocol):
    """Decodes a large V2 REST body off the event loop (``api/rest_decode.JsonDecoder``): bodies
    of at least ``offload_bytes``; smaller ones are decoded inline (a few ms at most)."""

    offload_bytes: int

    async def decode(self, body: bytes, model_id: str, header_length: int | None) -> tuple[Any, codec.ResponseOptions]:
        ...


@dataclass(frozen=True, slots=True)
class RestAnswer:
    """A V2 REST inference answer: its bytes, media type and headers."""

    body: bytes
    media_type: str
    headers: dict[str, str]


class Hops:
    """The hops of one instance: its runtime, and its peers once it joins a mesh (``peers``)."""

    def __init__(self, runtime: ModelRuntime, peers: Callable[[], PeerPool | None], *,
                 observer: InvokeObserver | None = None) -> None:
        self.runtime = runtime
        self.takes_arrays = callable(getattr(runtime, "infer_arrays", None))
        """The runtime takes a REST request as arrays (``spi.ArrayRuntime``)."""
        self.takes_rest = not self.takes_arrays and callable(getattr(runtime, "infer_rest", None))
        """The runtime takes a REST body as it came (``spi.RestRuntime``; one in this process that
        takes arrays is given arrays, decoded before its timed call as the message was)."""
        self._peers = peers
        self.observer = observer

    async def invoke(self, method: str, model_id: str, vmodel_id: str, call: Awaitable[R]) -> R:
        """Await one runtime call, timed for the observer (with its error, if it raised)."""
        observer = self.observer
        if observer is None:
            return await call
        start = time.perf_counter()
        try:
            answer = await call
        except BaseException as exc:
            observer.invoked(method, exc, time.perf_counter() - start, model_id, vmodel_id)
            raise
        observer.invoked(method, None, time.perf_counter() - start, model_id, vmodel_id)
        return answer

    def peers(self) -> PeerPool:
        peers = self._peers()
        assert peers is not None, "forwarding needs a mesh (Instance.attach)"
        return peers

    def grpc(self, model_id: ModelId, request: v2.ModelInferRequest, vmodel_id: str = "") -> GrpcHop:
        return GrpcHop(self, model_id, request, vmodel_id)

    def rest(self, model_id: ModelId, body: bytes, header_length: int | None, path: str,
             raw_headers: list[tuple[bytes, bytes]], decoder: Decoder, vmodel_id: str = "") -> RestHop:
        """``path``: the request's raw path ('' if it cannot be forwarded as it came);
        ``raw_headers``: its ASGI headers (the ``wire.CARRIED`` ones travel with it)."""
        return RestHop(self, model_id, body, header_length, path, raw_headers, decoder, vmodel_id)

    def stream(self, model_id: ModelId, stream: RawStream, vmodel_id: str = "") -> StreamHop:
        return StreamHop(self, model_id, stream, vmodel_id)

    def stream_infer(self, model_id: ModelId, request: v2.ModelInferRequest,
                     send: Callable[[v2.ModelInferResponse], Awaitable[None]], vmodel_id: str = "") -> StreamInferHop:
        return StreamInferHop(self, model_id, request, send, vmodel_id)


class GrpcHop:
    """A V2 ``ModelInferRequest``: run by the runtime here, or forwarded to a peer."""

    __slots__ = ("hops", "model_id", "request", "vmodel_id")

    def __init__(self, hops: Hops, model_id: ModelId, request: v2.ModelInferRequest, vmodel_id: str = "") -> None:
        self.hops, self.model_id, self.request, self.vmodel_id = hops, model_id, request, vmodel_id

    def prepare(self) -> None:
        pass

    async def run(self, timeout_s: float) -> v2.ModelInferResponse:
        self.request.model_name = self.model_id
        hops = self.hops
        return await hops.invoke(GRPC_INFER, self.model_id, self.vmodel_id,
                                 hops.runtime.infer(self.request, timeout=timeout_s))

    async def forward(self, peer: InstanceRecord, load: bool, timeout_s: float) -> v2.ModelInferResponse:
        return await self.hops.peers().infer_proto(peer, self.model_id, self.request, timeout_s, load=load)


class RestHop:
    """A V2 REST body: decoded and run here, or forwarded as raw bytes to a peer's REST port (no
    decoding here at all); the gRPC hop is the fallback when the model id cannot travel in an HTTP
    header. A small body for a runtime that takes arrays (``spi.ArrayRuntime``, the built-in one in
    this process) is decoded straight to arrays and the answer rendered from the runtime's arrays
    (``protocol/rest_arrays.py``); a small body for a runtime that takes REST bodies
    (``spi.RestRuntime``) is handed over as it came (checked here first only when it would cause a
    load: ``prepare``); otherwise it becomes a ``ModelInferRequest``."""

    __slots__ = ("body", "decoder", "hops", "length", "model_id", "options", "path", "raw_headers", "req",
                 "vmodel_id")

    def __init__(self, hops: Hops, model_id: ModelId, body: bytes, length: int | None, path: str,
                 raw_headers: list[tuple[bytes, bytes]], decoder: Decoder, vmodel_id: str = "") -> None:
        self.hops, self.model_id, self.body, self.length = hops, model_id, body, length
        self.path, self.raw_headers, self.decoder, self.vmodel_id = path, raw_headers, decoder, vmodel_id
        self.req: Any = None  # an ArrayRequest or a ModelInferRequest, once decoded
        self.options: Any = None

    def prepare(self) -> None:
        """Decode a small body now (so a bad request fails before it causes a load); a large one
        is decoded by ``run`` through the decoder, never on the event loop."""
        if self.req is None and len(self.body) < self.decoder.offload_bytes:
            if self.hops.takes_arrays:
                self.req = parse_infer_arrays(self.body, self.length)
                self.options = self.req.options
            else:
                self.req, self.options = codec.parse_infer_request(self.body, self.model_id, header_length=self.length)

    async def _message(self) -> v2.ModelInferRequest:
        """The body as a ``ModelInferRequest`` (a large one decoded by the decoder)."""
        if not isinstance(self.req, v2.ModelInferRequest):
            if len(self.body) < self.decoder.offload_bytes:
                self.req, self.options = codec.parse_infer_request(self.body, self.model_id, header_length=self.length)
            else:
                self.req, self.options = await self.decoder.decode(self.body, self.model_id, self.length)
        return self.req

    def _render(self, resp: Any) -> RestAnswer:
        payload, headers = codec.render_infer_response(resp, self.options)
        return self._answer(payload, headers)

    def _answer(self, payload: bytes, headers: dict[str, str]) -> RestAnswer:
        name, value = id_header(self.model_id)
        headers = {**headers, name: value}
        return RestAnswer(payload, headers.pop("content-type", "application/json"), headers)

    async def _arrays(self, req: ArrayRequest, timeout_s: float) -> tuple[bytes, dict[str, str]]:
        """The runtime's arrays for ``req``, rendered (inside the timed invocation, as the message
        path renders its response there: an output that cannot be rendered is the call's error)."""
        outputs = await self.hops.runtime.infer_arrays(self.model_id, req, timeout=timeout_s)  # type: ignore[attr-defined]
        return render_arrays_response(self.model_id, outputs, req)

    async def run(self, timeout_s: float) -> RestAnswer:
        hops = self.hops
        if hops.takes_rest and len(self.body) < self.decoder.offload_bytes:
            infer_rest = hops.runtime.infer_rest  # type: ignore[attr-defined]
            return self._answer(*await hops.invoke(REST_INFER, self.model_id, self.vmodel_id,
                                                   infer_rest(self.model_id, self.body, self.length, timeout=timeout_s)))
        self.prepare()
        req = self.req
        if isinstance(req, ArrayRequest):
            return self._answer(*await hops.invoke(REST_INFER, self.model_id, self.vmodel_id,
                                                   self._arrays(req, timeout_s)))
        request = await self._message()
        request.model_name = self.model_id
        return self._render(await hops.invoke(REST_INFER, self.model_id, self.vmodel_id,
                                              hops.runtime.infer(request, timeout=timeout_s)))

    async def forward(self, peer: InstanceRecord, load: bool, timeout_s: float) -> RestAnswer:
        peers = self.hops.peers()
        if not (self.path and header_safe(self.model_id)):
            request = await self._message()
            return self._render(await peers.infer(peer.endpoint, self.model_id, request, timeout_s, load=load))
        answer = await peers.infer_http(peer, self.model_id, self.path, self.body, carried_headers(self.raw_headers),
                                        timeout_s, load=load)
        name, value = id_header(self.model_id)
        headers = {name: value}
        if (length := answer.headers.get(HEADER_LENGTH)) is not None:
            headers[HEADER_LENGTH] = length
        return RestAnswer(answer.body, answer.headers.get("content-type", "application/json"), headers)


class StreamHop:
    """Any gRPC call naming a model (``relay.py``): passed through to the runtime here, or to a peer."""

    __slots__ = ("hops", "model_id", "stream", "vmodel_id")

    def __init__(self, hops: Hops, model_id: ModelId, stream: RawStream, vmodel_id: str = "") -> None:
        self.hops, self.model_id, self.stream, self.vmodel_id = hops, model_id, stream, vmodel_id

    def prepare(self) -> None:
        pass

    async def run(self, timeout_s: float) -> None:
        hops = self.hops
        channel = getattr(hops.runtime, "relay_channel", None)
        if channel is None:
            raise RelayedStatus(
                grpc.StatusCode.UNIMPLEMENTED,
                f"method {self.stream.method} cannot reach model '{self.model_id}': the runtime of this instance runs "
                "in its process and serves KServe V2 only (a runtime reached over gRPC, --runtime process or "
                "remote, gets every method)")
        ident = (MODEL_ID, self.model_id) if header_safe(self.model_id) else (MODEL_ID_BIN, self.model_id.encode())
        await hops.invoke(GRPC_RELAY, self.model_id, self.vmodel_id,
                          relay(channel(), self.stream, (ident, *self.stream.metadata), timeout_s, passed_through))

    async def forward(self, peer: InstanceRecord, load: bool, timeout_s: float) -> None:
        await self.hops.peers().relay(peer, self.model_id, self.stream, timeout_s, load=load)


class StreamInferHop:
    """A V2 request whose model may answer several times (a model that streams: ``StreamingRuntime``):
    each response goes to ``send`` as it comes, from the runtime here (``infer_stream``, or the one
    answer of ``infer``) or from a peer (its ``ModelStreamInfer``). ``answered``: something was sent,
    so the request can no longer be tried elsewhere."""

    __slots__ = ("_send", "answered", "hops", "model_id", "request", "vmodel_id")

    def __init__(self, hops: Hops, model_id: ModelId, request: v2.ModelInferRequest,
                 send: Callable[[v2.ModelInferResponse], Awaitable[None]], vmodel_id: str = "") -> None:
        self.hops, self.model_id, self.request, self.vmodel_id = hops, model_id, request, vmodel_id
        self._send = send
        self.answered = False

    def prepare(self) -> None:
        pass

    async def send(self, response: v2.ModelInferResponse) -> None:
        self.answered = True
        await self._send(response)

    async def run(self, timeout_s: float) -> None:
        self.request.model_name = self.model_id
        await self.hops.invoke(GRPC_STREAM_INFER, self.model_id, self.vmodel_id, self._run_here(timeout_s))

    async def _run_here(self, timeout_s: float) -> None:
        runtime = self.hops.runtime
        stream = getattr(runtime, "infer_stream", None)
        if stream is None:
            await self.send(await runtime.infer(self.request, timeout=timeout_s))
            return
        async with contextlib.aclosing(stream(self.request, timeout=timeout_s)) as answers:
            async for response in answers:
                await self.send(response)

    async def forward(self, peer: InstanceRecord, load: bool, timeout_s: float) -> None:
        await self.hops.peers().infer_stream(peer, self.model_id, self.request, self, timeout_s, load=load)
