"""Smoke test of ``benchmarks/etcd_store.py``: a tiny real run prints and writes every number."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "etcd_store.py"


def test_tiny_benchmark_run_reports_every_number(tmp_path: Path) -> None:
    out = tmp_path / "etcd.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--ops", "40", "--concurrency", "4", "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    expected = {
        "put_seq_per_s", "get_seq_per_s", "cas_create_seq_per_s", "put_conc_per_s",
        "get_conc_per_s", "range_all_ms", "watch_events_per_s",
    }  # fmt: skip
    assert set(report["results"]) == expected
    assert all(value > 0 for value in report["results"].values())
    assert "put_seq_per_s" in done.stdout and report["ops"] == 40


def test_bad_arguments_are_a_one_line_error() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--ops", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--ops and --concurrency must be at least 1" in done.stderr
    assert "Traceback" not in done.stderr
