"""The adaptive eviction policy: frequency, size, load cost and recency, tuned online (issue 12).

``AdaptivePolicy`` is a ``TrackingPolicy`` (``core/cache.py``): the ledger tells it of every miss,
access, load (measured time and size) and removal, and asks it for victims. It is Window-TinyLFU
(Caffeine's design) made aware of size and load cost, measured on ``tools/cachesim.py`` against LRU
and the offline optimum (``benchmarks/cache_sim.py``):

* **A frequency sketch (TinyLFU).** A count-min sketch (4 rows of byte counters saturating at 15,
  a doorkeeper that keeps one-off requests out of the rows) estimates each model's recent request
  count, also for models that are *not* loaded: a popular model evicted and requested again comes
  back with its history. Every ``sample`` requests all counters halve (aging), so the estimate
  follows a shifting workload. Width: 4 counters per copy (at least ``MIN_COPIES``' worth). A
  *loaded* copy counts its own requests: it starts from the sketch's estimate when it is reserved,
  adds its hits, halves when the sketch does (lazily, by the sketch's count of halvings) and
  writes its count back into the sketch when it leaves. The count is exact where the sketch's
  rows over-count by collisions, and a hit costs a fifth of the bytecode of four counter updates
  (on the policy-cost benchmark, 233 opcodes of this module per request instead of 397, a hit 91
  instead of 180; on the simulator's grid the hit ratio rose in 43 of 48 cells, by up to 0.5
  points, and fell in 5 by 0.04 points or less).
* **Value per byte (GDSF).** A copy is worth ``f * cost / size``: ``f`` its estimated frequency,
  ``cost`` its measured load time, ``size`` its bytes, i.e. load milliseconds saved per MB held.
  Big, cheap-to-reload, rarely used copies are worth least.
* **Segments and admission (W-TinyLFU).** A new copy enters a recency *window* (LRU order), so a
  burst of requests for a new model finds it loaded whatever its history. When the window holds
  more than its share of the capacity its oldest copies move to the main part's *probation*
  segment as admission candidates; a probation copy that is used again moves to *protected*
  (90 % of main; its oldest fall back to probation. Caffeine keeps 80 %: on the simulator's grid
  that lowered the hit ratio by 0.6 points per cell on average, up to 1.6 points, most where the
  sizes vary, and missed two more cells' targets. Copies protected by their reuse are worth more
  than value per byte says; 70 % was worse still, 95 % cost the drifting trace). When room is
  needed, each candidate duels main's next victim: probation's least valuable copy, kept in a heap
  by value (each copy at its value when it entered probation, scaled by the sketch's halvings
  since, and queued again at its value now when that rose meanwhile); protected's least valuable
  of its ``SAMPLE`` oldest when probation has none (``SAMPLE_VARIED`` while the sizes held spread
  widely, a coefficient of variation above ``VARIED_CV``). The candidate stays if it is worth more,
  else it is the victim (an admission refused, counted). Without candidates, victims come from
  probation, then protected, then the window. (Before the heap, probation's victim was the least
  valuable of its 4 oldest copies, or 16 while sizes vary. A wider look paid on the simulator's
  grid: 64 oldest, then 256, then all of probation lifted the lognormal cells at each step, Zipf
  0.8 at 5 % from 0.707 to 0.756 x OFF, shift and drift at 5 / 10 % by 2.1-2.9 points, and moved
  the equal-size cells by 0.32 points or less; the heap costs no more per miss than the 16-copy
  walk.)
* **A fixed window, by measurement.** The window holds 1 % of the capacity (Caffeine's default).
  Caffeine also sizes it online by hill climbing (every ``sample`` requests, 10 per copy held,
  the hit ratio of the last period is compared with the one before and the window moves a step,
  6.25 % of the capacity decaying by 0.98, in the direction that helped). That climber is here as
  an option (``hill_climb=True``), and it is off: on the simulator's grid it lowered the hit ratio
  in 47 of 48 cells (by up to 2.6 points; turning it off took the cells meeting every target from
  39 to 40), on every trace including the shifting and bursty ones, because a period's hit ratio
  differs from the one before by chance alone (by about ``sqrt(2 p (1 - p) / n)`` over ``n``
  requests) and the climber stepped on that noise. Stepping only on changes beyond ``CLIMB_Z`` (3)
  of those, and not while the cache fills, recovered two thirds of the loss, not all of it. The
  policy follows a changing workload through the sketch's aging and the LRU shadow below. (ARC-style "ghosts" of recent
  victims, moving the window on every miss of one, were tried: they follow a fast shift sooner but
  pushed the window towards LRU on the stationary simulator traces and lost most of the gain there.)
* **An LRU shadow (following a fast shift).** The policy also keeps what plain LRU of
  the same capacity would hold (key hash and size per model, no copies) and, per duel period (one
  request per copy held, at least ``MIN_DUEL``), counts the requests only LRU would have hit and the
  requests only this policy hit. When LRU wins clearly (by 2 % of the requests and 1.5 standard
  deviations of a sign test) the hot set has moved faster than the frequencies follow, and the
  protected segment is full of models that used to be hot: protected falls back into probation,
  where every copy duels on its value again. (Widening the window or ageing the sketch on a win
  were tried too: the window cost the stationary traces more, the ageing added nothing.) Past
  ``SHADOW_FULL`` copies the shadow follows a sample of the models by key hash in as much less room
  (SHARDS' spatial sampling), so its cost and memory stay small at 20k copies. The shadow's hits are
  a metric: what LRU would have done (estimated, when sampled), side by side with this policy's hits.

The mesh cannot serve a model it does not hold, so nothing is ever bypassed: a model that loses
its duel was loaded and served, and is the next victim. The ledger's invariants are the ledger's:
this class only orders copies, it never sees a victim the ledger did not offer (``evictable``), and
a copy that is loading or serving requests is never evictable. Cost: O(1) amortised per access and
per request (ordered dicts, a sketch of fixed row count) but O(log n) for a copy that enters
probation (a heap push); choosing k victims pops O(k) items, plus the items of copies that left
probation or are not evictable (set aside, pushed back when the selection ends), and plus a push
per copy whose value rose since it was queued. Protected's and the window's walks go once per
selection from their oldest copies (``_Scan``). (Keeping values from one selection to the next in
the 16-copy walk, until the sketch halved or the copy was used, was tried: it cost up to 2.7 points
of hit ratio on the simulator's 1 % cells. The heap keeps them too, but checks a copy's value when
it reaches the top and queues it again when it rose.) State: the sketch (5 bytes per counter slot,
at least ``MIN_WIDTH`` slots), per copy an ordered-dict entry and a small slot, per probation copy
a heap item (at most two, until the heap is compacted), per model in the shadow an ordered-dict
entry (at most ``SHADOW_FULL`` or so).
"""

from __future__ import annotations

import zlib
from collections import OrderedDict, deque
from collections.abc import Iterator
from heapq import heapify, heappop, heappush, heapreplace
from math import ldexp

from kserve_mesh.core.cache import CacheEntry, Evictable, LruPolicy, TrackingPolicy
from kserve_mesh.core.ids import ModelId
from kserve_mesh.core.records import CopyState

__all__ = ["POLICY_NAMES", "AdaptivePolicy", "FrequencySketch", "make_policy"]

_MASK64 = (1 << 64) - 1
_HALVE = bytes(i >> 1 for i in range(256))
_MB = 1_000_000.0


class FrequencySketch:
    """Count-min sketch of request counts: 4 rows of byte counters, a doorkeeper, periodic halving.

    ``width`` counters per row (a power of two); counters saturate at ``cap``; every ``sample``
    increments every counter halves and the doorkeeper empties. A key is its 64-bit ``key_hash``;
    the five indices (doorkeeper, 4 rows) are different bit ranges of it. ``estimate`` over-counts
    only by collisions. Memory: 5 bytes per counter slot.
    """

    __slots__ = ("adds", "ages", "cap", "door", "inc", "mask", "rows", "sample", "step", "width")

    def __init__(self, width: int, sample: int, cap: int = 15) -> None:
        bits = max(6, (max(1, width) - 1).bit_length())
        self.width = 1 << bits
        self.mask = self.width - 1
        self.step = (64 - bits) // 4  # row k reads bits [k * step, k * step + bits) of the hash
        self.cap = cap
        self.inc = bytes(min(i + 1, cap) for i in range(256))  # a counter's next value: saturates at cap
        self.rows = [bytearray(self.width) for _ in range(4)]
        self.door = bytearray(self.width)
        self.sample = max(16, sample)
        self.adds = 0
        self.ages = 0  # halvings so far

    @staticmethod
    def key_hash(key: str) -> int:
        """A 64-bit hash of a model id, the same in every process (unlike ``hash()``)."""
        return ((zlib.crc32(key.encode()) + 1) * 0x9E3779B97F4A7C15) & _MASK64 ^ (len(key) << 40)

    def increment(self, h: int) -> int:
        """Count one request of ``h``; returns its estimate after it."""
        mask = self.mask
        step = self.step
        r0, r1, r2, r3 = self.rows
        i0 = h & mask
        i1 = (h >> step) & mask
        i2 = (h >> 2 * step) & mask
        i3 = (h >> 3 * step) & mask
        door = self.door
        d = (h >> 60 | h << 4) & mask
        if door[d]:
            inc = self.inc  # a table lookup costs half the bytecode of a compare and an add
            a = r0[i0] = inc[r0[i0]]
            b = r1[i1] = inc[r1[i1]]
            c = r2[i2] = inc[r2[i2]]
            e = r3[i3] = inc[r3[i3]]
            f = min(a, b, c, e)
        else:
            door[d] = 1
            f = min(r0[i0], r1[i1], r2[i2], r3[i3])
        self.adds += 1
        if self.adds >= self.sample:
            self.age()
            return self.estimate(h)
        return f + 1  # the doorkeeper's one

    def estimate(self, h: int) -> int:
        mask, step = self.mask, self.step
        r0, r1, r2, r3 = self.rows
        f = min(r0[h & mask], r1[(h >> step) & mask], r2[(h >> 2 * step) & mask], r3[(h >> 3 * step) & mask])
        return f + self.door[(h >> 60 | h << 4) & mask]

    def restore(self, h: int, f: int) -> None:
        """Make ``estimate(h)`` at least ``f`` (a loaded copy's own count, written back when it
        leaves): the doorkeeper set, each row's counter raised to ``f - 1`` (at most the cap)."""
        mask, step = self.mask, self.step
        self.door[(h >> 60 | h << 4) & mask] = 1
        f = min(f - 1, self.cap)
        if f > 0:
            for k, row in enumerate(self.rows):
                i = (h >> k * step) & mask
                row[i] = max(row[i], f)

    def age(self) -> None:
        self.rows = [row.translate(_HALVE) for row in self.rows]
        self.door = bytearray(self.width)
        self.adds //= 2
        self.ages += 1

    def state_bytes(self) -> int:
        return 5 * self.width


_WIN, _PROB, _PROT = 0, 1, 2  # the segment a copy is in
_LOADED = CopyState.LOADED


class _Slot:
    """What the policy keeps per copy: its key hash, its request count (and the sketch's halvings
    it was counted to), its segment, its admission state, its heap item."""

    __slots__ = ("ages", "cand", "f", "h", "item", "seg")

    def __init__(self, h: int, f: int, ages: int) -> None:
        self.h = h
        self.f = f  # its requests: the sketch's estimate when it was reserved, counted on by its hits
        self.ages = ages  # ... halved since whenever the sketch has halved more often than this
        self.seg = _WIN
        self.cand = False  # moved from the window to probation, not yet through its admission duel
        self.item: tuple[float, int, CacheEntry] | None = None  # its current item in probation's value heap


class AdaptivePolicy(TrackingPolicy):
    """Window-TinyLFU with value-per-byte admission and an LRU shadow. See the module doc.

    Segments (each an LRU order): the window, and the main part split into probation and protected
    (90 % of main). A new copy enters the window; a hit in probation promotes to protected (its
    oldest fall back to probation); a hit anywhere moves the copy to its segment's young end.
    Victims: while the window holds more than its share, its oldest copy is a *candidate* for main
    and duels main's next victims (probation's least valuable, then protected's): the candidate
    wins when its value ``f * cost / size`` is higher (ties keep the incumbent); a winner evicts
    the victim and moves on, a loser is itself the victim (admission refused). Without candidates,
    victims come in order: probation (least valuable first), protected, window (the least valuable
    of their oldest few).
    """

    name = "adaptive"

    INITIAL_WINDOW = 0.01
    PROTECTED = 0.90
    STEP = 0.0625
    STEP_DECAY = 0.98
    RESTART_CHANGE = 0.05
    CLIMB_Z = 3.0  # the window moves only on a change of the hit ratio this many standard deviations wide
    MIN_COPIES = 32  # the sample period never shrinks below this many copies' worth
    MIN_WIDTH = 4096  # counters per sketch row, at least (models not loaded need counters too)
    SAMPLE_FACTOR = 10  # requests per sample period (aging, hill climbing), per copy
    COUNTER_MAX = 15  # frequency counters saturate here (a model hot long ago ages out quickly)
    SAMPLE = 4  # a victim from protected or the window: the least valuable of this many oldest ...
    SAMPLE_VARIED = 16  # ... or of this many while the copies' sizes vary widely:
    VARIED_CV = 0.5  # a coefficient of variation of the sizes held above this
    MAX_CANDIDATES = 256  # copies from the window awaiting their admission duel (older ones just stay)
    MIN_DUEL = 32  # requests per duel period with the LRU shadow, at least (else one per copy held)
    DUEL_MARGIN = 0.02  # LRU wins a period when it hit more by this share of the requests ...
    DUEL_Z = 1.5  # ... and by this many standard deviations of the difference (sign test)
    SHADOW_FULL = 4096  # copies (peak) up to which the LRU shadow follows every model
    HEAP_RESCALE = 512  # sketch halvings after which the value heap's keys are computed afresh

    def __init__(self, capacity_bytes: int = 1, *, hill_climb: bool = False) -> None:
        self.capacity = max(1, int(capacity_bytes))
        self.hill_climb = hill_climb
        self._segs: tuple[OrderedDict[ModelId, CacheEntry], ...] = (OrderedDict(), OrderedDict(), OrderedDict())
        self._bytes = [0, 0, 0]
        self._window_target = self.INITIAL_WINDOW * self.capacity
        self._copies = 0
        self._size_sum = 0  # of the copies held, and of their squares (exact ints): the sizes' spread
        self._size_sq = 0
        self._peak = self.MIN_COPIES
        self._sketch = self._new_sketch()
        self._f_max = self.COUNTER_MAX + 1  # a loaded copy's count saturates where the sketch's estimate does
        # load cost of copies not measured yet: the mean of the measured ones, per byte
        self._cost_ms_total = 0.0
        self._cost_bytes_total = 0
        # hill climber
        self._step = self.STEP * self.capacity
        self._prev_rate = -1.0 if self.CLIMB_Z > 0 else 0.0  # -1: no period measured yet
        self._evicting = False  # victims were asked for: the cache is full
        self._full_before = False  # ... already when this sample period began
        self._period_hits = 0
        self._period_requests = 0
        self.evicted_value = 0.0  # the sum of the victims' values (metrics; the ledger counts the rest)
        self.refused = 0  # window candidates that lost their duel and were evicted
        self._candidates: deque[CacheEntry] = deque(maxlen=self.MAX_CANDIDATES)
        # probation by value: (value scaled to the sketch's halvings since _heap_base, seq, copy)
        self._heap: list[tuple[float, int, CacheEntry]] = []
        self._heap_seq = 0
        self._heap_base = 0
        # the LRU shadow: what plain LRU of the same capacity would hold (key hash -> size)
        self._shadow: OrderedDict[int, int] = OrderedDict()
        self._shadow_bytes = 0
        self._shadow_shift = 0  # it follows 1 model in 2**shift (by key hash) in as many times less room
        self._shadow_cut = 1 << 16  # ... those whose hash's top 16 bits are below this
        self._shadow_weight = 1  # requests each of its hits stands for
        self._shadow_capacity = self.capacity
        self._duel_requests = 0
        self._lru_only = 0  # requests of this duel period the shadow hit and we missed
        self._ours_only = 0  # and the other way round
        self.shadow_hits = 0  # requests plain LRU would have hit (metrics)
        self.lru_wins = 0  # duel periods LRU won (metrics)

    def _new_sketch(self) -> FrequencySketch:
        """Sized for ``_peak`` copies: 4 counters each (at least ``MIN_WIDTH``), a sample period of
        ``SAMPLE_FACTOR`` requests per copy held now (half the peak: the peak leaves room to grow)."""
        copies = max(self.MIN_COPIES, self._peak // 2)
        return FrequencySketch(max(self.MIN_WIDTH, 4 * self._peak), self.SAMPLE_FACTOR * copies, self.COUNTER_MAX)

    def attach(self, capacity_bytes: int) -> None:
        """The ledger's capacity (window share and hill-climbing step are fractions of it)."""
        share = self._window_target / self.capacity
        self.capacity = max(1, int(capacity_bytes))
        self._shadow_capacity = self.capacity >> self._shadow_shift
        self._window_target = share * self.capacity
        self._step = self.STEP * self.capacity

    # -- frequency and value -----------------------------------------------------------------------
    def _shadow_request(self, h: int, size: int, hit: bool) -> None:
        """One request of a model in the shadow's sample (the callers check ``h >> 48 <
        _shadow_cut``), as the LRU shadow sees it; at the end of a duel period, the verdict."""
        shadow = self._shadow
        if h in shadow:
            shadow.move_to_end(h)
            self.shadow_hits += self._shadow_weight
            if not hit:
                self._lru_only += 1
        else:
            if hit:
                self._ours_only += 1
            shadow[h] = size
            self._shadow_bytes += size
            cap = self._shadow_capacity
            while self._shadow_bytes > cap and len(shadow) > 1:
                self._shadow_bytes -= shadow.popitem(last=False)[1]
        self._duel_requests += 1
        if self._duel_requests >= max(self.MIN_DUEL, self._copies >> self._shadow_shift):
            a, b = self._lru_only, self._ours_only
            if a - b > max(self.DUEL_MARGIN * self._duel_requests, self.DUEL_Z * (a + b) ** 0.5):
                self._lru_won()
            self._duel_requests = self._lru_only = self._ours_only = 0

    def _sample_shadow(self) -> None:
        """Past ``SHADOW_FULL`` copies the shadow follows a sample of the models (1 in 2**shift by
        key hash, with as many times less room), as SHARDS samples reuse distances: the duel needs
        a few thousand models' verdicts, not every model's, and each request skipped saves its cost."""
        shift = 0
        while (self._peak >> shift) > self.SHADOW_FULL:
            shift += 1
        if shift == self._shadow_shift:
            return
        self._shadow_shift = shift
        self._shadow_cut = 1 << (16 - min(shift, 16))
        self._shadow_weight = 1 << shift
        self._shadow_capacity = self.capacity >> shift
        kept = OrderedDict((h, size) for h, size in self._shadow.items() if h >> 48 < self._shadow_cut)
        self._shadow, self._shadow_bytes = kept, sum(kept.values())

    def _lru_won(self) -> None:
        """Plain LRU would have hit clearly more in the last duel period: the workload moved faster
        than the frequencies follow, and the protected segment holds what used to be hot. Protected
        falls back into probation, where each copy duels on its value again."""
        self.lru_wins += 1
        prot = self._segs[_PROT]
        while prot:
            self._move(next(iter(prot.values())), _PROB)

    def _count_period(self, hit: bool) -> None:
        """The hill climber's tally of one request (kept only while it climbs)."""
        self._period_requests += 1
        if hit:
            self._period_hits += 1
        if self._period_requests >= self._sketch.sample:
            self._climb()

    def _climb(self) -> None:
        n = self._period_requests
        rate = self._period_hits / n
        prev = self._prev_rate
        change = rate - prev
        full, self._full_before = self._full_before, self._evicting
        if self.CLIMB_Z > 0:
            # A period's hit ratio moves by chance alone: by about sqrt(2 p (1 - p) / n) from one
            # period to the next. A change within CLIMB_Z of those is no evidence that the last step
            # helped or hurt, and the window stays where it is. Nor does it while the cache fills
            # (a period that began before the first eviction): the hit ratio rises whatever it does.
            p = (rate + prev) / 2
            if not full or prev < 0 or abs(change) <= self.CLIMB_Z * (2 * p * (1 - p) / n) ** 0.5:
                self._prev_rate = rate
                self._period_hits = self._period_requests = 0
                return
        amount = self._step if change >= 0 else -self._step
        if abs(change) >= self.RESTART_CHANGE:
            self._step = self.STEP * self.capacity * (1 if amount >= 0 else -1)
        else:
            self._step = self.STEP_DECAY * amount
        self._prev_rate = rate
        self._period_hits = self._period_requests = 0
        self._window_target = min(float(self.capacity), max(0.0, self._window_target + amount))
        self._demote_window()
        self._rebalance_protected()

    def _cost_ms(self, entry: CacheEntry) -> float:
        if entry.load_ms > 0:
            return entry.load_ms
        if self._cost_bytes_total:
            return max(1e-3, self._cost_ms_total * entry.size_bytes / self._cost_bytes_total)
        return 1.0

    def value(self, entry: CacheEntry) -> float:
        """``f * cost / size``: estimated requests x load milliseconds saved, per MB held."""
        slot = entry.slot
        f = slot.f >> (self._sketch.ages - slot.ages)  # its count, halved with the sketch since
        cost = entry.load_ms or self._cost_ms(entry)
        size = entry.size_bytes
        return f * cost * _MB / (size if size > 0 else 1)

    # -- segments ----------------------------------------------------------------------------------
    def _move(self, entry: CacheEntry, seg: int) -> None:
        slot: _Slot = entry.slot
        mid = entry.model_id
        del self._segs[slot.seg][mid]
        self._bytes[slot.seg] -= entry.size_bytes
        self._segs[seg][mid] = entry
        self._bytes[seg] += entry.size_bytes
        if seg == _PROB:
            slot.seg = seg
            self._queue(entry)
        else:
            if slot.seg == _PROB:
                slot.item = None
                self._compact()
            slot.seg = seg

    # -- probation by value ------------------------------------------------------------------------
    def _queue(self, entry: CacheEntry) -> None:
        """Put a copy that enters probation on the value heap, at its value now. Keys are values
        times 2 ** (the sketch's halvings since ``_heap_base``), so a key queued before a halving
        compares right with one queued after it (every count halved)."""
        age = self._sketch.ages - self._heap_base
        if age > self.HEAP_RESCALE:
            self._rebuild_heap()
            return
        self._heap_seq += 1
        item = (ldexp(self.value(entry), age), self._heap_seq, entry)
        entry.slot.item = item
        heappush(self._heap, item)
        self._compact()

    def _compact(self) -> None:
        """Drop the items of copies that left probation once they are half the heap (amortised O(1))."""
        heap = self._heap
        if len(heap) > 2 * len(self._segs[_PROB]) + 64:
            self._heap = [it for it in heap if it[2].slot is not None and it[2].slot.item is it]
            heapify(self._heap)

    def _rebuild_heap(self) -> None:
        """Every probation copy at its value now (the keys' scale reset after ``HEAP_RESCALE``
        halvings)."""
        self._heap_base = self._sketch.ages
        items = []
        for entry in self._segs[_PROB].values():  # oldest first: ties go to the older copy
            self._heap_seq += 1
            item = (self.value(entry), self._heap_seq, entry)
            entry.slot.item = item
            items.append(item)
        heapify(items)
        self._heap = items

    def _heap_min(self, taken: set[int], exclude: CacheEntry | None, evictable: Evictable,
                  aside: list[tuple[float, int, CacheEntry]]) -> tuple[float, CacheEntry] | None:
        """``(value, copy)`` of the least valuable evictable probation copy not ``taken``, not
        ``exclude``. A copy whose value rose since it was queued (queued while it loaded, at an
        assumed cost, and measured since; or resized) is queued again at its value now; one that
        is taken or not evictable is put ``aside`` (back on the heap when the selection ends)."""
        heap = self._heap
        age = self._sketch.ages - self._heap_base
        value = self.value
        held = None  # the excluded copy's item: eligible again for the next pick
        best = None
        while heap:
            item = heap[0]
            entry = item[2]
            slot = entry.slot
            if slot is None or slot.item is not item:
                heappop(heap)  # the copy left probation since
            elif entry is exclude:
                held = heappop(heap)
            elif id(entry) in taken or not evictable(entry):
                aside.append(heappop(heap))  # not eligible for the rest of this selection
            else:
                v = value(entry)
                key = ldexp(v, age)
                if key <= item[0]:
                    best = (v, entry)
                    break
                self._heap_seq += 1
                new = (key, self._heap_seq, entry)
                slot.item = new
                heapreplace(heap, new)
        if held is not None:
            heappush(heap, held)
        return best

    def _rebalance_protected(self) -> None:
        limit = self.PROTECTED * (self.capacity - self._window_target)
        prot = self._segs[_PROT]
        while self._bytes[_PROT] > limit and prot:
            self._move(next(iter(prot.values())), _PROB)

    # -- the seam ----------------------------------------------------------------------------------
    def on_reserve(self, entry: CacheEntry, now_ms: int, prefetch: bool = False) -> None:
        h = FrequencySketch.key_hash(entry.model_id)
        sk = self._sketch
        # this request, counted with the model's history while it was not loaded
        slot = _Slot(h, sk.increment(h), sk.ages)
        entry.slot = slot
        if h >> 48 < self._shadow_cut:  # in the sample the LRU shadow follows
            self._shadow_request(h, entry.size_bytes, False)
        if self.hill_climb:
            self._count_period(False)
        if prefetch:
            # The mesh placed it (a copy re-homed from a leaving instance, an extra copy of a model
            # hot elsewhere, an explicit load): its requests were counted by another instance, so
            # this sketch cannot judge it yet, and in probation, where the least valuable copy goes
            # first, it would go at the next miss. It joins protected's young end without an
            # admission duel, and falls back to probation in protected's turn unless it is used.
            slot.seg = _PROT
            self._segs[_PROT][entry.model_id] = entry
            self._bytes[_PROT] += entry.size_bytes
            self._rebalance_protected()
        else:
            self._segs[_WIN][entry.model_id] = entry
            self._bytes[_WIN] += entry.size_bytes
            if self._bytes[_WIN] > self._window_target:
                self._demote_window()
        self._copies += 1
        self._size_sum += entry.size_bytes
        self._size_sq += entry.size_bytes * entry.size_bytes
        if self._copies > self._peak:  # grow the sketch with the cache (models not loaded lose their history)
            self._peak = 2 * self._copies
            self._sample_shadow()
            ages = self._sketch.ages
            self._sketch = self._new_sketch()
            self._sketch.ages = ages  # the loaded copies' counts go on halving with it

    def on_access(self, entry: CacheEntry, now_ms: int, counted: bool = True) -> None:
        slot = entry.slot
        if slot is None or not counted:
            return
        # The copy's own count, not the sketch's: a fifth of the bytecode of a sketch increment
        # on the path every hit takes, and exact (no collisions). It is written back on removal.
        sk = self._sketch
        ages = sk.ages
        if slot.ages != ages:
            slot.f >>= ages - slot.ages
            slot.ages = ages
        if slot.f < self._f_max:
            slot.f += 1
        sk.adds += 1  # the request counts towards the sketch's sample period all the same
        if sk.adds >= sk.sample:
            sk.age()
        h = slot.h
        if h >> 48 < self._shadow_cut:  # in the sample the LRU shadow follows (all models up to SHADOW_FULL)
            self._shadow_request(h, entry.size_bytes, entry.state is _LOADED)
        if self.hill_climb:
            self._count_period(entry.state is _LOADED)
        if slot.seg == _PROB:
            self._move(entry, _PROT)
            self._rebalance_protected()
        else:
            self._segs[slot.seg].move_to_end(entry.model_id)

    def on_loaded(self, entry: CacheEntry, load_ms: float) -> None:
        if entry.slot is not None and load_ms > 0:
            self._cost_ms_total += load_ms
            self._cost_bytes_total += entry.size_bytes or 1

    def on_resize(self, entry: CacheEntry, old_size: int) -> None:
        slot = entry.slot
        if slot is not None:
            self._bytes[slot.seg] += entry.size_bytes - old_size
            self._size_sum += entry.size_bytes - old_size
            self._size_sq += entry.size_bytes * entry.size_bytes - old_size * old_size

    def on_remove(self, entry: CacheEntry, evicted: bool) -> None:
        slot = entry.slot
        if slot is None:
            return
        entry.slot = None
        sk = self._sketch
        f = slot.f >> (sk.ages - slot.ages)
        if f:
            sk.restore(slot.h, f)  # its history, for when it is requested again
        self._copies -= 1
        self._size_sum -= entry.size_bytes
        self._size_sq -= entry.size_bytes * entry.size_bytes
        if self._segs[slot.seg].pop(entry.model_id, None) is not None:
            self._bytes[slot.seg] -= entry.size_bytes
        if slot.seg == _PROB:
            self._compact()

    def sizes_vary(self) -> bool:
        """Whether the sizes of the copies held spread widely (coefficient of variation above
        ``VARIED_CV``): then value per byte separates copies that recency alone does not, and a
        victim from protected or the window is chosen from a wider sample of their oldest."""
        n, total = self._copies, self._size_sum
        return n > 1 and self._size_sq * n > (1.0 + self.VARIED_CV**2) * total * total

    def _pick(self, scans: dict[int, _Scan], segs: tuple[int, ...], sample: int, taken: set[int],
              exclude: CacheEntry | None, evictable: Evictable,
              aside: list[tuple[float, int, CacheEntry]]) -> tuple[float, CacheEntry] | None:
        """``(value, copy)`` of the least valuable evictable copy not ``taken`` and not ``exclude``
        of the first of ``segs`` that has any: of all of probation's (``_heap_min``), of the
        ``sample`` oldest of protected's or the window's. ``scans`` carries each segment's walk
        from one pick to the next within one ``select_victims``: a copy's value is computed once
        per selection, not once per victim."""
        for seg in segs:
            if seg == _PROB:
                best = self._heap_min(taken, exclude, evictable, aside)
                if best is not None:
                    return best
                continue
            scan = scans.get(seg)
            if scan is None:
                scan = scans[seg] = _Scan(self, self._segs[seg])
            best = scan.best(sample, taken, exclude, evictable)
            if best is not None:
                return best
        return None

    def _demote_window(self) -> None:
        """Move the window's oldest copies to probation, as admission candidates, while the window
        holds more than its share (the newest copy always stays)."""
        window, cands = self._segs[_WIN], self._candidates
        while self._bytes[_WIN] > self._window_target and len(window) > 1:
            entry = next(iter(window.values()))
            self._move(entry, _PROB)
            entry.slot.cand = True
            if len(cands) == cands.maxlen:
                old = cands[0]
                if old.slot is not None:
                    old.slot.cand = False
            cands.append(entry)

    def select_victims(self, needed_bytes: int, evictable: Evictable) -> list[CacheEntry]:
        self._evicting = True
        victims: list[CacheEntry] = []
        taken: set[int] = set()
        freed = 0
        value = 0.0  # of the victims
        cands = self._candidates
        sample = self.SAMPLE_VARIED if self.sizes_vary() else self.SAMPLE
        aside: list[tuple[float, int, CacheEntry]] = []  # probation copies passed over, heap items
        scans: dict[int, _Scan] = {}  # nothing moves in the segments while victims are chosen
        heap = self._heap  # (_compact replaces it, but only when a copy moves or leaves)
        while freed < needed_bytes:
            cand = None
            while cands:  # the oldest candidate still waiting in probation
                c = cands.popleft()
                if c.slot is not None and c.slot.cand and c.slot.seg == _PROB and id(c) not in taken:
                    c.slot.cand = False
                    cand = c
                    break
            if cand is not None:
                cand_value = self.value(cand)
                lost = False
                while freed < needed_bytes:
                    rival = self._pick(scans, (_PROB, _PROT), sample, taken, cand, evictable, aside)  # not itself
                    if rival is None:
                        break
                    if cand_value > rival[0]:
                        if heap and heap[0][2] is rival[1]:
                            heappop(heap)  # its item: the ledger removes the copy (not set aside and back)
                        taken.add(id(rival[1]))
                        victims.append(rival[1])
                        freed += rival[1].size_bytes
                        value += rival[0]
                    else:
                        lost = True
                        break
                if lost and evictable(cand):
                    taken.add(id(cand))
                    victims.append(cand)
                    freed += cand.size_bytes
                    value += cand_value
                    self.refused += 1
                continue
            best = self._pick(scans, (_PROB, _PROT, _WIN), sample, taken, None, evictable, aside)
            if best is None:
                break
            if heap and heap[0][2] is best[1]:
                heappop(heap)
            taken.add(id(best[1]))
            victims.append(best[1])
            freed += best[1].size_bytes
            value += best[0]
        self.evicted_value += value
        if aside:
            for item in aside:
                heappush(heap, item)  # stale once the ledger removes the victims among them
        return victims

    def next_victim_value(self) -> float | None:
        """The value (``f * cost / size``) of the copy main would evict first (else the window's):
        probation's least valuable as queued, else the oldest loaded copy of protected, then of the
        window."""
        heap = self._heap
        while heap and (heap[0][2].slot is None or heap[0][2].slot.item is not heap[0]):
            heappop(heap)  # copies that left probation
        for _, _, entry in heap[:1]:
            if entry.state is _LOADED:
                return self.value(entry)
        for seg in (_PROB, _PROT, _WIN):
            for entry in self._segs[seg].values():
                if entry.state is CopyState.LOADED:
                    return self.value(entry)
        return None

    def stats(self) -> dict[str, float]:
        return {
            "evicted_value": self.evicted_value,
            "window_fraction": self._window_target / self.capacity,
            "lru_shadow_hits": float(self.shadow_hits),
            "lru_shadow_wins": float(self.lru_wins),
        }

    def state_bytes(self) -> int:
        """An estimate of the policy's own memory: the sketch, per copy an ordered-dict entry
        (~100 bytes) and a slot (~70 bytes), per model in the LRU shadow an entry (~100 bytes)."""
        return self._sketch.state_bytes() + 170 * self._copies + 100 * len(self._shadow)


class _Scan:
    """One segment's walk from its oldest copy during one ``select_victims``: the copies it passed
    that are still eligible, in age order, with their values (the pool); the rest of the walk."""

    __slots__ = ("it", "policy", "pool", "taken")

    def __init__(self, policy: AdaptivePolicy, seg: OrderedDict[ModelId, CacheEntry]) -> None:
        self.policy = policy
        self.it: Iterator[CacheEntry] | None = iter(seg.values())
        self.pool: list[tuple[float, CacheEntry]] = []
        self.taken = 0  # how many were taken when the pool was last cleared of them

    def best(self, sample: int, taken: set[int], exclude: CacheEntry | None,
             evictable: Evictable) -> tuple[float, CacheEntry] | None:
        """The least valuable of the ``sample`` oldest evictable copies not taken, not ``exclude``
        (the oldest on a tie): exactly what a walk from the segment's oldest copy would find."""
        pool = self.pool
        if len(taken) != self.taken:
            pool[:] = [p for p in pool if id(p[1]) not in taken]
            self.taken = len(taken)
        n = len(pool)
        if exclude is not None:
            n -= any(e is exclude for _, e in pool)
        it = self.it
        if n < sample and it is not None:
            value = self.policy.value
            while n < sample:
                entry = next(it, None)
                if entry is None:
                    self.it = None
                    break
                if id(entry) in taken or not evictable(entry):
                    continue
                pool.append((value(entry), entry))
                n += entry is not exclude
        best: tuple[float, CacheEntry] | None = None
        seen = 0
        for item in pool:
            if item[1] is exclude:
                continue
            if best is None or item[0] < best[0]:
                best = item
            seen += 1
            if seen >= sample:
                break
        return best


POLICY_NAMES = ("lru", "adaptive")


def make_policy(name: str, capacity_bytes: int) -> TrackingPolicy:
    """The eviction policy called ``name`` ("lru" or "adaptive") for a cache of ``capacity_bytes``."""
    key = (name or "").strip().lower()
    if key == "lru":
        return LruPolicy()
    if key == "adaptive":
        return AdaptivePolicy(capacity_bytes)
    raise ValueError(f"unknown eviction policy '{name}': expected one of {', '.join(POLICY_NAMES)}")
