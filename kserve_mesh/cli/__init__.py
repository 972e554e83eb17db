"""The ``kserve-mesh`` command line.

    kserve-mesh up          one instance serving the example models (the embedded default)
    kserve-mesh instance    one instance, configured by flags / KSERVE_MESH_* variables
    kserve-mesh runtime     the built-in runtime as its own process (ModelRuntime + V2 gRPC)
    kserve-mesh register | unregister | models | infer | status | vmodel   talk to a running mesh
    kserve-mesh digest | token create | apply | get | delete

The parts: ``serve_flags`` (the serving commands' options and settings), ``connection`` (how the
client commands reach a mesh), ``client_commands`` (the commands that talk to a running mesh),
``auth_tokens`` (``token create``), ``output`` (consoles and one-line errors); the KServe resource
commands are ``kserve_mesh.cli_kube``. This module makes the app, holds the serving commands and
registers every command, in the order ``--help`` lists them.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from kserve_mesh.cli import client_commands as remote
from kserve_mesh.cli.auth_tokens import token_create
from kserve_mesh.cli.output import console, fail
from kserve_mesh.cli.serve_flags import mesh_settings, security_args, security_kwargs, with_security_flags

app = typer.Typer(add_completion=False, no_args_is_help=True, help="kserve-mesh: a multi-model serving mesh for KServe.")
vmodel_app = typer.Typer(no_args_is_help=True, help="Manage vmodels (stable names that move between models).")
app.add_typer(vmodel_app, name="vmodel")
token_app = typer.Typer(no_args_is_help=True, help="Make bearer tokens for a mesh's auth file (--auth-file).")
app.add_typer(token_app, name="token")
EXAMPLES_DIR = Path("examples/models")


def _serve(settings, load_with_progress: bool) -> None:  # type: ignore[no-untyped-def]
    from kserve_mesh.server import MeshServer

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def show_loading(server: MeshServer) -> None:
        instance = server.instance
        assert instance is not None
        ids = sorted(instance.registry.models)
        console.print(f"[green]serving {len(ids)} models[/green] (loaded on first request)")
        if not load_with_progress or not ids:
            return
        with Progress(SpinnerColumn(), TextColumn("loading models"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=False) as progress:
            task = progress.add_task("load", total=len(ids))
            deadline = time.monotonic() + instance.cache.config.load_timeout_s * len(ids)
            while time.monotonic() < deadline:
                done = sum(1 for m in ids if instance.model_status(m).state.name in ("LOADED", "LOADING_FAILED"))
                progress.update(task, completed=done)
                if done == len(ids):
                    break
                await asyncio.sleep(0.1)

    try:
        asyncio.run(MeshServer(settings).run(on_ready=show_loading))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # noqa: BLE001 - a start-up failure is a message, not a traceback
        from kserve_mesh.core.errors import MeshError

        if isinstance(exc, (MeshError, OSError)):
            fail(str(exc))
        raise


def _ensure_examples(models_dir: Path) -> None:
    script = Path("examples/make_models.py")
    if models_dir.exists() or models_dir.resolve() != EXAMPLES_DIR.resolve() or not script.exists():
        if not models_dir.exists():
            fail(f"models folder {models_dir} does not exist")
        return
    with console.status("making the example models (examples/make_models.py)"):
        result = subprocess.run([sys.executable, str(script), str(models_dir)], capture_output=True, text=True)
    if result.returncode != 0:
        fail(f"examples/make_models.py failed:\n{result.stderr}")


@app.command()
@with_security_flags
def up(
    models: Path = typer.Option(EXAMPLES_DIR, "--models", help="Folder of models to register (one per file or sub-folder)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    rest_port: int = typer.Option(8008, help="V2 REST + management REST port."),
    grpc_port: int = typer.Option(8033, help="V2 gRPC + ModelMesh management gRPC port."),
    metrics_port: int = typer.Option(2112, help="Prometheus metrics port."),
    capacity: Optional[int] = typer.Option(None, "--capacity-bytes", help="Model cache capacity in bytes."),
    runtime: str = typer.Option("inprocess", help="inprocess | process (built-in runtime as a child process)."),
    load: bool = typer.Option(False, "--load", help="Load every model now (with a progress bar) instead of on first use."),
    storage_config: Optional[Path] = typer.Option(None, help="storage-config folder or JSON/YAML file."),
    instances: int = typer.Option(1, "--instances", min=1, help="Start etcd and this many instances, each "
                                  "with its runtime process (ports: base + i)."),
    **flags: Any,
) -> None:
    """Start a mesh serving the example models: one instance (in-memory store, built-in runtime in
    process) or, with --instances N, etcd and N instances with their runtime processes."""
    _ensure_examples(models)
    if instances > 1:
        from kserve_mesh.local_cluster import run as run_cluster

        raise typer.Exit(run_cluster(instances, host=host, rest_port=rest_port, grpc_port=grpc_port,
                                     metrics_port=metrics_port, models=models, capacity=capacity,
                                     runtime="process" if runtime == "inprocess" else runtime,
                                     storage_config=storage_config, console=console,
                                     extra_args=security_args(flags)))
    settings = mesh_settings(host=host, rest_port=rest_port, grpc_port=grpc_port, metrics_port=metrics_port,
                             capacity_bytes=capacity, runtime=runtime, models_dir=models, load_models_at_start=load,
                             storage_config=storage_config, **security_kwargs(flags))
    _serve(settings, load)


@app.command()
@with_security_flags
def instance(
    models: Optional[Path] = typer.Option(None, "--models", help="Folder of models to register at start."),
    host: Optional[str] = typer.Option(None), rest_port: Optional[int] = typer.Option(None),
    grpc_port: Optional[int] = typer.Option(None), metrics_port: Optional[int] = typer.Option(None),
    advertise_host: Optional[str] = typer.Option(None, help="Address peers reach this instance at (default: "
                                                 "--host, or this machine's address for 0.0.0.0)."),
    capacity: Optional[int] = typer.Option(None, "--capacity-bytes"),
    runtime: Optional[str] = typer.Option(None, help="inprocess | process | remote"),
    runtime_address: Optional[str] = typer.Option(None, help="host:port of a ModelRuntime (runtime=remote)."),
    max_loading_concurrency: Optional[int] = typer.Option(None),
    storage_config: Optional[Path] = typer.Option(None),
    etcd_endpoints: Optional[str] = typer.Option(None, help="etcd client URLs: join a mesh of several instances."),
    instance_id: Optional[str] = typer.Option(None, help="Id of this instance (default: host name and pid)."),
    namespace: Optional[str] = typer.Option(None, help="Store root (one per Kubernetes namespace)."),
    shutdown_grace: Optional[float] = typer.Option(None, "--shutdown-grace-s", help="SIGTERM drain time."),
    scaleup_rpm: Optional[int] = typer.Option(None, "--scaleup-rpm-threshold", help="rpm per copy that adds copies."),
    rate_check: Optional[float] = typer.Option(None, "--rate-check-s", help="Seconds between copy-rate checks."),
    scale_down: Optional[float] = typer.Option(None, "--scale-down-s", help="Seconds between scale-down checks."),
    **flags: Any,
) -> None:
    """Start one mesh instance configured by flags and KSERVE_MESH_* environment variables."""
    settings = mesh_settings(host=host, rest_port=rest_port, grpc_port=grpc_port, metrics_port=metrics_port,
                             advertise_host=advertise_host, capacity_bytes=capacity, runtime=runtime,
                             runtime_address=runtime_address, models_dir=models,
                             max_loading_concurrency=max_loading_concurrency, storage_config=storage_config,
                             etcd_endpoints=etcd_endpoints, instance_id=instance_id, namespace=namespace,
                             shutdown_grace_s=shutdown_grace, scaleup_rpm_threshold=scaleup_rpm,
                             rate_check_s=rate_check, scale_down_s=scale_down, **security_kwargs(flags))
    _serve(settings, False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def runtime(ctx: typer.Context) -> None:
    """Run the built-in runtime as its own process (flags: see `kserve-mesh runtime --help`)."""
    from kserve_mesh.runtime.server import main as runtime_main

    raise typer.Exit(runtime_main(list(ctx.args)) or 0)


# the commands that talk to a running mesh (client_commands), between runtime and controller
app.command()(remote.register)
app.command()(remote.unregister)
app.command()(remote.models)
app.command()(remote.infer)
app.command()(remote.status)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def controller(ctx: typer.Context) -> None:
    """Run the Kubernetes controller (flags: see `kserve-mesh controller --help`)."""
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
    app()

