"""``--help`` of the commands whose flags an argparse parser reads (``runtime``, ``controller``: their
processes also start without this CLI), drawn in the style of the typer commands: usage, the
description, and the options in a panel, each with its help and default."""

from __future__ import annotations

import argparse

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

HELP_FLAGS = ("-h", "--help")


def _default(action: argparse.Action) -> str:
    if action.default in (None, "", [], False, argparse.SUPPRESS) or action.nargs == 0:
        return ""
    if "%(default)" in (action.help or ""):
        return ""  # the help says it already
    return f" [default: {action.default}]"


def _row(action: argparse.Action) -> tuple[str, str, str]:
    names = ", ".join(action.option_strings) or action.dest
    metavar = "" if action.nargs == 0 else (action.metavar or action.dest.upper())
    text = (action.help or "") % {"default": action.default} if action.help else ""
    return names, str(metavar), text + _default(action)


def print_help(parser: argparse.ArgumentParser, console: Console) -> None:
    """``parser``'s help, rich: one panel per argument group with options in it."""
    console.print(f"\n [bold]Usage:[/bold] {escape(parser.prog)} [OPTIONS]\n")
    if parser.description:
        console.print(f" {escape(parser.description)}\n")
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        table = Table.grid(padding=(0, 1), expand=False)
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column(style="bold yellow", no_wrap=True)
        table.add_column()
        for action in actions:
            names, metavar, text = _row(action)
            table.add_row(names, metavar, Text(text))
        title = "Options" if group.title in ("options", "optional arguments") else (group.title or "Options")
        console.print(Panel(Group(table), title=title, title_align="left", border_style="dim"))
    console.print(Panel(Text("-h, --help  Show this message and exit."), title="Help", title_align="left",
                        border_style="dim"))
