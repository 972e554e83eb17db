"""Smoke test of the density benchmark: a ``--quick`` run end to end, and its pure helpers.

Not under ``tests/`` (the benchmark is not part of the product, and it needs ``wrk``); run it by hand
with ``python -m pytest benchmarks/test_density.py`` (about a minute). The run starts the same real
processes as a full one (etcd, two instances, wrk) with every count divided by 10, then the test
checks the JSON report and that no process of the run is left behind. The targets themselves are
not asserted: a shared 2-core machine may miss the latency one; the report says PASS/FAIL.
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

import density_report  # noqa: E402
from density_clients import answered_by  # noqa: E402
from density_mesh import model_id, rss_bytes, write_model_files  # noqa: E402


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


@pytest.mark.timeout(400)
def test_quick_run_reports_every_phase_and_leaves_no_process(tmp_path: Path) -> None:
    out = tmp_path / "density.json"
    work = tmp_path / "work"
    work.mkdir()
    run = subprocess.run([sys.executable, str(HERE / "density.py"), "--quick", "--json", str(out)],
                         capture_output=True, text=True, timeout=360, env={**os.environ, "TMPDIR": str(work)})
    assert run.returncode == 0, run.stdout + run.stderr
    doc = json.loads(out.read_text())
    assert doc["config"]["registered"] == 10_000 and doc["config"]["loaded"] == 2_000
    ph = doc["phases"]
    assert set(ph) == {"generator_check", "register", "load", "open_loop", "closed_loop"}
    for name, phase in ph.items():
        assert phase["errors"] == 0, (name, phase)
        assert phase["calls"] > 0 and phase["rate"] > 0, (name, phase)
    assert ph["register"]["calls"] == 10_000 - ph["register"]["warmup"]
    assert ph["load"]["calls"] == 2_000 and ph["load"]["copies"] == 2_000
    assert sum(ph["load"]["split"].values()) == 2_000 and set(ph["load"]["split"]) == {"i0", "i1"}
    # The open loop offered 100 req/s for the scheduled part of the phase and kept to it.
    assert ph["open_loop"]["offered_rps"] == 100
    assert 80 <= ph["open_loop"]["rate"] <= 120, ph["open_loop"]
    assert 0 < ph["open_loop"]["p50_ms"] <= ph["open_loop"]["p99_ms"]
    assert ph["generator_check"]["generator_requests_per_cpu_s"] > 1000
    for name in ("i0", "i1"):
        m = doc["memory"][name]
        assert m["after_register"] > m["start"] > 0
        assert m["bytes_per_registered_model"] > 0
    names = [c["name"] for c in doc["checks"]]
    assert any(n.startswith("p99 latency") for n in names) and "registrations/s" in names
    assert doc["pass"] == all(c["ok"] for c in doc["checks"])
    assert "PASS" in run.stdout or "FAIL" in run.stdout
    assert _processes_mentioning(str(work)) == []  # etcd data dir, instance logs: all under work/
    assert list(work.iterdir()) == []


def test_model_files_name_their_model(tmp_path: Path) -> None:
    paths = write_model_files(tmp_path / "m", 3)
    assert [p.read_text() for p in paths] == ["d000000", "d000001", "d000002"]
    assert model_id(42) == "d000042"
    # What the runtime reports for one file: 2048 + len(text) (the string model's fixed size).
    assert density_report.TARGET_BYTES_PER_MODEL == 2048


def test_answered_by_checks_the_model_prefix() -> None:
    body = json.dumps({"outputs": [{"name": "output-0", "datatype": "BYTES", "shape": [1],
                                    "data": ["d000007x"]}]}).encode()
    assert answered_by("d000007", body)
    assert not answered_by("d000008", body)
    assert not answered_by("d000007", b"not json")


def test_rss_of_this_process_is_read_from_proc() -> None:
    assert 1 << 20 < rss_bytes(os.getpid()) < 64 << 30


def test_verdicts_follow_the_targets() -> None:
    r = density_report.Report(config={"registered": 10, "loaded": 2, "instances": 2, "rate": 10, "connections": 2})
    r.phases = {"register": {"rate": 1500.0, "errors": 0},
                "open_loop": {"offered_rps": 10.0, "p99_ms": 12.0, "errors": 0}}
    r.memory = {"i0": {"bytes_per_registered_model": 900.0}, "i1": {"bytes_per_registered_model": 2100.0},
                "etcd": {"bytes_per_registered_model": 5000.0}}
    r.judge()
    verdicts = {c.name.split(" ")[0]: c.ok for c in r.checks}
    assert verdicts == {"p99": False, "instance": False, "registrations/s": True, "failed": True}
    assert r.checks[1].value == 2100.0  # the worst instance; etcd is not an instance
    assert not r.passed and r.to_json()["pass"] is False
