"""gRPC health checking (``grpc.health.v1.Health``) and the wiring of health and reflection.

What Kubernetes gRPC probes, ``grpc_health_probe`` and gRPC load balancers ask. The overall server
(service ``""``) and each service an instance serves (``inference.GRPCInferenceService``,
``mmesh.ModelMesh``) are ``SERVING`` while the instance is ready to serve and ``NOT_SERVING``
while it is not: before it is ready, while its runtime is down (runtime supervision makes
``Instance.serving_ready`` false), while it drains (SIGTERM in a mesh sets ``shutting_down``) and
from the moment it stops. Any other service name is ``NOT_FOUND`` for ``Check`` and
``SERVICE_UNKNOWN`` for ``Watch`` (which then stays open, as the protocol says).

The status is read from the instance, never pushed by it: ``Check`` reads it on each call, and a
small task reads it every ``interval_s`` (0.5 s) and wakes the ``Watch`` streams when it changed.
Reading is one property and one attribute of the instance: nothing is added to the request path.

Health is open to anyone (no credentials: probes carry none; see api/auth/policy.py ``OPEN_GRPC``), so the
open ``Watch`` streams are capped (``max_watches``): each holds one of the server's
``--grpc-max-concurrent-rpcs`` slots for as long as the caller likes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2

from kserve_mesh.api.grpc_reflect import reflection_handlers
from kserve_mesh.protocol import v2
from kserve_mesh.protos import model_mesh_pb2

if TYPE_CHECKING:
    from kserve_mesh.mesh.instance import Instance

log = logging.getLogger(__name__)

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name  # grpc.health.v1.Health
MESH_SERVICE = model_mesh_pb2.DESCRIPTOR.services_by_name["ModelMesh"].full_name  # mmesh.ModelMesh
SERVED = (v2.SERVICE, MESH_SERVICE)
"""The application services an instance serves, each with its own health status."""

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
POLL_INTERVAL_S = 0.5
MAX_WATCHES = 32


class HealthService:
    """The ``grpc.health.v1.Health`` servicer, fed by ``serving()`` (true: ready to serve)."""

    def __init__(self, serving: Callable[[], bool], services: Sequence[str] = SERVED, *,
                 interval_s: float = POLL_INTERVAL_S, max_watches: int = MAX_WATCHES) -> None:
        self._serving = serving
        self.services = frozenset(("", *services))
        self.interval_s = interval_s
        self.max_watches = max_watches
        self._status = NOT_SERVING
        self._changed = asyncio.Event()  # replaced on each change; the old one is set
        self._watches = 0
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    # -- the status --------------------------------------------------------------------------------
    def status(self, service: str) -> int | None:
        """The status of ``service`` now (None: not a service of this server)."""
        if service not in self.services:
            return None
        return self.refresh()

    def refresh(self) -> int:
        """Read the instance's state; wake the watchers if the status changed."""
        if self._closed:
            return NOT_SERVING
        try:
            status = SERVING if self._serving() else NOT_SERVING
        except Exception:  # an instance half torn down must not break health: it is not serving
            log.debug("reading the instance's readiness failed", exc_info=True)
            status = NOT_SERVING
        self._set(status)
        return status

    def _set(self, status: int) -> None:
        if status == self._status:
            return
        log.info("gRPC health: %s", health_pb2.HealthCheckResponse.ServingStatus.Name(status))
        self._status = status
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # -- the polling task --------------------------------------------------------------------------
    def start(self) -> None:
        self.refresh()
        if self._task is None:
            self._task = asyncio.create_task(self._poll(), name="grpc-health")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.refresh()

    async def stop(self) -> None:
        """NOT_SERVING from now on; open ``Watch`` streams get it and end (the server can stop at once)."""
        self._set(NOT_SERVING)
        self._closed = True
        self._changed.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # -- the RPCs ----------------------------------------------------------------------------------
    async def Check(self, request: health_pb2.HealthCheckRequest,
                    context: grpc.aio.ServicerContext) -> health_pb2.HealthCheckResponse:
        status = self.status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service[:200]!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest,
                    context: grpc.aio.ServicerContext) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        if self._watches >= self.max_watches:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"at most {self.max_watches} health Watch streams are served at once; use Check")
        self._watches += 1
        try:
            last: int | None = None
            while True:
                changed = self._changed  # taken before the read: a change during the send is not missed
                status = self.status(request.service)
                status = SERVICE_UNKNOWN if status is None else status
                if status != last:
                    yield health_pb2.HealthCheckResponse(status=status)
                    last = status
                if self._closed:
                    return
                await changed.wait()
        finally:
            self._watches -= 1


def health_handler(health: HealthService) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(HEALTH_SERVICE, {
        "Check": grpc.unary_unary_rpc_method_handler(
            health.Check, request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString),
        "Watch": grpc.unary_stream_rpc_method_handler(
            health.Watch, request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString),
    })


def instance_serving(instance: Instance) -> Callable[[], bool]:
    """Ready to serve: ready (runtime up, see ``Instance.serving_ready``) and not draining."""
    return lambda: bool(instance.serving_ready) and not instance.shutting_down


def add_health_and_reflection(services: Any, instance: Instance, *,
                              interval_s: float = POLL_INTERVAL_S) -> HealthService:
    """Register ``grpc.health.v1.Health`` and server reflection (v1alpha and v1, listing every
    service served) on ``services`` (a ``grpc.aio.Server`` or the ``GuardedServer`` around it).
    The caller starts the returned service once the server runs and stops it first when stopping."""
    health = HealthService(instance_serving(instance), SERVED, interval_s=interval_s)
    services.add_generic_rpc_handlers((health_handler(health),
                                       *reflection_handlers((*SERVED, HEALTH_SERVICE))))
    return health
