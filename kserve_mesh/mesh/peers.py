"""Instance-to-instance forwarding.

A request that this instance cannot serve from a local copy goes to a peer with ModelMesh-style
routing headers: ``mm-model-id`` names the concrete model (so the peer does not resolve vmodels
again), ``mm-forwarded`` marks the hop (the peer serves locally and never forwards again, so a
request makes at most one hop), and ``mm-load`` tells the peer it was chosen to load the model if
it has no copy. The caller's remaining deadline travels with the call.

Headers and paths are ``wire.py``'s. Transport: keep-alive HTTP/1.1 to the peer's REST port
(``http_peer.py``): a V2 REST request as its raw bytes (``infer_http``), a V2 gRPC request as a
serialized ``ModelInferRequest`` (``infer_proto``). gRPC (``infer``) carries what cannot be an HTTP
header value (non-ASCII model ids), and the management calls (``ensure_loaded``).

Transport failures and UNAVAILABLE become ``PeerUnavailable`` so the router retries elsewhere;
other errors keep their meaning (a peer's load failure is the model's failure).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Protocol

import grpc

from kserve_mesh.core.errors import (
    CapacityExceeded,
    DeadlineExceeded,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    MeshError,
    ModelLoadFailed,
    ModelNotFound,
    Overloaded,
    Unavailable,
)
from kserve_mesh.core.records import InstanceRecord
from kserve_mesh.mesh.http_peer import HttpAnswer, HttpPeers
from kserve_mesh.mesh.relay import RawStream, passed_through, relay
from kserve_mesh.mesh.tls import TlsMaterial
from kserve_mesh.mesh.wire import FORWARD_PATH, FORWARDED, LOAD_HERE, MODEL_ID, MODEL_ID_BIN, PROTOBUF, header_safe
from kserve_mesh.protocol import v2
from kserve_mesh.protos import v2_repository_pb2 as repo_pb

log = logging.getLogger(__name__)


class PeerUnavailable(Unavailable):
    """The peer could not be reached or would not take the request: try another instance."""


_CODES: dict[grpc.StatusCode, type[MeshError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: ModelLoadFailed,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.INTERNAL: InternalError,
}


class Answered(Protocol):
    """Where a forwarded stream's answers go (``hops.StreamInferHop``)."""

    answered: bool

    async def send(self, response: v2.ModelInferResponse) -> None: ...


def _peer_error(err: grpc.aio.AioRpcError, endpoint: str, model_id: str) -> MeshError:
    """A peer's gRPC failure as the mesh error it stands for (``PeerUnavailable``: try elsewhere)."""
    code = err.code()
    details = err.details() or code.name
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN):
        return PeerUnavailable(f"instance at {endpoint} unavailable: {details}")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return (CapacityExceeded if "capacity" in details else Overloaded)(details)
    if code is grpc.StatusCode.FAILED_PRECONDITION and "referenced" in details:
        return FailedPrecondition(details)
    if code is grpc.StatusCode.NOT_FOUND:
        return ModelNotFound(model_id, details)
    return _CODES.get(code, InternalError)(details)


class PeerPool:
    """Calls to the other instances of the mesh: over TLS with this instance's certificate when
    ``tls`` is given, with ``token`` as this instance's bearer token when given."""

    def __init__(self, max_message_bytes: int = 16 << 20, *, tls: TlsMaterial | None = None, token: str = "") -> None:
        self._options = [("grpc.max_send_message_length", max_message_bytes),
                         ("grpc.max_receive_message_length", max_message_bytes)]
        self._calls: dict[str, grpc.aio.UnaryUnaryMultiCallable] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.inflight: dict[str, int] = defaultdict(int)
        self.tls = tls
        self._auth: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self.http = HttpPeers(tls=tls, token=token)
        if tls is not None:
            tls.on_change(self._tls_changed)

    def _tls_changed(self) -> None:
        """New certificates: new connections and channels from now on (calls in flight finish)."""
        self.http.close()
        channels = list(self._channels.values())
        self._channels.clear()
        self._calls.clear()
        loop = asyncio.get_running_loop()
        for channel in channels:
            loop.create_task(channel.close(grace=5.0))

    def _channel(self, endpoint: str) -> grpc.aio.Channel:
        if self.tls is None:
            return grpc.aio.insecure_channel(endpoint, options=self._options)
        host = endpoint.rpartition(":")[0]
        options = [*self._options, ("grpc.ssl_target_name_override", self.tls.peer_name(host))]
        return grpc.aio.secure_channel(endpoint, self.tls.grpc_channel_credentials(), options=options)

    def _call(self, endpoint: str) -> grpc.aio.UnaryUnaryMultiCallable:
        call = self._calls.get(endpoint)
        if call is None:
            channel = self._channel(endpoint)
            self._channels[endpoint] = channel
            call = channel.unary_unary(v2.method("ModelInfer"),
                                       request_serializer=v2.ModelInferRequest.SerializeToString,
                                       response_deserializer=v2.ModelInferResponse.FromString)
            self._calls[endpoint] = call
        return call

    async def infer(self, endpoint: str, model_id: str, request: v2.ModelInferRequest, timeout_s: float,
                    *, load: bool) -> v2.ModelInferResponse:
        # gRPC metadata values are ASCII; other ids travel as a binary header (``-bin``).
        ident = (MODEL_ID, model_id) if header_safe(model_id) else (MODEL_ID_BIN, model_id.encode())
        metadata = (ident, (FORWARDED, "1"), (LOAD_HERE, "1" if load else "0"), *self._auth)
        self.inflight[endpoint] += 1
        try:
            return await self._call(endpoint)(request, timeout=max(0.001, timeout_s), metadata=metadata)
        except grpc.aio.AioRpcError as err:
            raise _peer_error(err, endpoint, model_id) from None
        finally:
            self.inflight[endpoint] -= 1

    async def infer_stream(self, peer: InstanceRecord, model_id: str, request: v2.ModelInferRequest,
                           hop: Answered, timeout_s: float, *, load: bool) -> None:
        """Forward a request whose model may answer several times (the peer's ModelStreamInfer, one
        request per call); each answer goes to ``hop.send`` as it comes. Once one was sent, a
        failure is no longer ``PeerUnavailable`` (the request must not run twice)."""
        endpoint = peer.endpoint
        self._call(endpoint)  # make sure the channel exists
        ident = (MODEL_ID, model_id) if header_safe(model_id) else (MODEL_ID_BIN, model_id.encode())
        metadata = (ident, (FORWARDED, "1"), (LOAD_HERE, "1" if load else "0"), *self._auth)
        call = self._channels[endpoint].stream_stream(
            v2.method("ModelStreamInfer"), request_serializer=v2.ModelInferRequest.SerializeToString,
            response_deserializer=repo_pb.ModelStreamInferResponse.FromString,
        )(iter((request,)), timeout=max(0.001, timeout_s), metadata=metadata)
        self.inflight[endpoint] += 1
        try:
            async for answer in call:
                if answer.error_message:  # a forwarded hop's errors end the call with a code; this is not one
                    raise InternalError(f"instance at {endpoint}: {answer.error_message}")
                await hop.send(v2.ModelInferResponse.FromString(answer.infer_response))
        except grpc.aio.AioRpcError as err:
            error = _peer_error(err, endpoint, model_id)
            if hop.answered and isinstance(error, PeerUnavailable):
                error = Unavailable(error.message)
            raise error from None
        except asyncio.CancelledError:
            call.cancel()
            raise
        finally:
            self.inflight[endpoint] -= 1

    async def infer_http(self, peer: InstanceRecord, model_id: str, path: str, body: bytes,
                         headers: dict[str, str], timeout_s: float, *, load: bool) -> HttpAnswer:
        """Forward a V2 REST inference as it came (``mesh/http_peer.py``); a 200 answer is returned
        as it came, other answers raise the mesh error they carry."""
        url = peer.label("rest")
        if not url:
            raise PeerUnavailable(f"instance {peer.instance_id} publishes no REST endpoint")
        sent = {**headers, MODEL_ID: model_id, FORWARDED: "1", LOAD_HERE: "1" if load else "0"}
        self.inflight[peer.endpoint] += 1
        try:
            answer = await self.http.post(url, path, body, sent, max(0.001, timeout_s))
        except Unavailable as exc:
            raise PeerUnavailable(exc.message) from None
        finally:
            self.inflight[peer.endpoint] -= 1
        if answer.status == 200:
            return answer
        err = self.http.error(answer, url)
        if type(err) is Unavailable:
            raise PeerUnavailable(f"instance at {url} unavailable: {err.message}")
        raise err

    async def infer_proto(self, peer: InstanceRecord, model_id: str, request: v2.ModelInferRequest,
                          timeout_s: float, *, load: bool) -> v2.ModelInferResponse:
        """Forward a V2 gRPC inference as a serialized message over the peer's HTTP port (its
        ``FORWARD_PATH``); over gRPC when the model id cannot travel in an HTTP header."""
        if not (header_safe(model_id) and peer.label("rest")):
            return await self.infer(peer.endpoint, model_id, request, timeout_s, load=load)
        answer = await self.infer_http(peer, model_id, FORWARD_PATH, request.SerializeToString(),
                                       {"content-type": PROTOBUF}, timeout_s, load=load)
        try:
            return v2.ModelInferResponse.FromString(answer.body)
        except Exception:  # noqa: BLE001  (DecodeError: a peer that is not a mesh instance)
            raise InternalError(f"instance {peer.instance_id} answered with a malformed ModelInferResponse") from None

    async def relay(self, peer: InstanceRecord, model_id: str, stream: RawStream, timeout_s: float, *,
                    load: bool) -> None:
        """Pass a gRPC call of any method (``relay.py``) through to ``peer``, which serves it from its
        copy of ``model_id`` (loading it when ``load``). Before anything was answered, a peer that
        cannot take it is ``PeerUnavailable`` and its load failure ``ModelLoadFailed`` (the router
        tries elsewhere); after, the peer's status is passed through."""
        endpoint = peer.endpoint
        self._call(endpoint)  # make sure the channel exists
        ident = (MODEL_ID, model_id) if header_safe(model_id) else (MODEL_ID_BIN, model_id.encode())
        metadata = (ident, (FORWARDED, "1"), (LOAD_HERE, "1" if load else "0"), *self._auth, *stream.metadata)

        def error(err: grpc.aio.AioRpcError) -> MeshError:
            code = err.code()
            if stream.replayable and code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                                              grpc.StatusCode.UNKNOWN):
                return PeerUnavailable(f"instance at {endpoint} unavailable: {err.details() or code.name}")
            if stream.replayable and load and code is grpc.StatusCode.FAILED_PRECONDITION:
                return ModelLoadFailed(err.details() or code.name)
            return passed_through(err)

        self.inflight[endpoint] += 1
        try:
            await relay(self._channels[endpoint], stream, metadata, timeout_s, error)
        finally:
            self.inflight[endpoint] -= 1

    async def ensure_loaded(self, endpoint: str, model_id: str, timeout_s: float, *, last_used_ms: int = 0) -> None:
        """Ask a peer (management API) to load a copy of ``model_id``, last used at ``last_used_ms``
        (0: now); raises PeerUnavailable."""
        from kserve_mesh.protos import model_mesh_pb2 as mm
        from kserve_mesh.protos import model_mesh_pb2_grpc as mm_grpc

        self._call(endpoint)  # make sure the channel exists
        stub = mm_grpc.ModelMeshStub(self._channels[endpoint])
        try:
            await stub.ensureLoaded(mm.EnsureLoadedRequest(modelId=model_id, lastUsedTime=max(0, last_used_ms),
                                                            sync=False), timeout=timeout_s,
                                    metadata=self._auth)
        except grpc.aio.AioRpcError as err:
            raise PeerUnavailable(f"instance at {endpoint} did not take {model_id}: {err.details()}") from None

    def forget(self, peer: InstanceRecord) -> None:
        """Close the channel and connections to an instance that left the mesh."""
        channel = self._channels.pop(peer.endpoint, None)
        self._calls.pop(peer.endpoint, None)
        if channel is not None:
            asyncio.get_running_loop().create_task(channel.close())
        if url := peer.label("rest"):
            self.http.drop(url)

    async def close(self) -> None:
        self.http.close()
        channels = list(self._channels.values())
        self._channels.clear()
        self._calls.clear()
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)
