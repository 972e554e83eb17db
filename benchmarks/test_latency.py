"""Smoke test of the latency benchmark: a tiny real run end to end, and its helpers.

Not under ``tests/`` (the benchmark is not part of the product); run it with
``python -m pytest benchmarks/test_latency.py``. It starts the same real processes as a full run
(runtime process, two meshes, load generators) with a few requests each, then checks the JSON
report and that no process of the run is left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import latency  # noqa: E402


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


@pytest.mark.timeout(240)
def test_tiny_run_reports_every_target_and_leaves_no_process(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    work = tmp_path / "work"
    work.mkdir()
    run = subprocess.run(
        [sys.executable, str(HERE / "latency.py"), "--requests", "40", "--warmup", "5", "--rounds", "2",
         "--concurrency", "2", "--duration", "0.3", "--json", str(out)],
        capture_output=True, text=True, timeout=200, env={**os.environ, "TMPDIR": str(work)},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    doc = json.loads(out.read_text())
    rows = {r["key"]: r for r in doc["results"]}
    assert set(rows) == {"inproc", "a-grpc", "b-grpc", "c-grpc", "b-rest", "c-rest"}
    for row in rows.values():
        assert row["errors"] == 0, row
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["throughput_rps"] > 0
    assert rows["a-grpc"]["samples"] == 40
    assert doc["comparisons"]["b-grpc"]["reference"] == "a-grpc"
    assert doc["comparisons"]["c-rest"]["reference"] == "b-rest"
    target = doc["target"]
    assert target["pass"] == (target["added_p50_ms"] <= 0.3)
    assert len(target["added_p50_ms_per_round"]) == 2
    assert "target: the mesh (b) adds" in run.stdout
    assert _processes_mentioning(str(work)) == []
    # The benchmark's temp dir (models, logs, request files, runtime cache) is gone. The runtime child
    # of mesh (c) makes its own empty cache dir (kserve-mesh-models-*) that it never removes.
    assert [p.name for p in work.iterdir() if not p.name.startswith("kserve-mesh-models-")] == []


def test_scale_entry_repeats_inputs_and_expected_outputs() -> None:
    entry = {"type": "sklearn",
             "request": {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [2, 2],
                                     "data": [1.0, 2.0, 3.0, 4.0]}]},
             "expected": {"outputs": [{"name": "output-0", "datatype": "INT64", "shape": [2], "data": [7, 8]}]}}
    big = latency.scale_entry(entry, 5)
    assert big["request"]["inputs"][0]["shape"] == [5, 2]
    assert big["request"]["inputs"][0]["data"] == [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 1.0, 2.0]
    assert big["expected"]["outputs"][0] == {"name": "output-0", "datatype": "INT64", "shape": [5],
                                             "data": [7, 8, 7, 8, 7]}
    assert entry["request"]["inputs"][0]["shape"] == [2, 2]  # the original is untouched


def test_result_percentiles_and_comparisons() -> None:
    a = latency.Result("a-grpc", "(a)", "gRPC", "inproc", raw_ns=[1_000_000] * 99 + [5_000_000])
    b = latency.Result("b-grpc", "(b)", "gRPC", "a-grpc", raw_ns=[1_200_000] * 100)
    inproc = latency.Result("inproc", "in", "-", "", raw_ns=[100_000] * 100)
    for r, rps in ((a, 1000.0), (b, 900.0), (inproc, 10_000.0)):
        r.summarize()
        r.throughput_rps = rps
    a.round_p50_ms, b.round_p50_ms = [1.0, 1.0], [1.1, 1.3]
    assert a.p50_ms == pytest.approx(1.0) and a.p99_ms > 1.0 and a.samples == 100
    results = {"inproc": inproc, "a-grpc": a, "b-grpc": b}
    cmp = latency.comparisons(results)
    assert cmp["b-grpc"]["added_p50_ms"] == pytest.approx(0.2)
    assert cmp["b-grpc"]["throughput_ratio"] == pytest.approx(0.9)
    assert "inproc" not in cmp
    v = latency.verdict(results)
    assert v["pass"] and v["added_p50_ms"] == pytest.approx(0.2)
    assert v["added_p50_ms_per_round"] == pytest.approx([0.1, 0.3])
