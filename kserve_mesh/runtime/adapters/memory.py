"""Resident memory of another process and its descendants, read from ``/proc`` (no psutil).

An adapter charges a load with the growth of its server's whole process tree's RSS: MLServer loads
models in its main process (``parallel_workers: 0``) or in worker processes it forks, Triton's
Python backend runs each model instance in a stub process. Summing RSS counts pages shared between
parent and forked workers more than once, which over-reports; that errs on the safe side for a
cache that must not overfill its container.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")


def rss_bytes(pid: int) -> int | None:
    """``VmRSS`` of one process, or None when it is gone or unreadable."""
    try:
        with open(_PROC / str(pid) / "status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    parts = line.split()
                    return int(parts[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children, grandchildren, ...), from ``/proc/*/stat``."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir(_PROC)
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(_PROC / name / "stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
        rest = stat[stat.rfind(b")") + 2:].split()
        if len(rest) > 1:
            children.setdefault(int(rest[1]), []).append(int(name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), ()):
            found.append(child)
            stack.append(child)
    return found


def tree_rss_bytes(pid: int) -> int | None:
    """RSS of ``pid`` plus all its descendants; None when ``pid`` itself cannot be read."""
    own = rss_bytes(pid)
    if own is None:
        return None
    return own + sum(rss_bytes(child) or 0 for child in descendants(pid))
