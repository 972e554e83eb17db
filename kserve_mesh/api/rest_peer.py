"""The peers' front door: V2 gRPC inference forwarded by another instance of the mesh.

An instance forwards a V2 gRPC request it cannot serve as a serialized ``ModelInferRequest``,
POSTed over keep-alive HTTP/1.1 to the holder's REST port at ``wire.FORWARD_PATH`` (a ``grpc.aio``
server takes one call per event-loop turn, which starved forwarded calls behind direct traffic).
This route takes only such hops (``mm-forwarded`` with the concrete ``mm-model-id``; authentication
asks for the admin role, which peers have), serves them here (never forwarding again) and answers
with the serialized ``ModelInferResponse``, or an error as every REST route does, which the sender
turns back into the mesh error (``wire.error_from_answer``). REST requests are forwarded to their
own V2 route as they came, so only gRPC's need this one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kserve_mesh.api.errors import error_response
from kserve_mesh.api.rest_v2 import read_body, route_of
from kserve_mesh.mesh.dataplane import DataPlane
from kserve_mesh.mesh.wire import FORWARD_PATH, MODEL_ID, PROTOBUF


def forwarded_endpoint(plane: DataPlane) -> Callable[[Request], Awaitable[Response]]:
    async def forwarded_infer(request: Request) -> Response:
        try:
            route = route_of(request)
            answer = await plane.infer(await read_body(request), route, peer=True)
        except Exception as exc:  # noqa: BLE001 - served ahead of the app's exception handlers
            return error_response(exc)
        return Response(answer.SerializeToString(), media_type=PROTOBUF, headers={MODEL_ID: route.model_id})

    return forwarded_infer


def routes(forwarded_infer: Callable[[Request], Awaitable[Response]]) -> list[Route]:
    return [Route(FORWARD_PATH, forwarded_infer, methods=["POST"])]
