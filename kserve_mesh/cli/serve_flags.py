"""The options of the serving commands (``up``, ``instance``) that map one to one onto
``MeshSettings`` fields, and the settings they make."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from kserve_mesh.cli.output import fail


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
    "grpc_server": _opt("--grpc-server", help="native | grpcio: what serves the gRPC port, the mesh's own "
                        "HTTP/2 gRPC server (default) or grpcio's (same services; env KSERVE_MESH_GRPC_SERVER)."),
    "payload_processors": _opt("--payload-processors", help="Space-separated http(s):// URLs that receive every "
                               "inference request and response as CloudEvents (?modelId=ID: only that model)."),
    "payload_queue_size": _opt("--payload-queue-size", help="Payload events held per sink (default 10000); "
                               "when a sink falls behind, newer events are dropped and counted."),
    "per_model_metrics": _opt("--per-model-metrics/--no-per-model-metrics", help="Label request and model "
                              "metrics with modelId/vModelId (one series per model: mind the cardinality)."),
    "runtime_check_interval_s": _opt("--runtime-check-interval-s", help="Seconds between runtime status checks."),
    "runtime_check_timeout_s": _opt("--runtime-check-timeout-s", help="A runtime silent this long is hung "
                                    "(a child runtime is restarted)."),
    "runtime_link": _opt("--runtime-link", help="frames | grpc: how inference reaches the runtime child "
                         "(--runtime process): a framed link over a Unix socket, or gRPC (default frames; env "
                         "KSERVE_MESH_RUNTIME_LINK)."),
    "runtime_allocator": _opt("--runtime-allocator", help="glibc | jemalloc: the allocator of the runtime child "
                              "(--runtime process); jemalloc needs libjemalloc2 (issue 16)."),
    "batch_max_size": _opt("--batch-max-size", help="Adaptive batching: rows per model call at most (default "
                           "32; 0 or 1: off), for models that take a batch dimension (env "
                           "KSERVE_MESH_BATCH_MAX_SIZE)."),
    "batch_max_delay_ms": _opt("--batch-max-delay-ms", help="Adaptive batching: longest a request waits for "
                               "others, in ms (default 0: no deliberate wait; env KSERVE_MESH_BATCH_MAX_DELAY_MS)."),
    "eviction_policy": _opt("--eviction-policy", help="lru | adaptive: which model copies the cache evicts "
                            "first (default lru, ModelMesh's; adaptive weighs frequency, size, load time and "
                            "recency, issue 12)."),
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


def with_security_flags(fn: Any) -> Any:
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
    "grpc_max_concurrent_rpcs": Optional[int], "grpc_server": Optional[str], "payload_processors": Optional[str],
    "payload_queue_size": Optional[int], "per_model_metrics": Optional[bool],
    "runtime_check_interval_s": Optional[float], "runtime_check_timeout_s": Optional[float],
    "runtime_allocator": Optional[str], "runtime_link": Optional[str], "eviction_policy": Optional[str],
    "batch_max_size": Optional[int], "batch_max_delay_ms": Optional[float],
    "tls_cert": Optional[Path], "tls_key": Optional[Path], "tls_client_ca": Optional[Path],
    "tls_client_auth": Optional[str], "tls_ca": Optional[Path], "tls_server_name": Optional[str],
    "tls_metrics": Optional[bool], "auth": Optional[str], "auth_file": Optional[Path],
    "peer_token_file": Optional[Path],
}


def security_args(flags: dict[str, Any]) -> list[str]:
    """The security flags a command was given, as command-line arguments for an instance process."""
    args: list[str] = []
    for name, value in security_kwargs(flags).items():
        flag = SECURITY_FLAGS[name].param_decls[0].split("/")[0]
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag.removeprefix("--"))
        elif isinstance(value, tuple):
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return args


def security_kwargs(flags: dict[str, Any]) -> dict[str, Any]:
    """The security flags a command was given, as MeshSettings keyword arguments (lists → tuples)."""
    out = {name: flags.get(name) for name in SECURITY_FLAGS}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in out.items() if v not in (None, [])}


def mesh_settings(**flags: Any):  # type: ignore[no-untyped-def]
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
        fail("invalid settings: " + "; ".join(parts))
