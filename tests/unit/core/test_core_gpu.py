"""The GPU ledger (core/gpu.py): held bytes, lazy pruning, predictions, victims in LRU order."""

from __future__ import annotations

import pytest

from kserve_mesh.core.gpu import GpuLedger


def test_without_a_gpu_nothing_is_enforced() -> None:
    gpu = GpuLedger()
    assert not gpu.enabled and gpu.status == "no GPU"
    assert gpu.summary(set()) == {"status": "no GPU", "capacityBytes": 0, "usedBytes": 0, "models": 0}


def test_held_bytes_are_pruned_when_the_copy_is_gone_and_predictions_stay() -> None:
    gpu = GpuLedger(100, "nvml: 1 device (test)")
    gpu.hold("a", 30)
    gpu.hold("b", 50)
    assert gpu.used_bytes({"a", "b"}) == 80 and gpu.free_bytes({"a", "b"}) == 20
    assert gpu.used_bytes({"b"}) == 50  # a's copy left the cache: it holds nothing any more
    assert gpu.held("a") == 0 and gpu.expected("a") == 30  # but its size is remembered for its next load
    gpu.hold("b", 0)
    assert gpu.used_bytes({"b"}) == 0 and gpu.expected("b") == 50
    gpu.forget("b")
    assert gpu.expected("b") == 0
    with pytest.raises(ValueError, match="'c'"):
        gpu.hold("c", -1)


def test_victims_are_the_least_recently_used_holding_gpu_memory() -> None:
    gpu = GpuLedger(100)
    for model_id, size in (("old", 20), ("cpu-only", 0), ("mid", 30), ("new", 40)):
        gpu.hold(model_id, size)
    candidates = [("new", 300), ("cpu-only", 50), ("mid", 200), ("old", 100)]
    assert gpu.victims(10, candidates) == ["old"]
    assert gpu.victims(25, candidates) == ["old", "mid"]  # cpu-only frees no GPU memory: skipped
    assert gpu.victims(1000, candidates) == ["old", "mid", "new"]  # all there is (not enough)
    assert gpu.victims(0, candidates) == []
