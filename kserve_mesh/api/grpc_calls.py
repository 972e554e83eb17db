"""Every gRPC method of the mesh, wrapped once.

A method is registered taking its request as bytes and parses them itself (``protocol.v2.parse``),
so a body that is not the method's message is ``INVALID_ARGUMENT`` naming the message type (a
failing deserializer inside grpc answers ``UNKNOWN``). Whatever a method raises is answered with
the code of the error table (``errors.py``): a mesh error with its message, anything else as
``INTERNAL`` with a short message (the traceback goes to the log, never to the client).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc

from kserve_mesh.api.errors import grpc_code, to_mesh_error
from kserve_mesh.protocol import v2

Method = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def unary(method: Method, request_type: Any | None) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Any]]:
    """``method`` taking its request as bytes: parsed as ``request_type`` (None: the bytes as they
    came), errors answered with the table's code."""

    async def handle(data: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(data if request_type is None else v2.parse(request_type, data), context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # every error is answered, none escapes as UNKNOWN
            err = to_mesh_error(exc)
            await context.abort(grpc_code(err), err.message)
            raise  # unreachable: abort raises

    handle.__name__ = getattr(method, "__name__", "handle")
    return handle


def method_handlers(methods: Mapping[str, tuple[Method, Any | None, Any]],
                    streams: Mapping[str, grpc.RpcMethodHandler] | None = None) -> dict[str, grpc.RpcMethodHandler]:
    """Method name -> handler, from method name -> (handler, request type or None for bytes,
    response type); ``streams``: streaming methods, as handlers that answer their own errors."""
    handlers = {
        method: grpc.unary_unary_rpc_method_handler(unary(handler, request_type),
                                                    response_serializer=response_type.SerializeToString)
        for method, (handler, request_type, response_type) in methods.items()
    }
    return {**handlers, **(streams or {})}


def service(name: str, methods: Mapping[str, tuple[Method, Any | None, Any]],
            streams: Mapping[str, grpc.RpcMethodHandler] | None = None) -> grpc.GenericRpcHandler:
    """The service ``name`` as a generic handler (see ``method_handlers``)."""
    return grpc.method_handlers_generic_handler(name, method_handlers(methods, streams))
