"""The ``kserve-mesh`` command line.

    kserve-mesh up          one instance serving the example models (the embedded default)
    kserve-mesh instance    one instance, configured by flags / KSERVE_MESH_* variables
    kserve-mesh runtime     the built-in runtime as its own process (ModelRuntime + V2 gRPC)
    kserve-mesh register | unregister | models | infer | status | vmodel   talk to a running mesh
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="kserve-mesh: a multi-model serving mesh for KServe.")
vmodel_app = typer.Typer(no_args_is_help=True, help="Manage vmodels (stable names that move between models).")
app.add_typer(vmodel_app, name="vmodel")
token_app = typer.Typer(no_args_is_help=True, help="Make bearer tokens for a mesh's auth file (--auth-file).")
app.add_typer(token_app, name="token")
# Piped output (scripts, CI logs) gets wide lines instead of rich's 80-column default.
console = Console() if sys.stdout.isatty() else Console(width=200)
err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=200)

DEFAULT_URL = os.environ.get("KSERVE_MESH_URL", "http://127.0.0.1:8008")
URL_OPTION = typer.Option(DEFAULT_URL, "--url", help="REST address of the mesh (env KSERVE_MESH_URL).")
EXAMPLES_DIR = Path("examples/models")


# -- options of the serving commands that map one to one onto MeshSettings fields -------------------
# (every flag is also a KSERVE_MESH_* variable; a flag given wins)
def _opt(*names: str, help: str) -> Any:
    return typer.Option(None, *names, help=help, show_default=False)


SECURITY_FLAGS = {
    "allow_local_paths": _opt("--allow-local-path", help="A folder local model paths may point into, besides "
                              "--models (repeat for more). Paths anywhere else are refused."),
    "pvc_mount_root": _opt("--pvc-mount-root", help="Where PVCs are mounted (pvc://claim/path). Default /pvc_mounts."),
    "allow_any_pvc": _opt("--allow-any-pvc/--no-allow-any-pvc", help="pvc:// paths of any claim (else only "
                          "claims named by a pvc entry of the storage-config)."),
    "http_allowed_hosts": _opt("--http-allowed-host", help="A host http(s) model paths may name (repeat for "
                               "more; '.example.com' allows subdomains). Default: any."),
    "rest_max_body_bytes": _opt("--rest-max-body-bytes", help="Largest REST request body (default 16 MiB)."),
    "http_header_timeout_s": _opt("--http-header-timeout-s", help="Seconds a client may take to send headers."),
    "http_body_timeout_s": _opt("--http-body-timeout-s", help="Longest pause while a request body arrives."),
    "grpc_max_concurrent_rpcs": _opt("--grpc-max-concurrent-rpcs", help="gRPC calls served at once (default "
                                     "256); more are answered RESOURCE_EXHAUSTED."),
    "payload_processors": _opt("--payload-processors", help="Space-separated http(s):// URLs that receive every "
                               "inference request and response as CloudEvents (?modelId=ID: only that model)."),
    "runtime_check_interval_s": _opt("--runtime-check-interval-s", help="Seconds between runtime status checks."),
    "runtime_check_timeout_s": _opt("--runtime-check-timeout-s", help="A runtime silent this long is hung "
                                    "(a child runtime is restarted)."),
    "tls_cert": _opt("--tls-cert", help="PEM certificate for every port (and towards peers); re-read on change."),
    "tls_key": _opt("--tls-key", help="PEM private key of --tls-cert."),
    "tls_client_ca": _opt("--tls-client-ca", help="PEM CA bundle that client certificates are checked against."),
    "tls_client_auth": _opt("--tls-client-auth", help="none | optional | require (mTLS)."),
    "tls_ca": _opt("--tls-ca", help="PEM CA bundle trusted for peers (default: --tls-client-ca, else --tls-cert)."),
    "tls_server_name": _opt("--tls-server-name", help="Name peers' certificates are checked against."),
    "tls_metrics": _opt("--tls-metrics/--no-tls-metrics", help="Serve the metrics port over TLS too."),
    "auth": _opt("--auth", help="auto | on | off. auto: on with --auth-file, and whenever --host is not a "
                 "loopback address."),
    "auth_file": _opt("--auth-file", help="Tokens and certificate identities with their roles (admin, infer)."),
    "peer_token_file": _opt("--peer-token-file", help="File with the token this instance presents to peers."),
}


def _with_security_flags(fn: Any) -> Any:
    """Add SECURITY_FLAGS to a serving command's signature (typer reads the signature)."""
    import inspect

    sig = inspect.signature(fn)
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                               annotation=_FLAG_TYPES[name]) for name, option in SECURITY_FLAGS.items()]
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    fn.__signature__ = sig.replace(parameters=params + extra)
    return fn


_FLAG_TYPES: dict[str, Any] = {
    "allow_local_paths": Optional[list[Path]], "pvc_mount_root": Optional[Path], "allow_any_pvc": Optional[bool],
    "http_allowed_hosts": Optional[list[str]], "rest_max_body_bytes": Optional[int],
    "http_header_timeout_s": Optional[float], "http_body_timeout_s": Optional[float],
    "grpc_max_concurrent_rpcs": Optional[int], "payload_processors": Optional[str],
    "runtime_check_interval_s": Optional[float], "runtime_check_timeout_s": Optional[float],
    "tls_cert": Optional[Path], "tls_key": Optional[Path], "tls_client_ca": Optional[Path],
    "tls_client_auth": Optional[str], "tls_ca": Optional[Path], "tls_server_name": Optional[str],
    "tls_metrics": Optional[bool], "auth": Optional[str], "auth_file": Optional[Path],
    "peer_token_file": Optional[Path],
}


def _security_args(flags: dict[str, Any]) -> list[str]:
    """The security flags a command was given, as command-line arguments for an instance process."""
    args: list[str] = []
    for name, value in _security(flags).items():
        flag = SECURITY_FLAGS[name].param_decls[0].split("/")[0]
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag.removeprefix("--"))
        elif isinstance(value, tuple):
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return args


def _security(flags: dict[str, Any]) -> dict[str, Any]:
    """The security flags a command was given, as MeshSettings keyword arguments (lists → tuples)."""
    out = {name: flags.get(name) for name in SECURITY_FLAGS}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in out.items() if v not in (None, [])}


def _fail(message: str, code: int = 1) -> None:
    err_console.print(f"[red]error:[/red] {escape(message)}")  # server text is never rich markup
    raise typer.Exit(code)


# -- how the client commands reach a mesh: token and TLS options on each of them --------------------
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
    """Give a client command the CONNECTION_FLAGS; ``_client`` uses what it was given."""
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


def _client(url: str):  # type: ignore[no-untyped-def]
    from kserve_mesh.client import MeshClient, MeshClientError

    try:
        return MeshClient(url, **_CONNECTION)
    except MeshClientError as exc:
        _fail(exc.message)


def _call(fn, *args: Any, **kwargs: Any) -> Any:  # type: ignore[no-untyped-def]
    from kserve_mesh.client import MeshClientError

    try:
        return fn(*args, **kwargs)
    except MeshClientError as exc:
        _fail(exc.message)


def _settings(**flags: Any):  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    from kserve_mesh.settings import MeshSettings

    try:
        return MeshSettings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        parts = []
        for e in exc.errors():
            where = ".".join(map(str, e["loc"]))
            message = str(e["msg"]).removeprefix("Value error, ")
            parts.append(f"{where}: {message}" if where else message)
        _fail("invalid settings: " + "; ".join(parts))


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def _ago(ms: int) -> str:
    if not ms:
        return "-"
    secs = max(0, time.time() - ms / 1000)
    if secs < 120:
        return f"{secs:.0f}s ago"
    if secs < 7200:
        return f"{secs / 60:.0f}m ago"
    return f"{secs / 3600:.1f}h ago"


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
            _fail(str(exc))
        raise


def _ensure_examples(models_dir: Path) -> None:
    script = Path("examples/make_models.py")
    if models_dir.exists() or models_dir.resolve() != EXAMPLES_DIR.resolve() or not script.exists():
        if not models_dir.exists():
            _fail(f"models folder {models_dir} does not exist")
        return
    with console.status("making the example models (examples/make_models.py)"):
        result = subprocess.run([sys.executable, str(script), str(models_dir)], capture_output=True, text=True)
    if result.returncode != 0:
        _fail(f"examples/make_models.py failed:\n{result.stderr}")


@app.command()
@_with_security_flags
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
                                     extra_args=_security_args(flags)))
    settings = _settings(host=host, rest_port=rest_port, grpc_port=grpc_port, metrics_port=metrics_port,
                         capacity_bytes=capacity, runtime=runtime, models_dir=models, load_models_at_start=load,
                         storage_config=storage_config, **_security(flags))
    _serve(settings, load)


@app.command()
@_with_security_flags
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
    settings = _settings(host=host, rest_port=rest_port, grpc_port=grpc_port, metrics_port=metrics_port,
                         advertise_host=advertise_host, capacity_bytes=capacity, runtime=runtime,
                         runtime_address=runtime_address, models_dir=models, max_loading_concurrency=max_loading_concurrency,
                         storage_config=storage_config, etcd_endpoints=etcd_endpoints, instance_id=instance_id,
                         namespace=namespace, shutdown_grace_s=shutdown_grace, scaleup_rpm_threshold=scaleup_rpm,
                         rate_check_s=rate_check, scale_down_s=scale_down, **_security(flags))
    _serve(settings, False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def runtime(ctx: typer.Context) -> None:
    """Run the built-in runtime as its own process (flags: see `kserve-mesh runtime --help`)."""
    from kserve_mesh.runtime.server import main as runtime_main

    raise typer.Exit(runtime_main(list(ctx.args)) or 0)


@app.command()
@with_connection_flags
def register(
    model_id: str = typer.Argument(..., help="Model id."),
    model_type: str = typer.Option(..., "--type", help="sklearn | xgboost | lightgbm | onnx | string"),
    path: str = typer.Option(..., "--path", help="Local path, file://, s3://bucket/path or http(s):// URL."),
    key: str = typer.Option("", "--key", help="Storage key JSON (ModelMesh modelKey)."),
    load: bool = typer.Option(False, "--load", help="Load now (and wait for it)."),
    sha256: str = typer.Option("", "--sha256", help="Pin the model's files to this digest (`kserve-mesh digest "
                               "PATH`); a load of other bytes fails."),
    url: str = URL_OPTION,
) -> None:
    """Register a model with a running mesh."""
    with _client(url) as client:
        if load:
            with console.status(f"loading {model_id}"):
                status = _call(client.register, model_id, model_type, path, key, load_now=True, sync=True,
                               sha256=sha256)
        else:
            status = _call(client.register, model_id, model_type, path, key, sha256=sha256)
    state = status["status"]
    console.print(f"{escape(model_id)}: {escape(state)}")
    if state == "LOADING_FAILED":
        _fail("; ".join(status.get("errors") or ["load failed"]))


@app.command()
@with_connection_flags
def unregister(model_id: str, url: str = URL_OPTION) -> None:
    """Unregister a model (its copies are unloaded)."""
    with _client(url) as client:
        _call(client.unregister, model_id)
    console.print(f"{escape(model_id)}: unregistered")


@app.command()
@with_connection_flags
def models(url: str = URL_OPTION, output: str = typer.Option("table", "-o", help="table | json")) -> None:
    """List registered models: state, size, copies, last used."""
    with _client(url) as client:
        rows = _call(client.models)
    if output == "json":
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"models at {url}")
    for col in ("MODEL", "TYPE", "STATE", "SIZE", "COPIES", "LAST USED"):
        table.add_column(col, no_wrap=True)
    table.add_column("ERROR", overflow="fold")
    colors = {"LOADED": "green", "LOADING": "yellow", "LOADING_FAILED": "red"}
    for m in rows:
        state = m["status"]
        table.add_row(escape(m["modelId"]), escape((m.get("modelInfo") or {}).get("type", "")),
                      f"[{colors.get(state, 'white')}]{escape(state)}[/]", _human(m["sizeBytes"]) if m["sizeBytes"] else "-",
                      str(m["copies"]), _ago(m["lastUsedTime"]), escape((m["errors"] or [""])[0][:60]))
    console.print(table)


@app.command()
@with_connection_flags
def infer(
    name: str = typer.Argument(..., help="Model or vmodel id."),
    data: Optional[str] = typer.Option(None, "-d", "--data", help="V2 request JSON; '-' reads stdin."),
    file: Optional[Path] = typer.Option(None, "-f", "--file", help="File holding the V2 request JSON."),
    url: str = URL_OPTION,
) -> None:
    """Send a V2 inference request (JSON in) and print the response (JSON out)."""
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            _fail(f"cannot read the request file {file}: {getattr(exc, 'strerror', None) or exc}")
    elif data == "-" or data is None:
        text = sys.stdin.read()
    else:
        text = data
    try:
        request = json.loads(text)
    except ValueError as exc:
        _fail(f"the request is not valid JSON: {exc}")
    if not isinstance(request, dict):
        _fail(f"the request must be a JSON object (a V2 inference request), got {type(request).__name__}")
    with _client(url) as client:
        print(json.dumps(_call(client.infer_json, name, request), indent=2))


@app.command()
@with_connection_flags
def status(url: str = URL_OPTION, output: str = typer.Option("table", "-o", help="table | json")) -> None:
    """Show the instance: capacity, used, models, requests per minute."""
    with _client(url) as client:
        info = _call(client.server_status)
    if output == "json":
        print(json.dumps(info, indent=2))
        return
    table = Table(title=f"kserve-mesh at {url}")
    for col in ("INSTANCE", "ADDRESS", "CAPACITY", "USED", "MODELS", "REQ/MIN", "CACHE AGE", "STATE"):
        table.add_column(col, no_wrap=True)
    for inst in info.get("instances", []):
        cap, used = inst["capacityBytes"], inst["usedBytes"]
        state = "shutting down" if inst["shuttingDown"] else "serving"
        if inst["instanceId"] == info["instanceId"]:
            state += " (this)" + (" leader" if info.get("leader") else "")
        table.add_row(escape(inst["instanceId"]), escape(inst["grpc"]), _human(cap), f"{_human(used)} ({100 * used / cap:.0f}%)",
                      str(inst["models"]), str(inst["requestsPerMinute"]),
                      _ago(inst["lruTime"]).replace(" ago", "") if inst["models"] else "-",
                      state)
    console.print(table)
    console.print(f"registered: {info['modelsRegistered']} models, {info['vmodels']} vmodels; "
                  f"loading now: {info['loadsInProgress'] + info['loadsQueued']}")
    placements = info.get("placements") or {}
    if placements:
        where = Table(title="model copies")
        where.add_column("MODEL", no_wrap=True)
        where.add_column("COPIES")
        where.add_column("INSTANCES")
        for model_id, holders in sorted(placements.items()):
            where.add_row(escape(model_id), str(len(holders)), escape(", ".join(holders)))
        console.print(where)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def controller(ctx: typer.Context) -> None:
    """Run the Kubernetes controller (flags: see `kserve-mesh controller --help`)."""
    from kserve_mesh.kube import controller_main

    raise typer.Exit(controller_main(list(ctx.args)) or 0)


@vmodel_app.command("set")
@with_connection_flags
def vmodel_set(vmodel_id: str, target: str, owner: str = "", force: bool = False, url: str = URL_OPTION) -> None:
    """Point a vmodel at a target model (it switches once the target is loaded)."""
    with _client(url) as client:
        st = _call(client.set_vmodel, vmodel_id, target, owner=owner, force=force)
    console.print(escape(f"{vmodel_id}: {st['status']} active={st['activeModelId']} target={st['targetModelId']}"))


@vmodel_app.command("get")
@with_connection_flags
def vmodel_get(vmodel_id: str, url: str = URL_OPTION) -> None:
    """Show a vmodel's active and target models."""
    with _client(url) as client:
        st = _call(client.vmodel, vmodel_id)
    console.print(escape(f"{vmodel_id}: {st['status']} active={st['activeModelId']} target={st['targetModelId']}"))


@vmodel_app.command("delete")
@with_connection_flags
def vmodel_delete(vmodel_id: str, url: str = URL_OPTION) -> None:
    """Delete a vmodel."""
    with _client(url) as client:
        _call(client.delete_vmodel, vmodel_id)
    console.print(f"{escape(vmodel_id)}: deleted")


@app.command()
def digest(path: Path = typer.Argument(..., help="A model file, archive or folder.")) -> None:
    """Print the sha256 that pins a model's files (for `register --sha256` or a modelKey's "sha256")."""
    from kserve_mesh.core.errors import MeshError
    from kserve_mesh.storage import model_digest

    if not path.exists():
        _fail(f"{path} does not exist")
    try:
        print(model_digest(path))
    except MeshError as exc:
        _fail(str(exc))


@token_app.command("create")
def token_create(
    role: str = typer.Option(..., "--role", help="admin (everything) or infer (inference and reads)."),
    file: Path = typer.Option(Path("auth.yaml"), "--file", "-f", help="The auth file to add the token to "
                              "(created, readable by you only, when missing)."),
    name: Optional[str] = typer.Option(None, "--name", help="Who the token is for (shown in logs; default "
                                       "the role and a number)."),
    store_plain: bool = typer.Option(False, "--store-plain", help="Keep the token itself in the file "
                                     "instead of its SHA-256 digest (only where the file must hand it out)."),
) -> None:
    """Make a new random token with a role, add it to an auth file, and print it (once)."""
    import hashlib
    import secrets

    import yaml

    if role not in ("admin", "infer"):
        _fail(f"--role must be admin or infer, got '{role}'")
    doc: dict[str, Any] = {}
    if file.exists():
        try:
            doc = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            _fail(f"cannot read the auth file {file}: {exc}")
        if not isinstance(doc, dict) or not isinstance(doc.get("tokens", []), list):
            _fail(f"{file} is not an auth file (a mapping with a 'tokens' list)")
    tokens = doc.setdefault("tokens", []) or []
    doc["tokens"] = tokens
    taken = {t.get("name") for t in tokens if isinstance(t, dict)}
    if name is None:
        n = 1
        while f"{role}-{n}" in taken:
            n += 1
        name = f"{role}-{n}"
    elif name in taken:
        _fail(f"{file} already has a token named '{name}'")
    token = secrets.token_urlsafe(32)
    entry: dict[str, str] = {"name": name, "role": role}
    if store_plain:
        entry["token"] = token
    else:
        entry["sha256"] = hashlib.sha256(token.encode()).hexdigest()
    tokens.append(entry)
    text = yaml.safe_dump(doc, sort_keys=False)
    try:
        if not file.exists():
            file.touch(mode=0o600)
        file.write_text(text, encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot write {file}: {exc.strerror or exc}")
    err_console.print(f"added token '{name}' (role {role}) to {file}; it is shown once, keep it safe:")
    print(token)


def main() -> None:
    from kserve_mesh.cli_kube import register_commands

    register_commands(app)
    app()


if __name__ == "__main__":
    main()
