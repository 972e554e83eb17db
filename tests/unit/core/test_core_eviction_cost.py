"""``benchmarks/cache_policy_cost.py`` separates the policy's own cost from the ledger's (issue 12).

The benchmark replays each policy's recorded victims through the same ledger with a policy that
does nothing else; the difference of the two runs' times is the policy's own cost. That only holds
if the replay does exactly the ledger work of the run it stands for: the same hits, the same
misses, the same victims in the same order. Checked here on a small run, for both policies.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.example_models import load_script

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "cache_policy_cost.py"


cost = load_script("cache_policy_cost_ci", SCRIPT)


@pytest.mark.parametrize("name", ["lru", "adaptive"])
def test_the_replay_makes_the_policys_choices_and_only_those(name: str) -> None:
    ids, sizes, trace = cost.workload(3_000, 8_000, 5)
    run = cost.measure(name, ids, sizes, trace, 600)
    assert run["decisions"] and any(len(d) > 1 for d in run["decisions"])  # evictions, some of several copies
    again = cost.measure(name, ids, sizes, trace, 600, replay=run["decisions"])
    assert again["decisions"] == run["decisions"]
    assert (again["hit_ratio"], again["loaded"]) == (run["hit_ratio"], run["loaded"])
    row = cost.own_cost(name, ids, sizes, trace, 600, rounds=1)
    assert row["own_us_per_request"] == pytest.approx(row["us_per_request"] - row["ledger_us_per_request"])
    assert row["ledger_us_per_request"] > 0


def test_a_replay_that_runs_out_of_choices_is_a_bug_not_a_number() -> None:
    ids, sizes, trace = cost.workload(3_000, 8_000, 5)
    run = cost.measure("adaptive", ids, sizes, trace, 600)
    with pytest.raises(StopIteration):
        cost.measure("adaptive", ids, sizes, trace, 600, replay=run["decisions"][:-1])
