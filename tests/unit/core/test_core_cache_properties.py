"""Property tests of the cache ledger (issue text: "used bytes never exceed capacity; eviction takes
the least recently used").

A Hypothesis state machine drives one ``CacheLedger`` with random reserve / plan_eviction /
mark_loaded / touch / resize / mark_unloading / release / count_unaccounted steps, and whole cache-miss cycles the way
the cache manager runs them (plan_eviction -> unloads -> release -> try_reserve; resize after load).
A plain dict holds the expected state. After every step the ledger's bytes must add up and stay
within capacity; every eviction must take least recently used copies first.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kserve_mesh.core.cache import CacheLedger
from kserve_mesh.core.errors import CapacityExceeded
from kserve_mesh.core.ids import ModelId
from kserve_mesh.core.records import CopyState

CAPACITY = 100
MODELS = [ModelId(f"m{i}") for i in range(10)]
models = st.sampled_from(MODELS)
sizes = st.one_of(st.integers(min_value=0, max_value=40), st.integers(min_value=0, max_value=CAPACITY + 20))


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = CacheLedger(CAPACITY)
        self.now = 1_000
        # model -> [size, state, last_used]: what the ledger should hold
        self.expected: dict[ModelId, list] = {}

    def in_state(self, *states: CopyState) -> list[ModelId]:
        return sorted(m for m, (_, s, _) in self.expected.items() if s in states)

    def check_eviction(self, needed: int, protect: set[ModelId]) -> list[ModelId]:
        """Call plan_eviction and check its choice against the expected state."""
        shortfall = needed - self.ledger.free_bytes - self.ledger.unloading_bytes()
        evictable = set(self.in_state(CopyState.LOADED)) - protect
        victims = self.ledger.plan_eviction(needed, protect=protect)
        assert len(victims) == len(set(victims))
        assert set(victims) <= evictable
        if shortfall <= 0:
            assert victims == []
        stayers = [self.expected[m][2] for m in evictable - set(victims)]
        for victim in victims:
            # least recently used first: no victim is younger than an evictable copy that stays
            assert all(self.expected[victim][2] <= t for t in stayers)
            self.expected[victim][1] = CopyState.UNLOADING
        if victims:
            freed = sum(self.expected[v][0] for v in victims)
            if stayers:  # more was there to take, so enough was taken...
                assert freed >= shortfall
            # ...and not one victim more than needed (the youngest victim was still needed)
            assert freed - self.expected[victims[-1]][0] < shortfall
        return victims

    def release(self, model: ModelId) -> None:
        entry = self.ledger.release(model)
        assert entry is not None and entry.size_bytes == self.expected.pop(model)[0]

    # -- single steps ------------------------------------------------------------------------------
    @rule(model=models, size=sizes, age=st.integers(min_value=0, max_value=500))
    def reserve(self, model: ModelId, size: int, age: int) -> None:
        last_used = self.now - age  # a new model may come in behind others (registration age)
        if size > CAPACITY:
            with pytest.raises(CapacityExceeded):
                self.ledger.try_reserve(model, size, last_used)
        elif model in self.expected:
            with pytest.raises(ValueError):
                self.ledger.try_reserve(model, size, last_used)
        else:
            fits = self.ledger.used_bytes + size <= CAPACITY
            assert self.ledger.try_reserve(model, size, last_used) == fits
            if fits:
                self.expected[model] = [size, CopyState.LOADING, last_used]

    @rule(needed=st.integers(min_value=0, max_value=CAPACITY), protect=st.sets(models, max_size=3))
    def plan_eviction(self, needed: int, protect: set[ModelId]) -> None:
        self.check_eviction(needed, protect)

    @precondition(lambda self: self.in_state(CopyState.LOADING))
    @rule(data=st.data())
    def mark_loaded(self, data: st.DataObject) -> None:
        model = data.draw(st.sampled_from(self.in_state(CopyState.LOADING)))
        self.now += data.draw(st.integers(0, 5))
        self.ledger.mark_loaded(model, self.now)
        self.expected[model][1] = CopyState.LOADED

    @precondition(lambda self: self.expected)
    @rule(data=st.data(), by=st.integers(min_value=-50, max_value=50))
    def touch(self, data: st.DataObject, by: int) -> None:
        model = data.draw(st.sampled_from(sorted(self.expected)))
        stamp = self.now + by  # late, out-of-order stamps happen
        self.now = max(self.now, stamp)
        self.ledger.touch(model, stamp)
        self.expected[model][2] = max(self.expected[model][2], stamp)

    @precondition(lambda self: self.expected)
    @rule(data=st.data(), size=st.integers(min_value=0, max_value=CAPACITY))
    def resize(self, data: st.DataObject, size: int) -> None:
        model = data.draw(st.sampled_from(sorted(self.expected)))
        growth = size - self.expected[model][0]
        ok = growth <= 0 or self.ledger.used_bytes + growth <= CAPACITY
        assert self.ledger.resize(model, size) == ok
        if ok:
            self.expected[model][0] = size

    @rule(model=models)
    def mark_unloading(self, model: ModelId) -> None:
        changed = self.ledger.mark_unloading(model)
        assert changed == (model in self.expected and self.expected[model][1] is not CopyState.UNLOADING)
        if changed:
            self.expected[model][1] = CopyState.UNLOADING

    @precondition(lambda self: self.in_state(CopyState.LOADING, CopyState.UNLOADING))
    @rule(data=st.data())
    def release_one(self, data: st.DataObject) -> None:
        """An unload finished, or a load failed: only non-LOADED entries leave this way."""
        self.release(data.draw(st.sampled_from(self.in_state(CopyState.LOADING, CopyState.UNLOADING))))

    # -- the cache manager's whole cycle -----------------------------------------------------------
    @rule(model=models, size=st.integers(min_value=1, max_value=60), measured=st.integers(1, 80), data=st.data())
    def cache_miss(self, model: ModelId, size: int, measured: int, data: st.DataObject) -> None:
        """Make room (evict, finish unloads), reserve, load, correct to the measured size."""
        if model in self.expected:
            return
        self.now += 10
        busy = set(self.in_state(CopyState.LOADING)) | set(
            data.draw(st.sets(st.sampled_from(MODELS), max_size=2), label="in use")
        )
        while not self.ledger.try_reserve(model, size, self.now):
            self.check_eviction(size, busy)
            unloading = self.in_state(CopyState.UNLOADING)
            if not unloading:
                return  # everything left is in use or loading: the mesh would wait
            for victim in unloading:
                self.release(victim)
        self.expected[model] = [size, CopyState.LOADING, self.now]
        while not self.ledger.resize(model, measured):
            if not self.check_eviction(measured - self.expected[model][0], busy | {model}):
                if not self.in_state(CopyState.UNLOADING):
                    self.release(model)  # the load gives up: no room for its real size
                    return
            for victim in self.in_state(CopyState.UNLOADING):
                self.release(victim)
        self.expected[model][0] = measured
        self.ledger.mark_loaded(model, self.now)
        self.expected[model][1] = CopyState.LOADED

    @rule(wanted=st.integers(min_value=-10, max_value=CAPACITY + 20))
    def count_unaccounted(self, wanted: int) -> None:
        """Memory no copy accounts for (issue 16): counted as far as free space allows."""
        room = CAPACITY - sum(size for size, _, _ in self.expected.values())
        short = self.ledger.count_unaccounted(wanted)
        assert self.ledger.unaccounted_bytes == min(max(0, wanted), room)
        assert short == max(0, wanted) - self.ledger.unaccounted_bytes

    # -- invariants --------------------------------------------------------------------------------
    @invariant()
    def bytes_add_up_and_stay_within_capacity(self) -> None:
        entries = self.ledger.entries()
        assert self.ledger.accounted_bytes == sum(e.size_bytes for e in entries)
        assert self.ledger.used_bytes == self.ledger.accounted_bytes + self.ledger.unaccounted_bytes
        assert self.ledger.unaccounted_bytes >= 0
        assert 0 <= self.ledger.used_bytes <= CAPACITY
        assert self.ledger.free_bytes == CAPACITY - self.ledger.used_bytes

    @invariant()
    def ledger_matches_the_expected_state(self) -> None:
        actual = {e.model_id: [e.size_bytes, e.state, e.last_used_ms] for e in self.ledger.entries()}
        assert actual == self.expected
        loaded = [t for _, s, t in self.expected.values() if s is CopyState.LOADED]
        assert self.ledger.lru_time_ms(default=-1) == (min(loaded) if loaded else -1)


LedgerMachine.TestCase.settings = settings(
    max_examples=120, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestLedgerProperties = LedgerMachine.TestCase
