"""What the commands print: the consoles, one-line errors, human sizes and ages."""

from __future__ import annotations

import sys
import time

import typer
from rich.console import Console
from rich.markup import escape

# Piped output (scripts, CI logs) gets wide lines instead of rich's 80-column default.
console = Console() if sys.stdout.isatty() else Console(width=200)
err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=200)


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[red]error:[/red] {escape(message)}")  # server text is never rich markup
    raise typer.Exit(code)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def ago(ms: int) -> str:
    if not ms:
        return "-"
    secs = max(0, time.time() - ms / 1000)
    if secs < 120:
        return f"{secs:.0f}s ago"
    if secs < 7200:
        return f"{secs / 60:.0f}m ago"
    return f"{secs / 3600:.1f}h ago"
