"""The serving commands, ``up`` and ``instance``: their options, the example models ``up`` serves,
the checks before a start (a models folder, free ports), and the run with its logs and progress.

Every option of these commands defaults to None, so that an option not given leaves its setting to
the ``KSERVE_MESH_*`` variable, else the settings' default (``settings.MeshSettings``); the help
shows both.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from kserve_mesh.cli.output import console, err_console, fail
from kserve_mesh.cli.serve_flags import mesh_settings, security_args, security_kwargs, with_security_flags

CLONE_EXAMPLES = Path("examples/models")
_PORT_FLAGS = {"rest_port": "--rest-port", "grpc_port": "--grpc-port", "metrics_port": "--metrics-port"}


def setting_option(field: str, *names: str, help: str = "") -> Any:
    """An option for the setting ``field``: None unless given; its help names the variable and the
    default (from the settings' own description when ``help`` is empty)."""
    from kserve_mesh.settings import MeshSettings

    info = MeshSettings.model_fields[field]
    default = info.default
    shown = "none" if default in (None, "", ()) else default
    text = (help or info.description or "").rstrip(".")
    return typer.Option(None, *names, show_default=False,
                        help=f"{text} (env KSERVE_MESH_{field.upper()}; default {shown}).")


# -- the models `up` serves ------------------------------------------------------------------------
def examples_dir() -> Path:
    """Where ``up`` keeps the example models: ``examples/models`` in a clone (the README's place),
    else a folder in the user's cache (``$XDG_CACHE_HOME/kserve-mesh/example-models``)."""
    if Path("examples/make_models.py").exists() or CLONE_EXAMPLES.is_dir():
        return CLONE_EXAMPLES
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "kserve-mesh" / "example-models"


def ensure_examples(models_dir: Path) -> None:
    """Make the example models in ``models_dir`` that are missing and whose training libraries are
    installed (the string models need none); say which types were left out and why."""
    from kserve_mesh.cli.example_models import STRING_MODELS, TRAINED, missing_libraries

    wanted = [*TRAINED, *(f"string-{n}" for n in range(1, STRING_MODELS + 1))]
    absent = {m for m in wanted if not (models_dir / m).is_dir() or not any((models_dir / m).iterdir())}
    skipped = {m: missing_libraries(m) for m in TRAINED if m in absent and missing_libraries(m)}
    if absent - set(skipped):
        with err_console.status(f"making the example models in {models_dir}"):
            result = subprocess.run([sys.executable, "-m", "kserve_mesh.cli.example_models", str(models_dir),
                                     "--installed-only"], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            fail(f"making the example models in {models_dir} failed: {last}; serve your own with --models DIR")
    if skipped:
        libs = sorted({lib for missing in skipped.values() for lib in missing})
        err_console.print(f"[yellow]not made:[/yellow] {', '.join(sorted(skipped))} (missing {', '.join(libs)}; "
                          "pip install 'kserve-mesh\\[runtimes]' for every model type)")


def models_folder(models: Path | None) -> Path:
    """The folder ``up`` serves: ``--models`` (which must exist), else the example models."""
    if models is not None:
        if not models.is_dir():
            what = "is not a folder" if models.exists() else "does not exist"
            fail(f"models folder {models} {what}: --models names a folder of models (one file or "
                 "sub-folder per model); leave it out to serve the example models")
        return models
    folder = examples_dir()
    ensure_examples(folder)
    return folder


# -- checks before a start ------------------------------------------------------------------------
def port_in_use(host: str, port: int, *, shared: bool = False) -> bool:
    """Whether ``host:port`` is taken (a listener there); 0 (any free port) never is. ``shared``:
    taken only by a listener that does not share it (instances sharing it with SO_REUSEPORT leave
    it free for another)."""
    if not port:
        return False
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free
        if shared:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def check_ports(host: str, ports: dict[str, int], offsets: range = range(1), *, shared: bool = False) -> None:
    """Fail with one line naming the first port taken and what to do (``shared``: by a listener
    that does not share it)."""
    for i in offsets:
        for field, port in ports.items():
            if port and port_in_use(host, port + i, shared=shared):
                fail(port_taken(host, port + i, field))


def port_taken(host: str, port: int, field: str = "") -> str:
    flag = _PORT_FLAGS.get(field, "--rest-port/--grpc-port/--metrics-port")
    env = f"KSERVE_MESH_{field.upper()}" if field else "KSERVE_MESH_*_PORT"
    return (f"port {port} on {host} is in use (another kserve-mesh running?): stop it, or choose other ports "
            f"with {flag} (or {env}; 0 takes any free port)")


# -- the run ---------------------------------------------------------------------------------------
PLAIN_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str, terminal: bool | None = None) -> None:
    """On a terminal, log lines go through rich's console on stderr, so that they print above a
    progress bar or status line; elsewhere (a pipe, a pod's log) one plain line per record."""
    from rich.logging import RichHandler

    if terminal if terminal is not None else err_console.is_terminal:
        handler: logging.Handler = RichHandler(console=err_console, show_path=False, markup=False,
                                               rich_tracebacks=False, log_time_format="%H:%M:%S")
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(PLAIN_LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def serve(settings: Any, load_with_progress: bool) -> None:
    """Check the models folder and the ports, then run the instance until SIGINT/SIGTERM."""
    from kserve_mesh.server import MeshServer

    if settings.models_dir is not None and not settings.models_dir.is_dir():
        fail(f"models folder {settings.models_dir} does not exist: --models (KSERVE_MESH_MODELS_DIR) names a "
             "folder of models, one file or sub-folder per model")
    ports = {f: getattr(settings, f) for f in _PORT_FLAGS}
    if settings.share_ports:  # the shared ones may be held by the instances this one joins
        check_ports(settings.host, {f: ports.pop(f) for f in ("rest_port", "grpc_port")}, shared=True)
    check_ports(settings.host, ports)
    setup_logging(settings.log_level)

    async def show_loading(server: MeshServer) -> None:
        instance = server.instance
        assert instance is not None
        ids = sorted(instance.registry.models)
        if not load_with_progress or not ids:
            console.print(f"[green]serving {len(ids)} models[/green] (each loads on its first request)")
            return
        console.print(f"[green]serving {len(ids)} models[/green], loading them now")
        with Progress(SpinnerColumn(), TextColumn("loading models"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err_console, transient=False) as progress:
            task = progress.add_task("load", total=len(ids))
            deadline = time.monotonic() + instance.cache.config.load_timeout_s * len(ids)
            while time.monotonic() < deadline:
                states = [instance.model_status(m).state.name for m in ids]
                done = sum(1 for s in states if s in ("LOADED", "LOADING_FAILED"))
                progress.update(task, completed=done)
                if done == len(ids):
                    break
                await asyncio.sleep(0.1)
        failed = [m for m in ids if instance.model_status(m).state.name == "LOADING_FAILED"]
        if failed:
            err_console.print(f"[red]{len(failed)} failed to load:[/red] {', '.join(failed)} "
                              "(kserve-mesh models shows why)")

    # The command line's start-up garbage (option parsing, settings) goes now, not in a collection
    # during the first load, whose measured memory growth is the model's size.
    gc.collect()
    try:
        asyncio.run(MeshServer(settings).run(on_ready=show_loading))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # noqa: BLE001 - a start-up failure is a message, not a traceback
        fail(start_failure(exc, settings))


def start_failure(exc: BaseException, settings: Any) -> str:
    """One line for an exception that stopped a start."""
    from kserve_mesh.core.errors import MeshError

    text = str(exc)
    if "Failed to bind" in text or "cannot bind" in text or getattr(exc, "errno", None) == errno.EADDRINUSE:
        for field in _PORT_FLAGS:
            port = getattr(settings, field)
            if port and f":{port}" in text:
                return port_taken(settings.host, port, field)
        return port_taken(settings.host, 0)
    if isinstance(exc, MeshError):
        return exc.message
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return f"{type(exc).__name__}: {text}"


# -- the commands ----------------------------------------------------------------------------------
@with_security_flags
def up(
    models: Path | None = typer.Option(None, "--models", show_default=False, help="Folder of models to "
                                          "register, one per file or sub-folder (default: the example models, "
                                          "made at the first start with the libraries installed)."),
    host: str | None = setting_option("host", "--host"),
    rest_port: int | None = setting_option("rest_port", "--rest-port"),
    grpc_port: int | None = setting_option("grpc_port", "--grpc-port"),
    metrics_port: int | None = setting_option("metrics_port", "--metrics-port"),
    capacity: int | None = setting_option("capacity_bytes", "--capacity-bytes"),
    runtime: str | None = setting_option("runtime", "--runtime", help="inprocess | process (the built-in "
                                            "runtime in this process, or as a child process) | remote"),
    load: bool | None = setting_option("load_models_at_start", "--load/--no-load", help="Load every model "
                                          "now (with a progress bar) instead of on its first request"),
    storage_config: Path | None = setting_option("storage_config", "--storage-config"),
    instances: int = typer.Option(1, "--instances", min=1, help="Start etcd and this many instances, each "
                                  "with its runtime process (ports: base + i)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Start etcd and this many instances that share "
                                "the REST and gRPC ports (SO_REUSEPORT), each with its runtime in process: "
                                "one per core for throughput on a machine with several."),
    **flags: Any,
) -> None:
    """Start a mesh serving the example models (or --models DIR), from any folder.

    One instance (in-memory store, built-in runtime in process); with --instances N, etcd and N
    instances with their runtime processes, each on its own ports; with --workers N, etcd and N
    instances sharing one pair of ports (the kernel spreads connections; a hot model gets a copy in
    each). Every option not given comes from its KSERVE_MESH_* variable, else its default."""
    settings = mesh_settings(host=host, rest_port=rest_port, grpc_port=grpc_port, metrics_port=metrics_port,
                             capacity_bytes=capacity, runtime=runtime, load_models_at_start=load,
                             storage_config=storage_config, **security_kwargs(flags))
    folder = models_folder(models if models is not None else settings.models_dir)
    settings = settings.model_copy(update={"models_dir": folder})
    ports = {f: getattr(settings, f) for f in _PORT_FLAGS}
    if workers > 1:
        if instances > 1:
            fail("--instances and --workers are two ways to start several instances: give one of them")
        if not settings.rest_port or not settings.grpc_port:
            fail("--workers shares the REST and gRPC ports between its instances: they cannot be 0 (any port)")
        check_ports(settings.host, {f: p for f, p in ports.items() if f != "metrics_port"}, shared=True)
        check_ports(settings.host, {"metrics_port": settings.metrics_port}, range(workers))
        from kserve_mesh.local_cluster import run as run_cluster

        raise typer.Exit(run_cluster(workers, host=settings.host, rest_port=settings.rest_port,
                                     grpc_port=settings.grpc_port, metrics_port=settings.metrics_port,
                                     models=folder, capacity=capacity, runtime=settings.runtime,
                                     storage_config=settings.storage_config, console=console,
                                     extra_args=security_args(flags), share_ports=True))
    check_ports(settings.host, ports, range(instances))
    if instances > 1:
        from kserve_mesh.local_cluster import run as run_cluster

        raise typer.Exit(run_cluster(instances, host=settings.host, rest_port=settings.rest_port,
                                     grpc_port=settings.grpc_port, metrics_port=settings.metrics_port,
                                     models=folder, capacity=capacity,
                                     runtime="process" if settings.runtime == "inprocess" else settings.runtime,
                                     storage_config=settings.storage_config, console=console,
                                     extra_args=security_args(flags)))
    serve(settings, settings.load_models_at_start)


@with_security_flags
def instance(
    models: Path | None = setting_option("models_dir", "--models"),
    host: str | None = setting_option("host", "--host"),
    rest_port: int | None = setting_option("rest_port", "--rest-port"),
    grpc_port: int | None = setting_option("grpc_port", "--grpc-port"),
    metrics_port: int | None = setting_option("metrics_port", "--metrics-port"),
    advertise_host: str | None = setting_option("advertise_host", "--advertise-host"),
    capacity: int | None = setting_option("capacity_bytes", "--capacity-bytes"),
    runtime: str | None = setting_option("runtime", "--runtime", help="inprocess | process | remote"),
    runtime_address: str | None = setting_option("runtime_address", "--runtime-address"),
    max_loading_concurrency: int | None = setting_option("max_loading_concurrency", "--max-loading-concurrency"),
    storage_config: Path | None = setting_option("storage_config", "--storage-config"),
    etcd_endpoints: str | None = setting_option("etcd_endpoints", "--etcd-endpoints"),
    share_ports: bool | None = setting_option("share_ports", "--share-ports/--own-ports"),
    peer_rest_port: int | None = setting_option("peer_rest_port", "--peer-rest-port"),
    peer_grpc_port: int | None = setting_option("peer_grpc_port", "--peer-grpc-port"),
    instance_id: str | None = setting_option("instance_id", "--instance-id"),
    namespace: str | None = setting_option("namespace", "--namespace"),
    shutdown_grace: float | None = setting_option("shutdown_grace_s", "--shutdown-grace-s"),
    scaleup_rpm: int | None = setting_option("scaleup_rpm_threshold", "--scaleup-rpm-threshold"),
    rate_check: float | None = setting_option("rate_check_s", "--rate-check-s"),
    scale_down: float | None = setting_option("scale_down_s", "--scale-down-s"),
    log_level: str | None = setting_option("log_level", "--log-level"),
    **flags: Any,
) -> None:
    """Start one mesh instance configured by flags and KSERVE_MESH_* environment variables."""
    settings = mesh_settings(host=host, rest_port=rest_port, grpc_port=grpc_port, metrics_port=metrics_port,
                             advertise_host=advertise_host, capacity_bytes=capacity, runtime=runtime,
                             runtime_address=runtime_address, models_dir=models,
                             max_loading_concurrency=max_loading_concurrency, storage_config=storage_config,
                             etcd_endpoints=etcd_endpoints, share_ports=share_ports,
                             peer_rest_port=peer_rest_port, peer_grpc_port=peer_grpc_port,
                             instance_id=instance_id, namespace=namespace,
                             shutdown_grace_s=shutdown_grace, scaleup_rpm_threshold=scaleup_rpm,
                             rate_check_s=rate_check, scale_down_s=scale_down, log_level=log_level,
                             **security_kwargs(flags))
    serve(settings, False)
