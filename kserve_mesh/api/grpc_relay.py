"""Every gRPC method no other service of the mesh serves: relayed to a model's runtime (issue 11).

A call of an unknown method that names a model in its metadata (``mm-model-id`` / ``mm-vmodel-id``,
or their ``-bin`` forms) is handed to the data plane as a ``RawStream`` (``mesh/relay.py``): its
messages pass through as bytes, in both directions, whatever the method's shape (a unary client is
a stream of one message each way). A call that names no model is refused with UNIMPLEMENTED naming
the method and the headers that would route it. The handler is registered after every other
service (the server asks generic handlers in order); with authentication on, relayed calls need the
``infer`` role, as inference does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from kserve_mesh.api.auth.credentials import Role
from kserve_mesh.api.errors import grpc_code, to_mesh_error
from kserve_mesh.mesh.dataplane import DataPlane
from kserve_mesh.mesh.relay import RawStream
from kserve_mesh.mesh.wire import MODEL_ID, VMODEL_ID, Routing


class RelayHandler(grpc.GenericRpcHandler):
    """Takes any method (see the module docstring)."""

    required_role = Role.INFER  # read by the authentication guard (api/auth/grpc_guard.py)

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return grpc.stream_stream_rpc_method_handler(self._behavior(handler_call_details.method))

    def _behavior(self, method: str):  # type: ignore[no-untyped-def]
        plane = self.plane

        async def relay(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
            try:
                route = Routing.from_grpc(context.invocation_metadata())
                if not (route.model_id or route.vmodel_id):
                    await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                                        f"method {method[:200]} is not a service of this mesh; to route it to a "
                                        f"model's runtime, name the model in {MODEL_ID} or {VMODEL_ID} metadata")
                stream = RawStream(method, requests, context.write, context.invocation_metadata() or ())
                await plane.relay(stream, route, remaining_s=context.time_remaining())
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - every error is answered with its code, none as UNKNOWN
                err = to_mesh_error(exc)
                await context.abort(grpc_code(err), err.message)

        return relay
