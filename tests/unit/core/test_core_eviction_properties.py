"""Property tests of the eviction policies behind the ledger (issue 12).

Hypothesis state machines drive ledgers through random cache lives (misses with eviction, hits,
loads with measured times, resizes, unregistrations, failed loads, copies in use):

* ``AdaptiveMachine``: with the adaptive policy, used bytes never exceed capacity, a victim is
  always a LOADED copy that is not protected (loading and in-use copies never go), and the
  policy's state stays bounded: it tracks exactly the ledger's copies, its segments' bytes add up,
  its candidate queue, sketch and LRU shadow stay within their bounds.
* ``LruMachine``: the tracking ``LruPolicy`` (a lazy heap) chooses exactly what today's LRU chose (a
  sort of the evictable copies by last use, then id, through the plain ``choose_victims`` path of a
  second ledger fed the same steps), and both ledgers stay identical.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kserve_mesh.core.cache import CacheLedger, LruPolicy
from kserve_mesh.core.eviction import AdaptivePolicy
from kserve_mesh.core.ids import ModelId
from kserve_mesh.core.records import CopyState

CAPACITY = 100
MODELS = [ModelId(f"m{i}") for i in range(14)]
models = st.sampled_from(MODELS)


class AdaptiveMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.policy = AdaptivePolicy(CAPACITY)
        self.policy._sketch.sample = 40  # age and climb often within a short run
        self.ledger = CacheLedger(CAPACITY, self.policy)
        self.now = 0

    def in_state(self, *states: CopyState) -> list[ModelId]:
        return sorted(e.model_id for e in self.ledger.entries() if e.state in states)

    def evict(self, needed: int, protect: set[ModelId]) -> list[ModelId]:
        before = {e.model_id: e.state for e in self.ledger.entries()}
        victims = self.ledger.plan_eviction(needed, protect=protect)
        assert len(victims) == len(set(victims))
        for v in victims:
            assert before[v] is CopyState.LOADED, f"victim {v} was {before[v]}"
            assert v not in protect, f"victim {v} was in use"
        return victims

    @rule(model=models, size=st.integers(1, 45), measured=st.integers(1, 60), load_ms=st.floats(0.1, 1e5),
          busy=st.sets(models, max_size=3))
    def cache_miss(self, model: ModelId, size: int, measured: int, load_ms: float, busy: set[ModelId]) -> None:
        """The cache manager's miss: evict (never what is loading or busy), reserve, load, resize."""
        if self.ledger.get(model) is not None:
            return
        self.now += 1
        protect = busy | set(self.in_state(CopyState.LOADING))
        while not self.ledger.try_reserve(model, size, self.now):
            self.evict(size, protect)
            unloading = self.in_state(CopyState.UNLOADING)
            if not unloading:
                return  # the rest is loading or in use: the mesh would wait
            for v in unloading:
                self.ledger.release(v)
        while not self.ledger.resize(model, measured):
            grow = measured - self.ledger.get(model).size_bytes  # type: ignore[union-attr]
            if not self.evict(grow, protect | {model}) and not self.in_state(CopyState.UNLOADING):
                self.ledger.release(model)  # the load gives up
                return
            for v in self.in_state(CopyState.UNLOADING):
                self.ledger.release(v)
        self.ledger.mark_loaded(model, self.now, load_ms)

    @precondition(lambda self: self.ledger.entries())
    @rule(data=st.data())
    def hit(self, data: st.DataObject) -> None:
        model = data.draw(st.sampled_from(sorted(e.model_id for e in self.ledger.entries())))
        self.now += 1
        self.ledger.touch(model, self.now)

    @precondition(lambda self: self.in_state(CopyState.LOADING))
    @rule(data=st.data())
    def load_fails(self, data: st.DataObject) -> None:
        self.ledger.release(data.draw(st.sampled_from(self.in_state(CopyState.LOADING))))

    @rule(model=models)
    def unregister(self, model: ModelId) -> None:
        entry = self.ledger.get(model)
        if entry is not None and entry.state is CopyState.LOADED:
            assert self.ledger.mark_unloading(model)
            self.ledger.release(model)

    @rule(needed=st.integers(0, CAPACITY), protect=st.sets(models, max_size=4))
    def plan_alone(self, needed: int, protect: set[ModelId]) -> None:
        """Evictions planned by someone (memory truth) whose unloads finish later."""
        self.evict(needed, protect | set(self.in_state(CopyState.LOADING)))

    @precondition(lambda self: self.in_state(CopyState.UNLOADING))
    @rule(data=st.data())
    def unload_finishes(self, data: st.DataObject) -> None:
        self.ledger.release(data.draw(st.sampled_from(self.in_state(CopyState.UNLOADING))))

    @invariant()
    def capacity_never_exceeded(self) -> None:
        assert 0 <= self.ledger.used_bytes <= CAPACITY
        assert self.ledger.accounted_bytes == sum(e.size_bytes for e in self.ledger.entries())
        assert self.ledger.unloading_bytes() == sum(
            e.size_bytes for e in self.ledger.entries() if e.state is CopyState.UNLOADING
        )

    @invariant()
    def policy_state_is_bounded_and_consistent(self) -> None:
        p = self.policy
        tracked = [e for e in self.ledger.entries() if e.slot is not None]
        # it tracks exactly the copies that may still be chosen (not those on their way out)
        assert {e.model_id for e in tracked} == set(self.in_state(CopyState.LOADING, CopyState.LOADED))
        assert p._copies == len(tracked)
        in_segments = [e for seg in p._segs for e in seg.values()]
        assert sorted(e.model_id for e in in_segments) == sorted(e.model_id for e in tracked)
        assert p._bytes == [sum(e.size_bytes for e in seg.values()) for seg in p._segs]
        assert p._size_sum == sum(e.size_bytes for e in tracked)  # the sizes' spread, exact
        assert p._size_sq == sum(e.size_bytes**2 for e in tracked)
        assert len(p._candidates) <= p.MAX_CANDIDATES
        # probation's value heap: exactly one current item per probation copy, none for the others,
        # and at most about twice as many items as copies (those of copies that left are dropped)
        probation = p._segs[1]
        current = [it for it in p._heap if it[2].slot is not None and it[2].slot.item is it]
        assert sorted(it[2].model_id for it in current) == sorted(probation)
        assert all(e.slot.item is None for seg in (p._segs[0], p._segs[2]) for e in seg.values())
        assert len(p._heap) <= 2 * len(probation) + 65
        assert p._sketch.width <= max(p.MIN_WIDTH, 8 * max(p.MIN_COPIES, 2 * len(MODELS)))
        assert 0.0 <= p._window_target <= CAPACITY
        # the LRU shadow: one entry per model it holds, its bytes within the capacity (but for one
        # model bigger than the whole cache), and each duel period ends
        assert p._shadow_bytes == sum(p._shadow.values())
        assert p._shadow_bytes <= CAPACITY or len(p._shadow) == 1
        assert len(p._shadow) <= len(MODELS)
        assert p._duel_requests < max(p.MIN_DUEL, p._copies) + 1


class _TodaysLru:
    """Today's LRU path: a plain ``EvictionPolicy`` (``choose_victims`` over the candidates)."""

    def choose_victims(self, candidates, needed_bytes):  # type: ignore[no-untyped-def]
        return LruPolicy().choose_victims(candidates, needed_bytes)


class LruMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.new = CacheLedger(CAPACITY, LruPolicy())
        self.old = CacheLedger(CAPACITY, _TodaysLru())
        self.now = 1_000

    def both(self, method: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        a = getattr(self.new, method)(*args, **kwargs)
        b = getattr(self.old, method)(*args, **kwargs)
        if method != "release":
            assert a == b, f"{method}{args}: tracking LRU {a!r} != today's LRU {b!r}"
        return a

    def in_state(self, *states: CopyState) -> list[ModelId]:
        return sorted(e.model_id for e in self.old.entries() if e.state in states)

    @rule(model=models, size=st.integers(0, 50), age=st.integers(0, 4))
    def reserve(self, model: ModelId, size: int, age: int) -> None:
        if self.old.get(model) is None:
            self.both("try_reserve", model, size, self.now - age)  # registration age: may come in behind

    @rule(needed=st.integers(0, CAPACITY), protect=st.sets(models, max_size=3))
    def plan_eviction(self, needed: int, protect: set[ModelId]) -> None:
        self.both("plan_eviction", needed, protect=protect)

    @precondition(lambda self: self.in_state(CopyState.LOADING))
    @rule(data=st.data())
    def mark_loaded(self, data: st.DataObject) -> None:
        self.now += data.draw(st.integers(0, 3))
        self.both("mark_loaded", data.draw(st.sampled_from(self.in_state(CopyState.LOADING))), self.now)

    @precondition(lambda self: self.old.entries())
    @rule(data=st.data(), by=st.integers(-3, 3))
    def touch(self, data: st.DataObject, by: int) -> None:
        model = data.draw(st.sampled_from(sorted(e.model_id for e in self.old.entries())))
        stamp = self.now + by  # late and equal stamps happen often (ties broken by id)
        self.now = max(self.now, stamp)
        self.both("touch", model, stamp)

    @precondition(lambda self: self.old.entries())
    @rule(data=st.data(), size=st.integers(0, 50))
    def resize(self, data: st.DataObject, size: int) -> None:
        self.both("resize", data.draw(st.sampled_from(sorted(e.model_id for e in self.old.entries()))), size)

    @rule(model=models)
    def mark_unloading(self, model: ModelId) -> None:
        self.both("mark_unloading", model)

    @precondition(lambda self: self.in_state(CopyState.LOADING, CopyState.UNLOADING))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self.both("release", data.draw(st.sampled_from(self.in_state(CopyState.LOADING, CopyState.UNLOADING))))

    @invariant()
    def ledgers_identical(self) -> None:
        def view(ledger: CacheLedger) -> dict:
            return {e.model_id: (e.size_bytes, e.state, e.last_used_ms) for e in ledger.entries()}

        assert view(self.new) == view(self.old)
        assert self.new.used_bytes == self.old.used_bytes <= CAPACITY
        assert self.new.lru_time_ms(-1) == self.old.lru_time_ms(-1)
        heap = self.new.policy._heap  # type: ignore[union-attr]
        assert len(heap) <= 2 * len(self.new.entries()) + 64 + CAPACITY  # stale items are dropped


_SETTINGS = settings(max_examples=80, stateful_step_count=40, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])
AdaptiveMachine.TestCase.settings = _SETTINGS
LruMachine.TestCase.settings = _SETTINGS
TestAdaptivePolicyProperties = AdaptiveMachine.TestCase
TestLruIsTodaysLru = LruMachine.TestCase
