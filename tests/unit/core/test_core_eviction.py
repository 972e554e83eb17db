"""The eviction policies behind the ledger (issue 12): the adaptive policy's parts, by example.

The frequency sketch counts and ages; a popular model outlives one-off ones; value per byte sends
big, cheap, rarely used copies first; a copy that is loading or in use is never a victim; the
hill climber moves the window; the LRU shadow counts what LRU would hit and, when the hot set moves
faster than the frequencies follow, re-ranks the protected copies; names are checked.
"""

from __future__ import annotations

import random

import pytest

from kserve_mesh.core.cache import CacheLedger, LruPolicy
from kserve_mesh.core.errors import InternalError
from kserve_mesh.core.eviction import AdaptivePolicy, FrequencySketch, make_policy
from kserve_mesh.core.ids import ModelId
from kserve_mesh.core.records import CopyState

M = ModelId


def loaded(ledger: CacheLedger, name: str, size: int, t: int, load_ms: float = 100.0) -> None:
    assert ledger.try_reserve(M(name), size, t)
    ledger.mark_loaded(M(name), t, load_ms)


def miss(ledger: CacheLedger, name: str, size: int, t: int, load_ms: float = 100.0, *,
         prefetch: bool = False) -> list[ModelId]:
    """The cache manager's miss (or, with ``prefetch``, a load no request waits for): evict,
    release, reserve, load. Returns the victims."""
    victims: list[ModelId] = []
    while not ledger.try_reserve(M(name), size, t, prefetch=prefetch):
        chosen = ledger.plan_eviction(size)
        assert chosen, "no victim although the cache holds evictable copies"
        for v in chosen:
            ledger.release(v)
        victims += chosen
    ledger.mark_loaded(M(name), t, load_ms)
    return victims


def test_policy_names() -> None:
    assert isinstance(make_policy("lru", 10), LruPolicy)
    assert isinstance(make_policy(" Adaptive ", 10), AdaptivePolicy)
    with pytest.raises(ValueError, match="unknown eviction policy 'fifo': expected one of lru, adaptive"):
        make_policy("fifo", 10)


def test_sketch_counts_and_halves() -> None:
    sketch = FrequencySketch(1024, sample=1000)
    h, other = FrequencySketch.key_hash("popular"), FrequencySketch.key_hash("rare")
    assert [sketch.increment(h) for _ in range(9)] == list(range(1, 10))  # each: the estimate after it
    assert sketch.increment(other) == 1
    assert sketch.estimate(h) == 9  # 1 in the doorkeeper + 8 in the rows
    assert sketch.estimate(other) == 1
    assert sketch.estimate(FrequencySketch.key_hash("never")) == 0
    sketch.age()
    assert sketch.estimate(h) == 4  # rows halved, doorkeeper emptied
    assert sketch.estimate(other) == 0
    assert sketch.increment(h) == 5  # the doorkeeper again, on top of the halved rows


def test_sketch_restores_a_count_written_back() -> None:
    sketch = FrequencySketch(1024, sample=1000)
    h = FrequencySketch.key_hash("m")
    sketch.restore(h, 7)
    assert sketch.estimate(h) == 7
    sketch.restore(h, 3)  # never lowers what the sketch holds (other models share its counters)
    assert sketch.estimate(h) == 7
    sketch.restore(h, 100)
    assert sketch.estimate(h) == 16  # the cap (15) and the doorkeeper


def test_sketch_counters_saturate() -> None:
    sketch = FrequencySketch(64, sample=10_000, cap=15)
    h = FrequencySketch.key_hash("hot")
    for _ in range(100):
        sketch.increment(h)
    assert sketch.estimate(h) == 16


def test_sketch_ages_by_itself_every_sample() -> None:
    sketch = FrequencySketch(64, sample=16)
    h = FrequencySketch.key_hash("a")
    for _ in range(15):
        sketch.increment(h)
    assert sketch.estimate(h) == 15
    sketch.increment(h)  # the 16th increment halves everything
    assert sketch.estimate(h) == 7


def test_key_hash_is_stable_across_processes() -> None:
    # crc32-based, not hash(): the same model id lands on the same counters in every run
    assert FrequencySketch.key_hash("model-1") == FrequencySketch.key_hash("model-1")
    assert FrequencySketch.key_hash("model-1") != FrequencySketch.key_hash("model-2")
    assert 0 <= FrequencySketch.key_hash("x") < 1 << 64


def test_a_loaded_copy_counts_its_own_requests_and_leaves_them_to_the_sketch() -> None:
    """A loaded copy's hits are counted on the copy, exactly, not in the sketch (a fifth of the
    work per hit); the count halves with the sketch, saturates where the sketch's estimate does,
    and is written back to the sketch when the copy leaves, so a model evicted and requested again
    comes back with its history."""
    policy = AdaptivePolicy(100_000, hill_climb=False)
    ledger = CacheLedger(100_000, policy)
    sketch = policy._sketch
    h = FrequencySketch.key_hash("a")
    for _ in range(3):
        sketch.increment(h)  # requests of "a" before it was loaded
    loaded(ledger, "a", 1_000, 0)  # and the request that loads it
    a = ledger.get(M("a"))
    assert a is not None and a.slot.f == 4 == sketch.estimate(h)
    for t in range(1, 6):
        ledger.touch(M("a"), t)
    assert a.slot.f == 9 and sketch.estimate(h) == 4  # counted on the copy, not in the sketch
    assert policy.value(a) == 9 * 100.0 * 1_000_000 / 1_000
    sketch.age()
    assert policy.value(a) == 4 * 100.0 * 1_000_000 / 1_000  # halved with the sketch (9 >> 1)
    ledger.touch(M("a"), 6)
    assert a.slot.f == 5 and a.slot.ages == sketch.ages
    for t in range(7, 40):
        ledger.touch(M("a"), t)
    assert a.slot.f == policy.COUNTER_MAX + 1  # saturated, like the sketch's estimate
    ledger.mark_unloading(M("a"))
    ledger.release(M("a"))
    assert sketch.estimate(h) == policy.COUNTER_MAX + 1  # written back when it left
    loaded(ledger, "a", 1_000, 40)
    b = ledger.get(M("a"))
    assert b is not None and b.slot.f == policy.COUNTER_MAX + 1  # back with its history


def test_loaded_copies_keep_their_counts_when_the_sketch_grows() -> None:
    """The sketch is sized for the copies held and replaced when their number doubles; models not
    loaded lose their history then, loaded copies keep theirs and go on halving in step."""
    policy = AdaptivePolicy(10**9, hill_climb=False)
    ledger = CacheLedger(10**9, policy)
    loaded(ledger, "hot", 1_000, 0)
    for t in range(1, 6):
        ledger.touch(M("hot"), t)
    hot = ledger.get(M("hot"))
    assert hot is not None and hot.slot.f == 6
    first = policy._sketch
    first.age()
    t = 10
    while policy._sketch is first:  # copies past the sketch's first size: a new, longer-lived one
        t += 1
        loaded(ledger, f"m{t}", 1_000, t)
    assert policy._sketch.sample > first.sample and policy._sketch.ages == first.ages
    assert policy.value(hot) == 3 * 100.0 * 1_000_000 / 1_000  # 6, halved once


def test_a_popular_model_outlives_a_stream_of_one_off_models() -> None:
    ledger = CacheLedger(10, AdaptivePolicy(10, hill_climb=False))
    t = 0
    loaded(ledger, "hot", 1, t)
    for _ in range(20):
        t += 1
        ledger.touch(M("hot"), t)
    for i in range(200):
        t += 1
        miss(ledger, f"once-{i}", 1, t)
        if i % 20 == 0:
            ledger.touch(M("hot"), t)
    assert ledger.get(M("hot")) is not None  # LRU evicts it (20 one-offs between its uses): next test


def test_lru_would_lose_the_popular_model_in_the_same_workload() -> None:
    ledger = CacheLedger(10, LruPolicy())
    t = 0
    loaded(ledger, "hot", 1, t)
    for i in range(200):
        t += 1
        miss(ledger, f"once-{i}", 1, t)
        if i % 20 == 0:
            ledger.touch(M("hot"), t)
    assert ledger.get(M("hot")) is None


@pytest.mark.parametrize("prefetch", [False, True])
def test_a_prefetched_copy_is_not_refused_admission_on_arrival(prefetch: bool) -> None:
    """A copy the mesh placed (re-homed from a leaving instance, an extra copy of a hot model, an
    explicit load) has no history in this instance's sketch: as a request's miss it would duel for
    admission with the copies used here, lose, and be evicted by the next misses; as a prefetch it
    joins protected's young end, no candidate, and outlives them (in probation it would be the least
    valuable copy). (A drain waited its whole grace period for re-homed copies that the receiver
    evicted as soon as they arrived.)"""
    ledger = CacheLedger(80, AdaptivePolicy(80))
    policy = ledger.policy
    assert isinstance(policy, AdaptivePolicy)
    t = 0
    for i in range(80):  # placed too: no stale candidates
        t += 1
        assert ledger.try_reserve(M(f"used-{i}"), 1, t, prefetch=True)
        ledger.mark_loaded(M(f"used-{i}"), t, 100.0)
    for _ in range(3):
        for i in range(80):
            t += 1
            ledger.touch(M(f"used-{i}"), t)
    t += 1
    miss(ledger, "placed", 1, t, prefetch=prefetch)
    slot = ledger.get(M("placed")).slot  # type: ignore[union-attr]
    assert slot.seg == (2 if prefetch else 0) and not slot.cand  # protected / the window
    for i in range(3):
        t += 1
        miss(ledger, f"other-{i}", 1, t)
    assert (ledger.get(M("placed")) is not None) is prefetch
    assert policy.refused == (1 if prefetch else 2)  # other-0; and placed when it was a request's miss


def test_value_per_byte_evicts_the_big_cheap_copy_first() -> None:
    policy = AdaptivePolicy(100, hill_climb=False)
    ledger = CacheLedger(100, policy)
    loaded(ledger, "big", 60, 1, load_ms=100.0)
    loaded(ledger, "small", 10, 2, load_ms=100.0)
    loaded(ledger, "mid", 30, 3, load_ms=100.0)
    for t in range(4, 10):  # same frequency for all
        for name in ("big", "small", "mid"):
            ledger.touch(M(name), t)
    assert policy.value(ledger.get(M("small"))) > policy.value(ledger.get(M("mid"))) > policy.value(
        ledger.get(M("big"))
    )  # type: ignore[arg-type]
    assert ledger.plan_eviction(20) == [M("big")]


def test_a_model_slow_to_load_is_worth_more_than_a_fast_one() -> None:
    policy = AdaptivePolicy(100, hill_climb=False)
    ledger = CacheLedger(100, policy)
    loaded(ledger, "slow", 10, 1, load_ms=5_000.0)
    loaded(ledger, "fast", 10, 1, load_ms=50.0)
    assert policy.value(ledger.get(M("slow"))) > policy.value(ledger.get(M("fast")))  # type: ignore[arg-type]


def test_the_measured_load_time_reaches_the_policy_after_the_load() -> None:
    policy = AdaptivePolicy(100, hill_climb=False)
    ledger = CacheLedger(100, policy)
    assert ledger.try_reserve(M("a"), 10, 1)
    ledger.mark_loaded(M("a"), 2)  # the cache manager learns the time a moment later
    before = policy.value(ledger.get(M("a")))  # type: ignore[arg-type]
    ledger.record_load_time(M("a"), 9_000.0)
    assert ledger.get(M("a")).load_ms == 9_000.0  # type: ignore[union-attr]
    assert policy.value(ledger.get(M("a"))) > before  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", ["lru", "adaptive"])
def test_loading_and_in_use_copies_are_never_victims(policy: str) -> None:
    ledger = CacheLedger(30, make_policy(policy, 30))
    loaded(ledger, "in-use", 10, 1)
    loaded(ledger, "idle", 10, 2)
    assert ledger.try_reserve(M("loading"), 10, 3)
    assert ledger.plan_eviction(30, protect={M("in-use")}) == [M("idle")]
    assert ledger.get(M("in-use")).state is CopyState.LOADED  # type: ignore[union-attr]
    assert ledger.get(M("loading")).state is CopyState.LOADING  # type: ignore[union-attr]
    # nothing else may go: the rest is loading or in use
    assert ledger.plan_eviction(30, protect={M("in-use")}) == []


def test_a_tracking_policy_cannot_evict_what_is_not_evictable() -> None:
    class Rogue(LruPolicy):
        def __init__(self, ledger_: list[CacheLedger]) -> None:
            super().__init__()
            self.ledger = ledger_

        def select_victims(self, needed_bytes, evictable):  # type: ignore[no-untyped-def]
            return [self.ledger[0].get(M("loading"))]

    box: list[CacheLedger] = []
    ledger = CacheLedger(100, Rogue(box))
    box.append(ledger)
    loaded(ledger, "a", 50, 1)
    assert ledger.try_reserve(M("loading"), 50, 1)
    with pytest.raises(InternalError, match="Rogue chose model 'loading'"):
        ledger.plan_eviction(10)
    assert ledger.get(M("loading")).state is CopyState.LOADING  # type: ignore[union-attr]


def _climbing_run(trace: list[str], monkeypatch: pytest.MonkeyPatch, z: float | None = None) -> list[float]:
    """The window's share after each request of ``trace`` (models of 10 bytes, room for 100)."""
    if z is not None:
        monkeypatch.setattr(AdaptivePolicy, "CLIMB_Z", z)
    policy = AdaptivePolicy(1_000, hill_climb=True)
    ledger = CacheLedger(1_000, policy)
    shares = []
    for t, name in enumerate(trace, start=1):
        if ledger.get(M(name)) is None:
            miss(ledger, name, 10, t)
        else:
            ledger.touch(M(name), t)
        shares.append(policy.stats()["window_fraction"])
    return shares


def _stationary(rng: random.Random, n: int) -> list[str]:
    return [f"z{min(999, int(rng.paretovariate(0.6)))}" for _ in range(n)]


def test_hill_climbing_moves_the_window_when_the_hit_ratio_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(3)
    period = AdaptivePolicy(1_000)._sketch.sample
    # a skewed, stationary phase, then a recency-heavy one (each model three times, then never again)
    recency = [f"r{i // 3}" for i in range(4 * period)]
    shares = _climbing_run(_stationary(rng, 3 * period) + recency, monkeypatch)
    assert len(set(shares[: 3 * period])) == 1  # the stationary phase: the window stays
    assert len(set(shares[3 * period:])) > 1  # the hit ratio fell far: the climber moved it


def test_hill_climbing_does_not_chase_chance(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a stationary trace the hit ratio still moves from one period to the next by chance; the
    climber takes no step for that (it moved the window on every period before ``CLIMB_Z``)."""
    trace = _stationary(random.Random(5), 40 * AdaptivePolicy(1_000)._sketch.sample)
    assert len(set(_climbing_run(trace, monkeypatch))) == 1
    assert len(set(_climbing_run(trace, monkeypatch, z=0.0))) > 10  # ungated: a step every period


def test_policy_stats_and_next_victim_value() -> None:
    ledger = CacheLedger(20, AdaptivePolicy(20, hill_climb=False))
    assert ledger.next_victim_value() is None
    loaded(ledger, "a", 10, 1)
    loaded(ledger, "b", 10, 2)
    ledger.touch(M("b"), 3)
    value = ledger.next_victim_value()
    assert value is not None and value >= 0
    miss(ledger, "c", 10, 4)
    stats = ledger.policy_stats()
    assert stats["requests"] == 4 and stats["hits"] == 1 and stats["evictions"] == 1
    assert stats["evicted_unused"] == 1  # the victim served no request after its load
    assert stats["evicted_value"] >= 0 and 0 <= stats["window_fraction"] <= 1
    assert ledger.policy_name == "adaptive"
    assert CacheLedger(10).policy_name == "lru" and CacheLedger(10).next_victim_value() is None


def test_a_policy_set_later_learns_the_copies_already_there() -> None:
    ledger = CacheLedger(30)
    loaded(ledger, "a", 10, 1)
    loaded(ledger, "b", 10, 2)
    ledger.policy = AdaptivePolicy(30, hill_climb=False)
    assert sorted(ledger.plan_eviction(30)) == [M("a"), M("b")]


def test_lru_breaks_ties_of_last_use_by_model_id_as_before() -> None:
    ledger = CacheLedger(20, LruPolicy())
    loaded(ledger, "b", 10, 5)
    loaded(ledger, "a", 10, 5)  # same last use, reserved later, smaller id
    assert ledger.plan_eviction(10) == [M("a")]
    ledger.touch(M("b"), 7)
    ledger.touch(M("b"), 6)  # a late stamp never moves a copy back
    assert ledger.get(M("b")).last_used_ms == 7  # type: ignore[union-attr]



def _replay(ledger: CacheLedger, trace: list[tuple[str, int]]) -> int:
    """Requests (model, size) through ``ledger`` as the cache manager makes them; returns the hits."""
    hits = 0
    for t, (name, size) in enumerate(trace, start=1):
        if ledger.get(M(name)) is not None:
            ledger.touch(M(name), t)
            hits += 1
        else:
            miss(ledger, name, size, t)
    return hits


def test_the_lru_shadow_hits_exactly_what_lru_hits() -> None:
    rng = random.Random(7)
    sizes = {f"m{i}": rng.randint(5, 60) for i in range(80)}
    trace = [(name, sizes[name]) for name in rng.choices(list(sizes), weights=[1 / (i + 1) for i in range(80)], k=3000)]
    policy = AdaptivePolicy(400)
    _replay(CacheLedger(400, policy), trace)
    lru_hits = _replay(CacheLedger(400, LruPolicy()), trace)
    assert lru_hits > 500  # a cache that hits, so the equality below says something
    assert policy.stats()["lru_shadow_hits"] == lru_hits


def _shifting_trace(rng: random.Random, phases: int, per_phase: int) -> list[tuple[str, int]]:
    """Ten hot models per phase (a new ten each phase) among one-off cold ones, all of one size."""
    trace = []
    for phase in range(phases):
        for i in range(per_phase):
            hot = rng.random() < 0.8
            trace.append((f"hot{phase}-{rng.randrange(10)}" if hot else f"cold{phase}-{i}", 10))
    return trace


def test_a_moving_hot_set_makes_the_shadow_win_and_re_ranks_protected_copies() -> None:
    # Room for 20 copies, a hot set of ten. (With room for 15 the duel is won again and again while
    # the old hot set still lingers, and re-ranking costs a few hits: LRU itself beats every
    # frequency policy on this toy trace, where a hot set lives 400 requests.)
    trace = _shifting_trace(random.Random(3), phases=6, per_phase=400)
    policy = AdaptivePolicy(200, hill_climb=False)
    ledger = CacheLedger(200, policy)
    _replay(ledger, trace[:400])  # the first hot ten settle in protected
    assert policy._bytes[2] > 0 and policy.lru_wins == 0
    hits = _replay(ledger, trace[400:])
    assert policy.lru_wins >= 1  # the old hot models held protected when the hot set moved
    without = AdaptivePolicy(200, hill_climb=False)
    without.DUEL_MARGIN = 2.0  # a shadow that never wins: the policy as it was
    ledger_without = CacheLedger(200, without)
    _replay(ledger_without, trace[:400])
    assert hits > _replay(ledger_without, trace[400:])
    assert without.lru_wins == 0


def test_a_stationary_skewed_workload_gives_the_shadow_no_win() -> None:
    rng = random.Random(11)
    names = [f"m{i}" for i in range(300)]
    trace = [(n, 10) for n in rng.choices(names, weights=[1 / (i + 1) for i in range(300)], k=6000)]
    policy = AdaptivePolicy(300)
    hits = _replay(CacheLedger(300, policy), trace)
    assert hits > policy.stats()["lru_shadow_hits"]  # frequency beats recency here ...
    assert policy.lru_wins == 0  # ... and the duel never says otherwise


def test_past_shadow_full_copies_the_shadow_is_lru_over_a_sample_of_the_models() -> None:
    rng = random.Random(5)
    names = [f"m{i}" for i in range(3000)]
    trace = [(n, 10) for n in rng.choices(names, weights=[1 / (i + 1) for i in range(3000)], k=20000)]
    policy = AdaptivePolicy(4000)
    policy.SHADOW_FULL = 50
    policy._peak = 800  # room for 400 copies of 10 bytes: the sample is fixed from the start
    policy._sample_shadow()
    assert policy._shadow_shift == 4  # 1 model in 16, in 1/16 of the room
    _replay(CacheLedger(4000, policy), trace)
    followed = [(n, size) for n, size in trace if FrequencySketch.key_hash(n) >> 48 < policy._shadow_cut]
    assert 0 < len(followed) < len(trace)
    sample_hits = _replay(CacheLedger(4000 >> 4, LruPolicy()), followed)
    assert policy.stats()["lru_shadow_hits"] == 16 * sample_hits  # exactly LRU on the sample, scaled
    assert len(policy._shadow) <= 25


def test_the_spread_of_the_sizes_held_is_followed_exactly() -> None:
    policy = AdaptivePolicy(10_000, hill_climb=False)
    ledger = CacheLedger(10_000, policy)
    for i in range(6):
        loaded(ledger, f"eq{i}", 100, i)
    assert not policy.sizes_vary()  # equal sizes: no spread
    loaded(ledger, "big", 3_000, 7)
    assert policy.sizes_vary()  # 6 x 100 and 3,000: a coefficient of variation of ~2.2
    ledger.resize(M("big"), 120)
    assert not policy.sizes_vary()  # resized: 100 x 6 and 120 spread little
    ledger.resize(M("big"), 3_000)
    ledger.release(M("big"))
    assert not policy.sizes_vary()
    assert policy._size_sum == 600 and policy._size_sq == 6 * 100 * 100  # exact after all of it
    for i in range(6):
        ledger.release(M(f"eq{i}"))
    assert (policy._size_sum, policy._size_sq, policy._copies) == (0, 0, 0)


def test_a_victim_is_probation_s_least_valuable_copy_wherever_it_is() -> None:
    from kserve_mesh.core import eviction

    def probation_victim(sizes: list[int]) -> tuple[str, AdaptivePolicy, CacheLedger]:
        policy = AdaptivePolicy(100_000, hill_climb=False)
        ledger = CacheLedger(100_000, policy)
        for i, size in enumerate(sizes):
            loaded(ledger, f"m{i}", size, i)
        aside: list = []
        best = policy._pick({}, (eviction._PROB,), AdaptivePolicy.SAMPLE, set(), None, lambda e: True, aside)
        assert best is not None and not aside
        return best[1].model_id, policy, ledger

    # The same access history (one request each); the 21st oldest is the biggest, so worth least per
    # byte. A walk of probation's 16 oldest copies (before) would not reach it.
    varied = [500] * 20 + [20_000] + [500] * 9  # 30 copies: fewer than the sketch's first size (32)
    victim, policy, ledger = probation_victim(varied)
    assert victim == M("m20")
    assert len(policy._segs[1]) == 28  # all in probation but the window's two newest (1 %: 1,000 bytes)
    # the ledger's plan: the oldest candidate duels probation's least valuable copy and wins
    assert ledger.plan_eviction(100_000 - sum(varied) + 1_000) == [M("m20")]
    victim, _, _ = probation_victim([500] * 30)
    assert victim == M("m0")  # equal values: the oldest


def test_keys_queued_before_a_halving_compare_right_with_those_queued_after() -> None:
    """Probation's heap keeps each copy at its value when it entered; every halving of the sketch
    halves every value, so a key queued before it counts double against one queued after."""
    policy = AdaptivePolicy(100_000, hill_climb=False)
    ledger = CacheLedger(100_000, policy)
    sketch = policy._sketch
    for _ in range(8):
        sketch.increment(FrequencySketch.key_hash("a"))
    loaded(ledger, "a", 1_000, 0)  # the sketch already counted 8 requests of "a"
    loaded(ledger, "x", 1_000, 1)  # the window holds 1 % (1,000 bytes): "a" moves to probation
    a = ledger.get(M("a"))
    assert a is not None and a.slot.seg == 1
    queued_a = policy.value(a)
    sketch.age()  # every count halves: "a" is worth half as much now
    for _ in range(6):
        sketch.increment(FrequencySketch.key_hash("b"))
    loaded(ledger, "b", 1_000, 2)  # the sketch already counted 6 requests of "b"
    loaded(ledger, "y", 1_000, 3)  # "b" and "x" move to probation
    b = ledger.get(M("b"))
    assert b is not None and b.slot.seg == 1
    assert policy.value(b) < queued_a  # by the values when queued, "b" would go first ...
    assert policy.value(a) < policy.value(b)  # ... but "a" is worth less now
    x = ledger.get(M("x"))
    best = policy._heap_min({id(x)}, None, lambda e: True, [])
    assert best is not None and best[1] is a


def test_a_copy_whose_value_rose_since_it_was_queued_is_queued_again() -> None:
    """A copy that entered probation while it loaded was queued at an assumed load cost (1 ms,
    nothing measured yet); its measured load time, five times the other copy's, makes it worth
    more than the copy queued beside it."""
    policy = AdaptivePolicy(100_000, hill_climb=False)
    ledger = CacheLedger(100_000, policy)
    assert ledger.try_reserve(M("a"), 1_000, 0)  # loading: no measured cost yet
    for i, name in enumerate(["b", "c"], 1):
        loaded(ledger, name, 1_000, i)  # "a" and "b" in probation at one request each
    a, b = ledger.get(M("a")), ledger.get(M("b"))
    assert a is not None and b is not None and a.slot.seg == b.slot.seg == 1
    old_item = a.slot.item
    assert old_item is not None and old_item[0] < policy.value(b)  # queued at 1 ms, b at its 100
    ledger.mark_loaded(M("a"), 3, 500.0)
    best = policy._heap_min(set(), None, lambda e: True, [])
    assert best is not None and best[1] is b  # "a" is worth more now: "b" goes first
    assert a.slot.item is not old_item and a.slot.item[0] == policy.value(a)  # requeued at its worth


@pytest.mark.parametrize("sizes", ["equal", "varied"])
def test_every_pick_is_probation_s_least_valuable_else_what_a_fresh_walk_picks(
        sizes: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a skewed trace with copies in use (not evictable) and big misses that need several
    victims: a pick from probation is its least valuable eligible copy, exactly (from the heap,
    with copies taken earlier in the same selection and the candidate set aside); a pick from
    protected or the window, from the walk carried from one pick to the next, is the one a walk
    from the segment's oldest copy makes."""
    rng = random.Random(7)
    monkeypatch.setattr(AdaptivePolicy, "SAMPLE_FACTOR", 10**6)  # no halving: queued keys stay exact
    policy = AdaptivePolicy(60_000)
    ledger = CacheLedger(60_000, policy)
    size_of = {f"m{i}": 1_000 if sizes == "equal" else rng.choice([200, 500, 1_000, 3_000, 9_000])
               for i in range(300)}
    names = list(size_of)
    real = policy._pick
    picks = carried = from_heap = 0

    def checked(scans, segs, sample, taken, exclude, evictable, aside):  # type: ignore[no-untyped-def]
        nonlocal picks, carried, from_heap
        carried += bool(scans)
        got = real(scans, segs, sample, taken, exclude, evictable, aside)
        eligible = [e for e in policy._segs[1].values() if id(e) not in taken and e is not exclude and evictable(e)]
        if eligible and 1 in segs:
            # probation's least valuable of all its eligible copies, exactly (no halving meanwhile)
            assert got is not None and got[1].slot.seg == 1
            assert got[0] == min(map(policy.value, eligible)) == policy.value(got[1])
            from_heap += 1
        else:  # protected's or the window's: what a walk from the segment's oldest copy picks
            assert got == real({}, tuple(s for s in segs if s != 1), sample, taken, exclude, evictable, [])
            picks += 1
        return got

    monkeypatch.setattr(policy, "_pick", checked)
    several = 0
    for t in range(6_000):
        name = names[min(len(names) - 1, int(rng.paretovariate(0.9))) - 1]
        if ledger.get(M(name)) is not None:
            ledger.touch(M(name), t)
            continue
        busy = {M(n) for n in rng.sample(names, 20)}  # copies serving requests: not evictable
        while not ledger.try_reserve(M(name), size_of[name], t):
            chosen = ledger.plan_eviction(size_of[name], protect=busy)
            assert chosen, "no victim although the cache holds evictable copies"
            several += len(chosen) > 1
            for v in chosen:
                ledger.release(v)
        ledger.mark_loaded(M(name), t, 10.0 + size_of[name] / 100)
    assert from_heap > 100, from_heap
    if sizes == "varied":
        assert several > 10  # big misses needed several victims
        # probation ran out of eligible copies now and then: picks from protected, some of them
        # going on from an earlier pick's walk
        assert picks > 10 and carried > 3, (picks, carried)
