"""Helpers for tests that run a command as a child process and read what it prints: the next line
it prints (bounded), stopping it, and whether a pid still lives (used by the MLServer and Triton
adapter tests)."""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from pathlib import Path


def readline(proc: subprocess.Popen[str], timeout: float, what: str) -> str:
    """The next stdout line of ``proc``, within ``timeout`` seconds."""
    assert proc.stdout is not None
    end = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        left = end - time.monotonic()
        if left <= 0 or not sel.select(left):
            raise AssertionError(f"{what} printed nothing within {timeout} s")
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"{what} exited with status {proc.wait(5)} before printing a line")
        return line.strip()


def stop(proc: subprocess.Popen[str], grace: float = 30.0) -> int:
    """SIGTERM, wait, SIGKILL if needed; closes its pipes; returns the exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return proc.returncode


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie is dead for our purpose)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False
