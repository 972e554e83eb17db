"""``kserve-mesh apply | get | delete``: KServe resources against a running mesh, like kubectl.

    kserve-mesh apply -f isvc.yaml [-f more/]      every .yaml/.yml/.json of a folder
    kserve-mesh get isvc [NAME] [-n NS | -A] [-o yaml|json]
    kserve-mesh delete isvc NAME [-n NS]

Kinds: inferenceservices (isvc), predictors, servingruntimes, clusterservingruntimes. The mesh's
REST routes (``api/rest_kube.py``) do the work; this module only reads files, calls them through
the client SDK (``kserve_mesh.client``), and prints. Every failure is a one-line ``error: ...`` and a non-zero exit.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import typer

KIND_ARG_HELP = "inferenceservices (isvc) | predictors | servingruntimes | clusterservingruntimes"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
_KINDS = {
    "InferenceService": ("inferenceservices", "isvc", "isvcs", "inferenceservice"),
    "Predictor": ("predictors", "predictor"),
    "ServingRuntime": ("servingruntimes", "servingruntime"),
    "ClusterServingRuntime": ("clusterservingruntimes", "clusterservingruntime"),
}


def _fail(message: str, code: int = 1) -> None:
    from kserve_mesh.cli.output import fail

    fail(message, code)


def _kind(text: str) -> tuple[str, str]:
    wanted = text.lower()
    for kind, names in _KINDS.items():
        if wanted in names or wanted == kind.lower():
            return kind, names[0]
    _fail(f"unknown resource type '{text}' (one of: {KIND_ARG_HELP})")
    raise AssertionError  # unreachable


def _request(url: str, method: str, path: str, **kwargs: Any) -> Any:
    """One call through the SDK (token and TLS options as the command was given them)."""
    from kserve_mesh.cli.connection import connect
    from kserve_mesh.client import MeshClientError

    with connect(url) as client:
        try:
            return client.call(method, path, **kwargs)
        except MeshClientError as exc:
            _fail(exc.message)


def manifest_files(path: Path) -> list[Path]:
    """The files ``-f path`` applies: the file itself, or a folder's .yaml/.yml/.json files."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES)
    if path.is_file() or str(path) == "-":
        return [path]
    _fail(f"{path} does not exist")
    return []


def _read_manifests(paths: list[Path]) -> str:
    parts: list[str] = []
    for given in paths:
        files = manifest_files(given)
        if not files:
            _fail(f"no .yaml, .yml or .json files in {given}")
        for f in files:
            try:
                text = sys.stdin.read() if str(f) == "-" else f.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                _fail(f"cannot read {f}: {exc}")
            if f.suffix.lower() == ".json":
                try:
                    doc = json.loads(text)
                except json.JSONDecodeError as exc:
                    _fail(f"{f}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
                docs = doc if isinstance(doc, list) else [doc]
                text = "\n---\n".join(json.dumps(d) for d in docs)  # JSON is YAML
            parts.append(text)
    return "\n---\n".join(parts)


def _age(created: str) -> str:
    try:
        then = dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except (TypeError, ValueError):
        return "<unknown>"
    secs = int(max(0, (dt.datetime.now(dt.UTC) - then).total_seconds()))
    if secs < 120:
        return f"{secs}s"
    if secs < 7200:
        return f"{secs // 60}m"
    if secs < 172800:
        return f"{secs // 3600}h"
    return f"{secs // 86400}d"


def _cond(obj: dict[str, Any], kind: str) -> str:
    for c in obj.get("status", {}).get("conditions", []) or []:
        if c.get("type") == kind:
            return str(c.get("status", "Unknown"))
    return "Unknown"


def _row(kind: str, obj: dict[str, Any]) -> list[str]:
    meta, spec, status = obj.get("metadata", {}), obj.get("spec") or {}, obj.get("status") or {}
    age = _age(meta.get("creationTimestamp", ""))
    if kind == "InferenceService":
        ms = status.get("modelStatus", {})
        states = ms.get("states", {})
        return [meta.get("name", ""), status.get("url", ""), _cond(obj, "Ready"),
                states.get("activeModelState", ""), states.get("targetModelState", ""),
                ms.get("transitionStatus", ""), str(ms.get("copies", {}).get("totalCopies", 0)), age]
    if kind == "Predictor":
        return [meta.get("name", ""), spec.get("modelType", {}).get("name", ""),
                str(status.get("available", False)).lower(), status.get("activeModelState", ""),
                status.get("targetModelState", ""), status.get("transitionStatus", ""), age]
    formats = [f.get("name", "") for f in spec.get("supportedModelFormats", []) or []]
    containers = [c.get("name", "") for c in spec.get("containers", []) or []]
    return [meta.get("name", ""), "true" if spec.get("disabled") else "", ",".join(formats),
            ",".join(containers), age if meta.get("creationTimestamp") else "<built-in>"]


HEADERS = {
    "InferenceService": ["NAME", "URL", "READY", "ACTIVE-MODEL", "TARGET-MODEL", "TRANSITION", "COPIES", "AGE"],
    "Predictor": ["NAME", "TYPE", "AVAILABLE", "ACTIVEMODEL", "TARGETMODEL", "TRANSITION", "AGE"],
    "ServingRuntime": ["NAME", "DISABLED", "MODELTYPE", "CONTAINERS", "AGE"],
    "ClusterServingRuntime": ["NAME", "DISABLED", "MODELTYPE", "CONTAINERS", "AGE"],
}


def table(kind: str, items: list[dict[str, Any]], *, all_namespaces: bool = False) -> str:
    """kubectl-style columns: left-aligned, three spaces apart."""
    headers = list(HEADERS[kind])
    rows = [_row(kind, it) for it in items]
    if all_namespaces and kind != "ClusterServingRuntime":
        headers.insert(0, "NAMESPACE")
        rows = [[it.get("metadata", {}).get("namespace", ""), *r] for it, r in zip(items, rows, strict=True)]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    lines = ["   ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in [headers, *rows]]
    return "\n".join(lines)


def _print_objects(items: list[dict[str, Any]], output: str, single: bool) -> None:
    if output == "json":
        typer.echo(json.dumps(items[0] if single else {"apiVersion": "v1", "kind": "List", "items": items},
                              indent=2))
    else:
        import yaml

        docs = items if not single else items[:1]
        typer.echo("---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs).rstrip())


def _get(url: str, kind: str, name: str | None, namespace: str, all_namespaces: bool, output: str) -> None:
    """``kserve-mesh get``: one resource or a listing, as a table, YAML or JSON."""
    if output not in ("table", "wide", "yaml", "json"):
        _fail(f"unknown output format '{output}' (table | yaml | json)")
    full_kind, plural = _kind(kind)
    cluster = full_kind == "ClusterServingRuntime"
    if name:
        path = f"/mesh/v1/{plural}/{name}" if cluster else f"/mesh/v1/{plural}/{namespace}/{name}"
        items = [_request(url, "GET", path)]
    else:
        params = {} if all_namespaces or cluster else {"namespace": namespace}
        items = _request(url, "GET", f"/mesh/v1/{plural}", params=params)["items"]
    if output in ("yaml", "json"):
        _print_objects(items, output, single=bool(name))
    elif not items:
        where = "" if cluster or all_namespaces else f" in {namespace} namespace"
        typer.echo(f"No resources found{where}.", err=True)
    else:
        typer.echo(table(full_kind, items, all_namespaces=all_namespaces))


def register_commands(app: typer.Typer) -> None:
    """Add the KServe resource commands to the main CLI."""
    from kserve_mesh.cli.connection import URL_OPTION, with_connection_flags

    @app.command()
    @with_connection_flags
    def apply(
        filename: list[Path] = typer.Option(..., "-f", "--filename",
                                            help="YAML/JSON file, a folder of them, or - for stdin (repeatable)."),
        url: str = URL_OPTION,
    ) -> None:
        """Apply KServe resources (InferenceService, Predictor, ServingRuntime...) to a running mesh."""
        text = _read_manifests(filename)
        results = _request(url, "POST", "/mesh/v1/apply", content=text.encode("utf-8"),
                           headers={"content-type": "application/yaml"})
        for r in results:
            plural = _KINDS.get(r["kind"], (r["kind"].lower() + "s",))[0]
            typer.echo(f"{plural[:-1]}.serving.kserve.io/{r['name']} {r['action']}")

    @app.command()
    @with_connection_flags
    def get(
        kind: str = typer.Argument(..., help=KIND_ARG_HELP),
        name: str | None = typer.Argument(None, help="One resource (default: all)."),
        namespace: str = typer.Option("default", "-n", "--namespace", help="Namespace."),
        all_namespaces: bool = typer.Option(False, "-A", "--all-namespaces", help="Every namespace."),
        output: str = typer.Option("table", "-o", "--output", help="table | yaml | json"),
        url: str = URL_OPTION,
    ) -> None:
        """Show KServe resources with their current status (like kubectl get)."""
        _get(url, kind, name, namespace, all_namespaces, output)

    @app.command()
    @with_connection_flags
    def delete(
        kind: str = typer.Argument(..., help=KIND_ARG_HELP),
        name: str = typer.Argument(..., help="Name of the resource."),
        namespace: str = typer.Option("default", "-n", "--namespace", help="Namespace."),
        url: str = URL_OPTION,
    ) -> None:
        """Delete a KServe resource (an InferenceService's vmodel and models go with it)."""
        full_kind, plural = _kind(kind)
        path = (f"/mesh/v1/{plural}/{name}" if full_kind == "ClusterServingRuntime"
                else f"/mesh/v1/{plural}/{namespace}/{name}")
        _request(url, "DELETE", path)
        typer.echo(f'{plural[:-1]}.serving.kserve.io "{name}" deleted')
