"""The router (mesh/router.py) against a fake view of the mesh and fake peers: where a request goes
(a local copy, the least busy holder, a new copy placed here or on a peer), what happens when a peer
is lost or its load fails, the deadline, and this instance's own runtime restarting. The
dispatcher's choice between balanced and unbalanced traffic is checked here too, on fakes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest

from kserve_mesh.core.clock import ManualClock
from kserve_mesh.core.errors import DeadlineExceeded, ModelLoadFailed, ModelNotFound, Unavailable
from kserve_mesh.core.failures import FailurePolicy
from kserve_mesh.core.ids import InstanceId, ModelId
from kserve_mesh.core.records import FailureRecord, InstanceRecord, ModelInfo, ModelRecord
from kserve_mesh.mesh.copies import Phase
from kserve_mesh.mesh.dispatch import Dispatcher
from kserve_mesh.mesh.peers import PeerUnavailable
from kserve_mesh.mesh.router import route

ME = InstanceId("me")
M = ModelId("m")
GiB = 1 << 30
SIZE = 1 << 20


def _instance(iid: str, *, free: int = GiB, models: int = 0, rpm: int = 0, lru_ms: int = 0) -> InstanceRecord:
    return InstanceRecord(InstanceId(iid), f"{iid}:8033", GiB, GiB - free, models, lru_ms, requests_per_minute=rpm)


def _full(iid: str, clock: ManualClock, **kw: Any) -> InstanceRecord:
    """An instance with no room and a young cache: placement never picks it (churn guard)."""
    return _instance(iid, free=0, lru_ms=clock.now_ms(), **kw)


@dataclass
class FakeMesh:
    """A ``RouterContext``: one instance's view of records, copies and peers."""

    clock: ManualClock = field(default_factory=ManualClock)
    instance_id: InstanceId = ME
    failures: FailurePolicy = field(default_factory=FailurePolicy)
    churn_age_ms: int = 30_000
    runtime_available: bool = True
    records: dict[ModelId, ModelRecord] = field(default_factory=dict)
    local: set[ModelId] = field(default_factory=set)
    peers: dict[InstanceId, InstanceRecord] = field(default_factory=dict)
    me: InstanceRecord | None = None
    load: dict[InstanceId, int] = field(default_factory=dict)
    served_here: list[tuple[ModelId, float]] = field(default_factory=list)

    def model(self, model_id: ModelId) -> ModelRecord | None:
        return self.records.get(model_id)

    def has_local_copy(self, model_id: ModelId) -> bool:
        return model_id in self.local

    def live(self) -> dict[InstanceId, InstanceRecord]:
        return {**self.peers, ME: self.own_record()}

    def own_record(self) -> InstanceRecord:
        return self.me or _instance(ME)

    def inflight(self, peer: InstanceRecord) -> int:
        return self.load.get(peer.instance_id, 0)

    def size_hint(self, model_id: ModelId) -> int:
        return SIZE

    async def serve_local(self, model_id: ModelId, hop: Any, timeout_s: float) -> str:
        self.served_here.append((model_id, timeout_s))
        return "here"

    def register(self, *holders: str, failures: tuple[FailureRecord, ...] = ()) -> None:
        self.records[M] = ModelRecord(M, ModelInfo("string"), 0, instances={InstanceId(h): 0 for h in holders},
                                      failures=failures)


class FakeHop:
    """A request the router moves; each peer answers as ``answers`` says (default: serves it)."""

    def __init__(self, mesh: FakeMesh, answers: dict[str, Exception] | None = None, advance_s: float = 0.0) -> None:
        self.mesh = mesh
        self.answers = answers or {}
        self.advance_s = advance_s
        self.sent: list[tuple[str, bool]] = []

    def prepare(self) -> None:
        pass

    async def run(self, timeout_s: float) -> str:
        return "run"

    async def forward(self, peer: InstanceRecord, load: bool, timeout_s: float) -> str:
        self.sent.append((peer.instance_id, load))
        self.mesh.clock.advance(self.advance_s)
        if (error := self.answers.get(peer.instance_id)) is not None:
            raise error
        return f"served by {peer.instance_id}"


async def test_a_local_copy_serves_here() -> None:
    mesh = FakeMesh(peers={InstanceId("p1"): _instance("p1")})
    mesh.register("p1")
    mesh.local.add(M)
    hop = FakeHop(mesh)
    assert await route(mesh, M, hop, 5.0) == "here"
    assert hop.sent == [] and mesh.served_here == [(M, 5.0)]


async def test_a_request_goes_to_the_holder_with_the_fewest_requests_in_flight() -> None:
    mesh = FakeMesh(peers={InstanceId("p1"): _instance("p1"), InstanceId("p2"): _instance("p2")},
                    load={InstanceId("p1"): 5, InstanceId("p2"): 1})
    mesh.register("p1", "p2")
    hop = FakeHop(mesh)
    assert await route(mesh, M, hop, 5.0) == "served by p2"
    assert hop.sent == [("p2", False)]


async def test_a_new_copy_is_placed_on_the_peer_placement_chooses_which_loads_it() -> None:
    mesh = FakeMesh()
    mesh.me = _full("me", mesh.clock)
    mesh.peers = {InstanceId("p1"): _instance("p1"), InstanceId("p2"): _full("p2", mesh.clock)}
    mesh.register()
    hop = FakeHop(mesh)
    assert await route(mesh, M, hop, 5.0) == "served by p1"
    assert hop.sent == [("p1", True)] and mesh.served_here == []


async def test_the_model_loads_here_when_this_instance_wins_the_placement() -> None:
    mesh = FakeMesh()
    mesh.peers = {InstanceId("p1"): _full("p1", mesh.clock), InstanceId("p2"): _full("p2", mesh.clock)}
    mesh.register()
    hop = FakeHop(mesh)
    assert await route(mesh, M, hop, 5.0) == "here"
    assert hop.sent == [] and mesh.served_here == [(M, 5.0)]


async def test_a_lost_holder_is_excluded_and_the_next_holder_serves() -> None:
    mesh = FakeMesh(peers={InstanceId("p1"): _instance("p1"), InstanceId("p2"): _instance("p2")},
                    load={InstanceId("p2"): 3})
    mesh.register("p1", "p2")
    hop = FakeHop(mesh, {"p1": PeerUnavailable("p1 is gone")})
    assert await route(mesh, M, hop, 5.0) == "served by p2"
    assert hop.sent == [("p1", False), ("p2", False)]


async def test_when_every_holder_is_lost_a_new_copy_is_placed() -> None:
    mesh = FakeMesh()
    mesh.me = _full("me", mesh.clock)
    mesh.peers = {InstanceId("p1"): _full("p1", mesh.clock), InstanceId("p2"): _instance("p2")}
    mesh.register("p1")
    hop = FakeHop(mesh, {"p1": PeerUnavailable("p1 is gone")})
    assert await route(mesh, M, hop, 5.0) == "served by p2"
    assert hop.sent == [("p1", False), ("p2", True)]


async def test_a_peer_whose_load_failed_is_excluded_and_the_copy_placed_elsewhere() -> None:
    mesh = FakeMesh()
    mesh.me = _full("me", mesh.clock)
    # p2 is busy: placement takes the quiet p1 first, then p2 once p1 is excluded.
    mesh.peers = {InstanceId("p1"): _instance("p1"), InstanceId("p2"): _instance("p2", rpm=100_000)}
    mesh.register()
    hop = FakeHop(mesh, {"p1": ModelLoadFailed("p1: the model file is corrupt")})
    assert await route(mesh, M, hop, 5.0) == "served by p2"
    assert hop.sent == [("p1", True), ("p2", True)]


async def test_a_holder_answering_load_failed_is_the_model_s_failure_not_retried() -> None:
    mesh = FakeMesh(peers={InstanceId("p1"): _instance("p1"), InstanceId("p2"): _instance("p2")},
                    load={InstanceId("p2"): 3})
    mesh.register("p1", "p2")
    hop = FakeHop(mesh, {"p1": ModelLoadFailed("broken")})
    with pytest.raises(ModelLoadFailed, match="broken"):
        await route(mesh, M, hop, 5.0)
    assert hop.sent == [("p1", False)]


async def test_when_no_instance_can_load_it_the_last_error_is_raised() -> None:
    mesh = FakeMesh(runtime_available=False)
    mesh.peers = {InstanceId("p1"): _instance("p1")}
    mesh.register()
    hop = FakeHop(mesh, {"p1": ModelLoadFailed("p1 cannot")})
    with pytest.raises(ModelLoadFailed, match="p1 cannot"):
        await route(mesh, M, hop, 5.0)
    assert hop.sent == [("p1", True)] and mesh.served_here == []


async def test_an_instance_restarting_its_runtime_sends_loads_to_peers() -> None:
    mesh = FakeMesh(runtime_available=False)  # this instance would win the placement otherwise
    mesh.peers = {InstanceId("p1"): _instance("p1", models=5)}
    mesh.register()
    hop = FakeHop(mesh)
    assert await route(mesh, M, hop, 5.0) == "served by p1"
    assert hop.sent == [("p1", True)] and mesh.served_here == []

    alone = FakeMesh(runtime_available=False)
    alone.register()
    with pytest.raises(Unavailable, match="no instance can load"):
        await route(alone, M, FakeHop(alone), 5.0)


async def test_an_instance_recycling_its_runtime_places_new_copies_on_peers() -> None:
    """Memory truth (issue 16): while the runtime child restarts, the instance's own record says
    ``recycling``; a model nobody holds is loaded on a peer, not queued here."""
    mesh = FakeMesh()
    mesh.me = dataclasses.replace(_instance("me", free=GiB), recycling=True)  # roomiest, but recycling
    mesh.peers = {InstanceId("p1"): _instance("p1", free=GiB // 2, models=3)}
    mesh.register()
    hop = FakeHop(mesh)
    assert await route(mesh, M, hop, 5.0) == "served by p1"
    assert hop.sent == [("p1", True)] and mesh.served_here == []


async def test_the_deadline_bounds_the_retries() -> None:
    mesh = FakeMesh(peers={InstanceId(f"p{i}"): _instance(f"p{i}") for i in range(4)})
    mesh.register("p0", "p1", "p2", "p3")
    hop = FakeHop(mesh, {f"p{i}": PeerUnavailable("gone") for i in range(4)}, advance_s=2.0)
    with pytest.raises(DeadlineExceeded, match="timed out"):
        await route(mesh, M, hop, 3.0)
    assert len(hop.sent) == 2  # 2 s each: the third try would start after the 3 s deadline


async def test_recent_load_failures_block_a_new_placement() -> None:
    mesh = FakeMesh(peers={InstanceId("p1"): _instance("p1")})
    now = mesh.clock.now_ms()
    mesh.register(failures=tuple(FailureRecord(InstanceId("p1"), now - i, f"boom {i}") for i in range(3)))
    hop = FakeHop(mesh)
    with pytest.raises(ModelLoadFailed, match="boom 2"):
        await route(mesh, M, hop, 5.0)
    assert hop.sent == [] and mesh.served_here == []


async def test_an_unknown_model_is_not_found() -> None:
    mesh = FakeMesh()
    with pytest.raises(ModelNotFound):
        await route(mesh, M, FakeHop(mesh), 5.0)


async def test_a_preferred_holder_is_tried_first_and_the_local_copy_serves_if_it_is_lost() -> None:
    mesh = FakeMesh(peers={InstanceId("p1"): _instance("p1"), InstanceId("p2"): _instance("p2")})
    mesh.register("me", "p1", "p2")
    mesh.local.add(M)
    hop = FakeHop(mesh)
    assert await route(mesh, M, hop, 5.0, prefer=InstanceId("p2")) == "served by p2"
    lost = FakeHop(mesh, {"p2": PeerUnavailable("gone")})
    assert await route(mesh, M, lost, 5.0, prefer=InstanceId("p2")) == "here"
    assert lost.sent == [("p2", False)]


# -- the dispatcher: balanced and unbalanced traffic ---------------------------------------------

class _Copy:
    phase = Phase.LOADED

    def __init__(self, inflight: int) -> None:
        self.inflight = inflight
        self.left = 0

    def leave(self) -> None:
        self.left += 1
        self.inflight -= 1


@dataclass
class _Cache:
    copy: _Copy
    runtime_available: bool = True

    @property
    def copies(self) -> dict[ModelId, _Copy]:
        return {M: self.copy}

    def try_enter(self, model_id: ModelId) -> _Copy:
        self.copy.inflight += 1
        return self.copy


@dataclass
class _Cluster:
    instances: dict[InstanceId, InstanceRecord]


@dataclass
class _Peers:
    inflight: dict[str, int]


def _dispatcher(local_inflight: int, peer_inflight: int) -> tuple[Dispatcher, _Copy]:
    mesh = FakeMesh()
    mesh.register("me", "p1")
    copy = _Copy(local_inflight)
    registry = type("Registry", (), {"models": mesh.records})()
    dispatcher = Dispatcher(ME, registry, _Cache(copy), mesh.clock, FailurePolicy())  # type: ignore[arg-type]
    dispatcher.attach(_Cluster({ME: _instance("me"), InstanceId("p1"): _instance("p1")}),  # type: ignore[arg-type]
                      _Peers({"p1:8033": peer_inflight}))  # type: ignore[arg-type]
    return dispatcher, copy


@pytest.mark.parametrize(("balanced", "expected"), [(False, "served by p1"), (True, "run")])
async def test_a_busy_local_copy_hands_unbalanced_traffic_to_a_less_busy_holder(balanced: bool, expected: str) -> None:
    dispatcher, copy = _dispatcher(local_inflight=3, peer_inflight=0)
    hop = FakeHop(FakeMesh())
    assert await dispatcher.dispatch(M, hop, 5.0, balanced=balanced) == expected
    assert copy.inflight == 3 and copy.left == 1  # entered once, left once either way


async def test_a_local_copy_no_busier_than_the_holders_serves_unbalanced_traffic() -> None:
    dispatcher, _ = _dispatcher(local_inflight=1, peer_inflight=4)
    assert await dispatcher.dispatch(M, FakeHop(FakeMesh()), 5.0) == "run"
