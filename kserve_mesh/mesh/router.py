"""Routing a request in a mesh of several instances (ModelMesh's hit/miss iterations).

For a model with no usable local copy, up to ``MAX_ITERATIONS`` times:

1. a copy is loading here already: wait for it and serve locally;
2. live instances hold a copy: forward to the holder with the fewest requests in flight from here;
3. nobody holds one: place a new copy (``core.placement``); if this instance wins, load here,
   else forward with ``mm-load`` so the chosen peer loads it;
4. a peer that cannot be reached, or whose load failed, joins the exclusion list and the loop goes
   on; the caller's deadline bounds everything.

An instance restarting its runtime excludes itself: peers serve and load meanwhile. With
``prefer`` (a less busy holder found by the dispatcher for unbalanced traffic), that holder is
tried first, and the local copy serves if it is gone.

Forwarded requests are served by the receiving instance (one hop at most). What is sent and how is
the request's ``Hop`` (``hops.py``). The router reads and does only what ``RouterContext`` offers,
so it is tested with a fake context and fake hops (tests/unit/mesh/test_router.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol, TypeVar

from kserve_mesh.core.clock import Clock
from kserve_mesh.core.errors import DeadlineExceeded, MeshError, ModelLoadFailed, ModelNotFound, Unavailable
from kserve_mesh.core.failures import FailurePolicy
from kserve_mesh.core.ids import InstanceId, ModelId
from kserve_mesh.core.placement import PlacementRequest, choose
from kserve_mesh.core.records import InstanceRecord, ModelRecord
from kserve_mesh.mesh.hops import Hop
from kserve_mesh.mesh.peers import PeerUnavailable

log = logging.getLogger(__name__)

MAX_ITERATIONS = 8

T = TypeVar("T")


class RouterContext(Protocol):
    """What the router may read and do: one instance's view of the mesh."""

    @property
    def instance_id(self) -> InstanceId:
        """This instance."""

    @property
    def clock(self) -> Clock: ...

    @property
    def failures(self) -> FailurePolicy:
        """When a model's recent load failures block new loads."""

    @property
    def churn_age_ms(self) -> int:
        """How old an instance must be before it takes placements (``core.placement``)."""

    @property
    def runtime_available(self) -> bool:
        """False while this instance's runtime is lost (dead, hung, restarting)."""

    def model(self, model_id: ModelId) -> ModelRecord | None:
        """The model's record (copies, failures), or None if it is not registered."""

    def has_local_copy(self, model_id: ModelId) -> bool:
        """A copy here that is queued, loading or loaded (not unloading)."""

    def live(self) -> Mapping[InstanceId, InstanceRecord]:
        """The live instances of the mesh, by id (placement and forwarding view)."""

    def own_record(self) -> InstanceRecord:
        """This instance's record as it is now (the published one may be seconds old)."""

    def inflight(self, peer: InstanceRecord) -> int:
        """Requests this instance has in flight to ``peer``."""

    def size_hint(self, model_id: ModelId) -> int:
        """Bytes a new copy is expected to take, for placement."""

    async def serve_local(self, model_id: ModelId, hop: Hop[T], timeout_s: float) -> T:
        """Serve from this instance's runtime, loading the model here first if needed."""


async def route(ctx: RouterContext, model_id: ModelId, hop: Hop[T], timeout_s: float, *,
                prefer: InstanceId | None = None) -> T:
    clock = ctx.clock
    me = ctx.instance_id
    deadline = clock.monotonic() + timeout_s
    exclude: set[InstanceId] = set()
    if not ctx.runtime_available:  # restarting its runtime: peers serve and load meanwhile
        exclude.add(me)
    last_error: MeshError | None = None
    for _ in range(MAX_ITERATIONS):
        remaining = deadline - clock.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded(f"request for model '{model_id}' timed out")
        rec = ctx.model(model_id)
        if rec is None:
            raise ModelNotFound(model_id)
        local = ctx.has_local_copy(model_id)
        if local and prefer is None:
            return await ctx.serve_local(model_id, hop, remaining)
        live = ctx.live()
        holders = [i for i in rec.instances if i != me and i in live and i not in exclude]
        load = False
        if prefer is not None and prefer in holders:
            target = prefer
        elif prefer is not None and local:
            return await ctx.serve_local(model_id, hop, remaining)
        elif holders:
            target = min(holders, key=lambda i: ctx.inflight(live[i]))
        else:
            chosen = _place(ctx, rec, exclude)
            if chosen is None or chosen.instance_id == me:
                if chosen is None and me in exclude:
                    raise last_error or Unavailable(f"no instance can load model '{model_id}'")
                return await ctx.serve_local(model_id, hop, remaining)
            target, load = chosen.instance_id, True
        try:
            return await hop.forward(live[target], load, remaining)
        except PeerUnavailable as exc:
            prefer = None
            log.info("forwarding %s to %s failed (%s); trying elsewhere", model_id, target, exc)
            exclude.add(target)
            last_error = exc
        except ModelLoadFailed as exc:
            if not load:
                raise
            log.info("loading %s on %s failed (%s); trying elsewhere", model_id, target, exc)
            exclude.add(target)
            last_error = exc
    raise last_error or Unavailable(f"no instance could serve model '{model_id}'")


def _place(ctx: RouterContext, rec: ModelRecord, exclude: set[InstanceId]) -> InstanceRecord | None:
    """Where a new copy of ``rec``'s model goes (this instance included), or None if nowhere;
    ``ModelLoadFailed`` while its recent failures block new loads."""
    now = ctx.clock.now_ms()
    failures = ctx.failures
    if failures.blocked(rec.failures, now):
        raise ModelLoadFailed(f"model '{rec.model_id}' failed to load: {failures.last_error(rec.failures, now)}")
    req = PlacementRequest(size_bytes=ctx.size_hint(rec.model_id), now_ms=now, exclude=exclude,
                           failed_on=failures.failed_instances(rec.failures, now), min_churn_age_ms=ctx.churn_age_ms)
    # Our own record fresh (the published one may be seconds old); only here, not per request.
    return choose({**ctx.live(), ctx.instance_id: ctx.own_record()}.values(), req)
