"""What the commands print: the consoles, one-line errors, output formats, human sizes and ages."""

from __future__ import annotations

import enum
import json
import sys
import time
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

# Piped output (scripts, CI logs) gets wide lines instead of rich's 80-column default.
console = Console() if sys.stdout.isatty() else Console(width=200)
err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=200)


def fail(message: str, code: int = 1) -> None:
    """One red line on stderr (``error: ...``, server text never read as rich markup), then exit."""
    err_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


class Output(str, enum.Enum):
    """``-o``: how a command prints what it read (an unknown value is refused by the parser)."""

    table = "table"
    json = "json"
    yaml = "yaml"


def output_option(help: str = "Output format.") -> Any:
    return typer.Option(Output.table, "-o", "--output", help=help, case_sensitive=False)


def print_data(data: Any, output: Output) -> None:
    """``data`` as JSON or YAML on stdout (plain, never wrapped: for scripts and pipes)."""
    if output is Output.json:
        print(json.dumps(data, indent=2))
    else:
        import yaml

        print(yaml.safe_dump(data, sort_keys=False).rstrip())


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def ago(ms: int, never: str = "-") -> str:
    """How long ago the epoch-milliseconds ``ms`` was; ``never`` for 0."""
    if not ms:
        return never
    secs = max(0, time.time() - ms / 1000)
    if secs < 120:
        return f"{secs:.0f}s ago"
    if secs < 7200:
        return f"{secs / 60:.0f}m ago"
    return f"{secs / 3600:.1f}h ago"
