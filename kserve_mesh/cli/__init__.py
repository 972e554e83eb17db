"""The ``kserve-mesh`` command line.

    kserve-mesh up          a mesh serving the example models (or --models DIR), from any folder
    kserve-mesh instance    one instance, configured by flags / KSERVE_MESH_* variables
    kserve-mesh runtime     the built-in runtime as its own process (ModelRuntime + V2 gRPC)
    kserve-mesh register | unregister | models | infer | status | vmodel   talk to a running mesh
    kserve-mesh digest | token create | apply | get | delete

The parts: ``serving`` (``up`` and ``instance``), ``serve_flags`` (the serving commands' security
options and settings), ``example_models`` (the models ``up`` serves by default), ``connection``
(how the client commands reach a mesh), ``client_commands`` (the commands that talk to a running
mesh), ``auth_tokens`` (``token create``), ``argparse_help`` (``runtime``/``controller --help``),
``output`` (consoles, one-line errors, ``-o``); the KServe resource commands are
``kserve_mesh.cli_kube``. This module makes the app and registers every command, in the order
``--help`` lists them. No command prints a traceback: an unexpected error is one red line too
(``KSERVE_MESH_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import os

import typer

from kserve_mesh.cli import client_commands as remote
from kserve_mesh.cli.auth_tokens import token_create
from kserve_mesh.cli.output import err_console, fail
from kserve_mesh.cli.serving import instance, up

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="kserve-mesh: a multi-model serving mesh for KServe.")
vmodel_app = typer.Typer(no_args_is_help=True, help="Manage vmodels (stable names that move between models).")
app.add_typer(vmodel_app, name="vmodel")
token_app = typer.Typer(no_args_is_help=True, help="Make bearer tokens for a mesh's auth file (--auth-file).")
app.add_typer(token_app, name="token")
PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def _version(value: bool) -> None:
    if value:
        from kserve_mesh import __version__

        print(f"kserve-mesh {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """kserve-mesh: a multi-model serving mesh for KServe."""


app.command()(up)
app.command()(instance)


@app.command(context_settings=PASSTHROUGH)
def runtime(ctx: typer.Context) -> None:
    """Run the built-in runtime as its own process (ModelRuntime SPI + V2 gRPC; see --help)."""
    from kserve_mesh.runtime.server import main as runtime_main
    from kserve_mesh.runtime.server import parser

    if any(a in ("-h", "--help") for a in ctx.args):
        from kserve_mesh.cli.argparse_help import print_help
        from kserve_mesh.cli.output import console

        print_help(parser(), console)
        raise typer.Exit()
    raise typer.Exit(runtime_main(list(ctx.args)) or 0)


# the commands that talk to a running mesh (client_commands), between runtime and controller
app.command()(remote.register)
app.command()(remote.unregister)
app.command()(remote.models)
app.command()(remote.infer)
app.command()(remote.status)


@app.command(context_settings=PASSTHROUGH)
def controller(ctx: typer.Context) -> None:
    """Run the Kubernetes controller (KServe resources to mesh registrations; see --help)."""
    if any(a in ("-h", "--help") for a in ctx.args):
        from kserve_mesh.cli.argparse_help import print_help
        from kserve_mesh.cli.output import console
        from kserve_mesh.kube.controller.main import parser

        print_help(parser(), console)
        raise typer.Exit()
    from kserve_mesh.kube import controller_main

    raise typer.Exit(controller_main(list(ctx.args)) or 0)


app.command()(remote.digest)
vmodel_app.command("set")(remote.vmodel_set)
vmodel_app.command("get")(remote.vmodel_get)
vmodel_app.command("delete")(remote.vmodel_delete)
token_app.command("create")(token_create)


def main() -> None:
    from kserve_mesh.cli_kube import register_commands

    register_commands(app)
    try:
        app(prog_name="kserve-mesh")
    except SystemExit:
        raise
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/red]")
        raise SystemExit(130) from None
    except Exception as exc:  # never a traceback: one line, and how to see more
        if os.environ.get("KSERVE_MESH_DEBUG"):
            raise
        try:
            fail(f"{type(exc).__name__}: {exc} (KSERVE_MESH_DEBUG=1 shows the traceback)")
        except typer.Exit as done:
            raise SystemExit(done.exit_code) from None
