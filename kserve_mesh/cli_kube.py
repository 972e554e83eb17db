"""``kserve-mesh apply | get | delete``: KServe resources against a running mesh (filled in by the
KServe integration)."""

from __future__ import annotations

import typer


def register_commands(app: typer.Typer) -> None:
    """Add the KServe resource commands to the main CLI."""
