"""The gRPC side of authentication: :class:`GuardedServer` wraps every handler a service registers
with the role check of :func:`~kserve_mesh.api.auth.policy.grpc_role` (wrapped once per method)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc

from kserve_mesh.api.auth.authenticator import Authenticator, printable
from kserve_mesh.api.auth.credentials import Role
from kserve_mesh.api.auth.policy import grpc_role
from kserve_mesh.core.errors import MeshError, Unauthenticated


def _grpc_identities(context: grpc.aio.ServicerContext) -> tuple[str, ...]:
    ctx = context.auth_context() or {}
    names = [*ctx.get("x509_common_name", ()), *ctx.get("x509_subject_alternative_name", ())]
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names)


def _guard_behavior(behavior: Callable[..., Any], need: Role, method: str, auth: Authenticator,
                    streaming_response: bool) -> Callable[..., Any]:
    def check(context: grpc.aio.ServicerContext) -> MeshError | None:
        authorization = None
        required = need
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                authorization = authorization or value
            elif key == "mm-forwarded":
                required = Role.ADMIN  # a peer's hop (see FORWARDED)
        try:
            auth.check(required, authorization, _grpc_identities(context) if authorization is None else (),
                       printable(method[:200]), context.peer())
        except MeshError as exc:
            return exc
        return None

    def code(exc: MeshError) -> grpc.StatusCode:
        return grpc.StatusCode.UNAUTHENTICATED if isinstance(exc, Unauthenticated) else grpc.StatusCode.PERMISSION_DENIED

    if streaming_response and inspect.isasyncgenfunction(behavior):
        async def guarded_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            refusal = check(context)
            if refusal is not None:
                await context.abort(code(refusal), refusal.message)
            async for item in behavior(request, context):
                yield item

        return guarded_stream

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        refusal = check(context)
        if refusal is not None:
            await context.abort(code(refusal), refusal.message)
        return await behavior(request, context)

    return guarded


def _guard_handler(handler: grpc.RpcMethodHandler, method: str, auth: Authenticator,
                   role: Role | None = None) -> grpc.RpcMethodHandler:
    need = role if role is not None else grpc_role(method)
    if need is None:
        return handler
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _guard_behavior(handler.unary_unary, need, method, auth, False),
            request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _guard_behavior(handler.unary_stream, need, method, auth, True),
            request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _guard_behavior(handler.stream_unary, need, method, auth, False),
            request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    return grpc.stream_stream_rpc_method_handler(
        _guard_behavior(handler.stream_stream, need, method, auth, True),
        request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)


class _GuardedGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, auth: Authenticator) -> None:
        self.inner = inner
        self.auth = auth
        self._cache: dict[str, grpc.RpcMethodHandler | None] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        guarded = self._cache.get(method)
        if guarded is not None:
            return guarded
        handler = self.inner.service(handler_call_details)
        if handler is None:
            return None  # not ours (UNIMPLEMENTED): nothing kept for names callers make up
        role = getattr(self.inner, "required_role", None)
        if role is not None:  # a handler of any method (api/grpc_relay.py): its role, nothing kept
            return _guard_handler(handler, method, self.auth, role)
        guarded = self._cache[method] = _guard_handler(handler, method, self.auth)  # wrapped once per method
        return guarded


class GuardedServer:
    """Stands in for a ``grpc.aio.Server`` while services are added: every handler is wrapped with
    the authentication and role checks of :func:`grpc_role`. Everything else passes through."""

    def __init__(self, server: grpc.aio.Server, auth: Authenticator) -> None:
        self._server = server
        self._auth = auth

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(tuple(_GuardedGeneric(h, self._auth) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        self._server.add_registered_method_handlers(
            service, {name: _guard_handler(h, f"/{service}/{name}", self._auth) for name, h in handlers.items()})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)
