"""Routing a request in a mesh of several instances (ModelMesh's hit/miss iterations).

For a model with no usable local copy, up to ``MAX_ITERATIONS`` times:

1. a copy is loading here already: wait for it and serve locally;
2. live instances hold a copy: forward to the holder with the fewest requests in flight from here;
3. nobody holds one: place a new copy (``core.placement``); if this instance wins, load here,
   else forward with ``mm-load`` so the chosen peer loads it;
4. a peer that cannot be reached, or whose load failed, joins the exclusion list and the loop goes
   on; the caller's deadline bounds everything.

Forwarded requests are served by the receiving instance (one hop at most). What is sent and how is
the request's ``Hop``: a V2 gRPC request is forwarded as a gRPC ``ModelInfer``, a V2 REST request as
its raw bytes over HTTP (``mesh/http_peer.py``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol, TypeVar

from kserve_mesh.core.errors import DeadlineExceeded, MeshError, ModelLoadFailed, ModelNotFound, Unavailable
from kserve_mesh.core.ids import InstanceId, ModelId
from kserve_mesh.core.placement import PlacementRequest, choose, churn_age_ms
from kserve_mesh.core.records import InstanceRecord
from kserve_mesh.mesh.copies import Phase
from kserve_mesh.mesh.peers import PeerUnavailable
from kserve_mesh.protocol import v2

if TYPE_CHECKING:
    from kserve_mesh.mesh.instance import Instance

log = logging.getLogger(__name__)

MAX_ITERATIONS = 8

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


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


class GrpcHop:
    """A V2 ``ModelInferRequest``: run by the runtime here, or forwarded as a gRPC call."""

    __slots__ = ("inst", "model_id", "request")

    def __init__(self, inst: Instance, model_id: ModelId, request: v2.ModelInferRequest) -> None:
        self.inst, self.model_id, self.request = inst, model_id, request

    def prepare(self) -> None:
        pass

    async def run(self, timeout_s: float) -> v2.ModelInferResponse:
        self.request.model_name = self.model_id
        return await self.inst.runtime.infer(self.request, timeout=timeout_s)

    async def forward(self, peer: InstanceRecord, load: bool, timeout_s: float) -> v2.ModelInferResponse:
        assert self.inst.peers is not None
        return await self.inst.peers.infer_proto(peer, self.model_id, self.request, timeout_s, load=load)


async def route(inst: Instance, model_id: ModelId, hop: Hop[T], timeout_s: float, *,
                prefer: InstanceId | None = None) -> T:
    assert inst.cluster is not None and inst.peers is not None
    clock = inst.clock
    deadline = clock.monotonic() + timeout_s
    exclude: set[InstanceId] = set()
    if not inst.cache.runtime_available:  # restarting its runtime: peers serve and load meanwhile
        exclude.add(inst.instance_id)
    last_error: MeshError | None = None
    for _ in range(MAX_ITERATIONS):
        remaining = deadline - clock.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded(f"request for model '{model_id}' timed out")
        rec = inst.registry.models.get(model_id)
        if rec is None:
            raise ModelNotFound(model_id)
        local = inst.cache.copies.get(model_id)
        if local is not None and local.phase is not Phase.UNLOADING and prefer is None:
            return await inst.serve_local(model_id, hop, remaining)
        live = inst.cluster.instances
        holders = [i for i in rec.instances if i != inst.instance_id and i in live and i not in exclude]
        load = False
        if prefer is not None and prefer in holders:
            target = prefer
        elif prefer is not None and local is not None and local.phase is not Phase.UNLOADING:
            return await inst.serve_local(model_id, hop, remaining)
        elif holders:
            target = min(holders, key=lambda i: inst.peers.inflight[live[i].endpoint])
        else:
            now = clock.now_ms()
            if inst.failures.blocked(rec.failures, now):
                raise ModelLoadFailed(f"model '{model_id}' failed to load: {inst.failures.last_error(rec.failures, now)}")
            req = PlacementRequest(size_bytes=inst.size_hint(model_id), now_ms=now, exclude=exclude,
                                   failed_on=inst.failures.failed_instances(rec.failures, now),
                                   min_churn_age_ms=churn_age_ms(int(inst.cache.config.load_timeout_s * 1000)))
            # Our own record fresh (the published one may be seconds old); only here, not per request.
            candidates = {**live, inst.instance_id: inst.cluster.record()}
            chosen = choose(candidates.values(), req)
            if chosen is None or chosen.instance_id == inst.instance_id:
                if chosen is None and inst.instance_id in exclude:
                    raise last_error or Unavailable(f"no instance can load model '{model_id}'")
                return await inst.serve_local(model_id, hop, remaining)
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
