"""Smoke test of ``benchmarks/cache_replay.py --quick`` (issue 12): LRU and the adaptive policy side
by side on two live single-instance meshes (real ``kserve-mesh instance`` processes, each with a real
runtime server whose loads take each model's time), replaying a Zipf 1.0 trace over 150 string
models with room for 5 % of their bytes. Every request must succeed, capacity must hold at every
observation, and on this skewed trace the adaptive policy must load less than LRU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "cache_replay.py"


def test_quick_replay_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "replay.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--traces", "zipf", "--json", str(out), "--workdir", str(tmp_path)],
        check=False, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {r["policy"]: r for r in report["results"]}
    assert set(rows) == {"lru", "adaptive"}
    for r in rows.values():
        assert r["requests"] == 300 and r["failed"] == 0, r["first_failures"]
        assert r["observations"] >= 5 and r["over_capacity"] == [] and 0 < r["max_used_fraction"] <= 1.0
        assert r["loads"] > 0 and r["bytes_loaded"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0
        assert r["load_s"] > 0.001 * r["loads"]  # each load waited out its model's delay (5 ms x 0.25 at least)
        assert r["stop_rc"] == [0] and len(r["stop_s"]) == 1, r  # SIGTERM: the instance exited by itself
    assert (tmp_path / "models").is_dir() and list(tmp_path.glob("instance-*.log"))  # --workdir kept them
    assert rows["adaptive"]["loads"] < rows["lru"]["loads"], rows
    assert "| single | zipf | adaptive |" in done.stdout


def test_bad_arguments_are_a_clear_error() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--traces", "bursty"], check=False, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown trace 'bursty'" in done.stderr
