"""How the client commands reach a mesh: its URL, and the token and TLS options on each of them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer

from kserve_mesh.cli.output import fail

DEFAULT_URL = os.environ.get("KSERVE_MESH_URL", "http://127.0.0.1:8008")
URL_OPTION = typer.Option(DEFAULT_URL, "--url", help="REST address of the mesh (env KSERVE_MESH_URL).")


CONNECTION_FLAGS = {
    "token": (Optional[str], typer.Option(None, "--token", envvar="KSERVE_MESH_TOKEN", show_envvar=True,
                                          help="Bearer token (a role of the mesh's auth file).", show_default=False)),
    "ca_cert": (Optional[Path], typer.Option(None, "--ca-cert", envvar="KSERVE_MESH_CA_CERT", show_envvar=True,
                                             help="PEM CA bundle an https:// mesh's certificate is checked against.",
                                             show_default=False)),
    "client_cert": (Optional[Path], typer.Option(None, "--client-cert", envvar="KSERVE_MESH_CLIENT_CERT",
                                                 show_envvar=True, show_default=False,
                                                 help="PEM client certificate (a mesh that requires mTLS).")),
    "client_key": (Optional[Path], typer.Option(None, "--client-key", envvar="KSERVE_MESH_CLIENT_KEY",
                                                show_envvar=True, show_default=False,
                                                help="PEM key of --client-cert (if not in the same file).")),
}
_CONNECTION: dict[str, Any] = {}


def with_connection_flags(fn: Any) -> Any:
    """Give a client command the CONNECTION_FLAGS; ``connect`` uses what it was given."""
    import functools
    import inspect

    sig = inspect.signature(fn)
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
             for name, (kind, option) in CONNECTION_FLAGS.items()]

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        for name in CONNECTION_FLAGS:
            value = kwargs.pop(name, None)
            _CONNECTION[name] = "" if value is None else str(value)
        return fn(*args, **kwargs)

    command.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *extra])  # type: ignore[attr-defined]
    return command


def connect(url: str):  # type: ignore[no-untyped-def]
    from kserve_mesh.client import MeshClient, MeshClientError

    try:
        return MeshClient(url, **_CONNECTION)
    except MeshClientError as exc:
        fail(exc.message)


def call(fn, *args: Any, **kwargs: Any) -> Any:  # type: ignore[no-untyped-def]
    from kserve_mesh.client import MeshClientError

    try:
        return fn(*args, **kwargs)
    except MeshClientError as exc:
        fail(exc.message)
