"""The commands that talk to a running mesh: ``register``, ``unregister``, ``models``, ``infer``,
``status`` and ``vmodel set | get | delete``; and ``digest`` (a model's pin, computed here).

They are registered on the app by ``kserve_mesh.cli``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from kserve_mesh.cli.connection import URL_OPTION, call, connect, with_connection_flags
from kserve_mesh.cli.output import Output, ago, console, fail, human_size, output_option, print_data


@with_connection_flags
def register(
    model_id: str = typer.Argument(..., help="Model id."),
    model_type: str = typer.Option(..., "--type", help="sklearn | xgboost | lightgbm | onnx | pytorch | tensorflow | keras | openvino_ir | python | string"),
    path: str = typer.Option(..., "--path", help="Local path, file://, s3://bucket/path or http(s):// URL."),
    key: str = typer.Option("", "--key", help="Storage key JSON (ModelMesh modelKey)."),
    load: bool = typer.Option(False, "--load", help="Load now (and wait for it)."),
    sha256: str = typer.Option("", "--sha256", help="Pin the model's files to this digest (`kserve-mesh digest "
                               "PATH`); a load of other bytes fails."),
    url: str = URL_OPTION,
) -> None:
    """Register a model with a running mesh."""
    with connect(url) as client:
        if load:
            with console.status(f"loading {model_id}"):
                status = call(client.register, model_id, model_type, path, key, load_now=True, sync=True,
                               sha256=sha256)
        else:
            status = call(client.register, model_id, model_type, path, key, sha256=sha256)
    state = status["status"]
    console.print(f"{escape(model_id)}: {escape(state)}")
    if state == "LOADING_FAILED":
        fail("; ".join(status.get("errors") or ["load failed"]))


@with_connection_flags
def unregister(model_id: str = typer.Argument(..., help="Model id."), url: str = URL_OPTION) -> None:
    """Unregister a model (its copies are unloaded); an unknown id is an error."""
    with connect(url) as client:
        call(client.status, model_id)  # ModelNotFoundError for an unknown id (the mesh's delete is idempotent)
        call(client.unregister, model_id)
    console.print(f"{escape(model_id)}: unregistered")


@with_connection_flags
def models(url: str = URL_OPTION, output: Output = output_option()) -> None:
    """List registered models: state, size, copies, last used, errors (in full)."""
    with connect(url) as client:
        rows = call(client.models)
    if output is not Output.table:
        print_data(rows, output)
        return
    table = Table(title=f"models at {url}")
    for col in ("MODEL", "TYPE", "STATE", "SIZE", "COPIES", "LAST USED"):
        table.add_column(col, no_wrap=True)
    table.add_column("ERROR", overflow="fold", ratio=1)  # wraps: an error is shown in full
    colors = {"LOADED": "green", "LOADING": "yellow", "LOADING_FAILED": "red"}
    for m in rows:
        state = m["status"]
        table.add_row(escape(m["modelId"]), escape((m.get("modelInfo") or {}).get("type", "")),
                      f"[{colors.get(state, 'white')}]{escape(state)}[/]",
                      human_size(m["sizeBytes"]) if m["sizeBytes"] else "-",
                      str(m["copies"]), ago(m["lastUsedTime"], never="never"), escape("\n".join(m["errors"] or [])))
    console.print(table)
    if not rows:
        console.print("no models registered: kserve-mesh register MODEL --type TYPE --path PATH")


@with_connection_flags
def infer(
    name: str = typer.Argument(..., help="Model or vmodel id."),
    data: str | None = typer.Option(None, "-d", "--data", help="V2 request JSON; '-' reads stdin."),
    file: Path | None = typer.Option(None, "-f", "--file", help="File holding the V2 request JSON."),
    url: str = URL_OPTION,
) -> None:
    """Send a V2 inference request (JSON in) and print the response (JSON out).

    The request comes from -d, -f, or piped stdin."""
    if file is not None and data is not None:
        fail("give the request once: -d JSON or -f FILE, not both")
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read the request file {file}: {getattr(exc, 'strerror', None) or exc}")
    elif data == "-" or data is None:
        if data is None and sys.stdin.isatty():
            fail(f"no request: give it with -d '{{\"inputs\": [...]}}', -f FILE, or pipe it in "
                 f"(kserve-mesh infer {name} < request.json)")
        text = sys.stdin.read()
        if not text.strip():
            fail("no request: stdin was empty (give it with -d JSON or -f FILE)")
    else:
        text = data
    try:
        request = json.loads(text)
    except ValueError as exc:
        fail(f"the request is not valid JSON: {exc}")
    if not isinstance(request, dict):
        fail(f"the request must be a JSON object (a V2 inference request), got {type(request).__name__}")
    with connect(url) as client:
        print(json.dumps(call(client.infer_json, name, request), indent=2))


def cache_age(inst: dict[str, Any]) -> str:
    """How long the least recently used copy has gone unused ("-": no copies; "unused": not used
    since the instance started, its time only a seed of its place in the cache)."""
    if not inst["models"]:
        return "-"
    if inst["lruTime"] < inst.get("startTime", 0):
        return "unused"
    return ago(inst["lruTime"]).replace(" ago", "")


@with_connection_flags
def status(url: str = URL_OPTION, output: Output = output_option()) -> None:
    """Show the instance: capacity, used, models, requests per minute."""
    with connect(url) as client:
        info = call(client.server_status)
    if output is not Output.table:
        print_data(info, output)
        return
    table = Table(title=f"kserve-mesh at {url}")
    for col in ("INSTANCE", "ADDRESS", "CAPACITY", "USED", "MODELS", "REQ/MIN", "CACHE AGE", "STATE"):
        table.add_column(col, no_wrap=True)
    for inst in info.get("instances", []):
        cap, used = inst["capacityBytes"], inst["usedBytes"]
        state = "shutting down" if inst["shuttingDown"] else "recycling runtime" if inst.get("recycling") else "serving"
        if inst["instanceId"] == info["instanceId"]:
            state += " (this)" + (" leader" if info.get("leader") else "")
        table.add_row(escape(inst["instanceId"]), escape(inst["grpc"]), human_size(cap), f"{human_size(used)} ({100 * used / cap:.0f}%)",
                      str(inst["models"]), str(inst["requestsPerMinute"]), cache_age(inst), state)
    console.print(table)
    console.print(f"registered: {info['modelsRegistered']} models, {info['vmodels']} vmodels; "
                  f"loading now: {info['loadsInProgress'] + info['loadsQueued']}")
    mem = info.get("memory") or {}
    if mem.get("residentBytes"):  # memory truth (issue 16): this instance's runtime process
        console.print(f"runtime memory: resident {human_size(mem['residentBytes'])}, baseline "
                      f"{human_size(mem['baselineBytes'])}, models {human_size(mem['accountedBytes'])}, unaccounted "
                      f"{'-' if mem['unaccountedBytes'] < 0 else ''}{human_size(abs(mem['unaccountedBytes']))} "
                      f"(counted as used {human_size(mem['unaccountedCountedBytes'])}); recycles {mem['runtimeRecycles']}")
    gpu = info.get("gpu") or {}
    if gpu.get("capacityBytes"):  # GPU memory accounting (issue 11)
        console.print(f"GPU memory: {human_size(gpu['usedBytes'])} of {human_size(gpu['capacityBytes'])} held by "
                      f"{gpu['models']} models ({escape(gpu['status'])})")
    elif gpu:
        console.print(f"GPU memory accounting off: {escape(gpu['status'])}")
    placements = info.get("placements") or {}
    if placements:
        where = Table(title="model copies")
        where.add_column("MODEL", no_wrap=True)
        where.add_column("COPIES")
        where.add_column("INSTANCES")
        for model_id, holders in sorted(placements.items()):
            where.add_row(escape(model_id), str(len(holders)), escape(", ".join(holders)))
        console.print(where)

@with_connection_flags
def vmodel_set(vmodel_id: str, target: str, owner: str = "", force: bool = False, url: str = URL_OPTION) -> None:
    """Point a vmodel at a target model (it switches once the target is loaded)."""
    with connect(url) as client:
        st = call(client.set_vmodel, vmodel_id, target, owner=owner, force=force)
    console.print(escape(f"{vmodel_id}: {st['status']} active={st['activeModelId']} target={st['targetModelId']}"))


@with_connection_flags
def vmodel_get(vmodel_id: str, url: str = URL_OPTION, output: Output = output_option()) -> None:
    """Show a vmodel's active and target models."""
    with connect(url) as client:
        st = call(client.vmodel, vmodel_id)
    if output is not Output.table:
        print_data(st, output)
        return
    console.print(escape(f"{vmodel_id}: {st['status']} active={st['activeModelId']} target={st['targetModelId']}"))


@with_connection_flags
def vmodel_delete(vmodel_id: str, url: str = URL_OPTION) -> None:
    """Delete a vmodel."""
    with connect(url) as client:
        call(client.delete_vmodel, vmodel_id)
    console.print(f"{escape(vmodel_id)}: deleted")


def digest(path: Path = typer.Argument(..., help="A model file, archive or folder.")) -> None:
    """Print the sha256 that pins a model's files (for `register --sha256` or a modelKey's "sha256")."""
    from kserve_mesh.core.errors import MeshError
    from kserve_mesh.storage import model_digest

    if not path.exists():
        fail(f"{path} does not exist")
    try:
        print(model_digest(path))
    except MeshError as exc:
        fail(str(exc))
