"""A small simulator run in CI (issue 12): the adaptive policy is never below LRU on its cells.

CI has no ``tools/cachesim.py`` (it lives outside the repository), so this runs the policy through
``benchmarks/cache_sim.py``'s own pieces: its ``LedgerAdapter`` (the real ledger and core policy,
driven as the cache manager drives them, never bypassing) and its ``replay`` loop (cachesim's
metrics and checks: capacity never exceeded, the resident set agrees), over small Zipf 0.8 / 1.0
and shifting traces, equal and lognormal sizes, 5 / 10 / 20 % capacity (18 cells). In every cell
the adaptive policy must match or beat LRU on hit ratio, byte-miss ratio and total load time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.example_models import load_script

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "cache_sim.py"
M, N = 400, 12_000


sim = load_script("cache_sim_ci", SCRIPT)
TRACES = {
    "zipf0.8": sim.zipf_trace(M, N, 0.8, 1),
    "zipf1.0": sim.zipf_trace(M, N, 1.0, 2),
    "shift": sim.shift_trace(M, N, 1.0, 3),
}
SIZES = {"equal": [sim.MB] * M, "lognormal": sim.lognormal_sizes(M, 4)}


@pytest.mark.parametrize("cap", [0.05, 0.10, 0.20])
@pytest.mark.parametrize("kind", ["equal", "lognormal"])
@pytest.mark.parametrize("trace", list(TRACES))
def test_adaptive_is_never_below_lru(trace: str, kind: str, cap: float) -> None:
    sizes = SIZES[kind]
    capacity = int(cap * sum(sizes))
    mine = sim.replay(TRACES[trace], sizes, capacity, sim.LedgerAdapter("adaptive"))
    lru = sim.replay(TRACES[trace], sizes, capacity, sim.LedgerAdapter("lru"))
    assert mine["hit_ratio"] >= lru["hit_ratio"], (mine, lru)
    assert mine["byte_miss"] <= lru["byte_miss"], (mine, lru)
    assert mine["load_time_s"] <= lru["load_time_s"], (mine, lru)


def test_the_replay_catches_a_policy_that_overfills() -> None:
    class Overfill(sim.LedgerAdapter):
        def on_miss(self, key, size, t):  # type: ignore[no-untyped-def]
            return True, []  # admits everything, evicts nothing

    with pytest.raises(AssertionError, match="exceeded capacity"):
        sim.replay(TRACES["zipf1.0"], SIZES["equal"], 10 * sim.MB, Overfill("lru"))


def test_a_missing_simulator_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="does not exist; give its path with --cachesim"):
        sim.load_cachesim(tmp_path / "nowhere" / "cachesim.py")
