"""What TLS and authentication cost, measured side by side in one run.

    python benchmarks/tls.py [--model sklearn-iris] [--requests N] [--rounds R] [--concurrency C]
                             [--seconds S] [--json OUT]

Three meshes (``kserve-mesh up``, in-process runtime, one model loaded), all on 127.0.0.1 ephemeral
ports, started and stopped by this script:

    plain   no TLS, no authentication (the loopback default)
    tls     TLS on REST and gRPC, bearer token required (``--auth on``)
    mtls    TLS with client certificates required; the certificate names the caller (no token)

For each mesh and transport (V2 REST JSON, V2 gRPC): sequential latency (one client, N requests
after a warm-up, interleaved over R rounds so drift spreads over every mesh alike; p50/p99) and
throughput (C clients on keep-alive connections for S seconds). Connections are reused, as real
clients do, so the handshake is paid once per connection; the per-request cost is encryption and
the token check. Load comes from ``loadgen.py`` processes (pre-encoded requests), never from a
server's own process. A test CA from ``trustme`` signs every certificate.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if importlib.util.find_spec("kserve_mesh") is None:  # run from a checkout without an install
    sys.path.insert(0, str(ROOT))

from latency import make_model
from procs import Processes
from rich.console import Console
from rich.table import Table

TOKEN = "benchmark-token-0123456789abcdef"
READY = r"kserve-mesh ready: rest=(\S+) grpc=(\S+) metrics=(\S+)"
MESHES = ("plain", "tls", "mtls")


@dataclass
class Row:
    mesh: str
    transport: str
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    throughput_rps: float = 0.0
    errors: int = 0
    first_error: str = ""
    samples_ns: list[int] = field(default_factory=list, repr=False)


def make_pki(work: Path) -> dict[str, Path]:
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    files = {"ca": work / "ca.pem", "cert": work / "tls.crt", "key": work / "tls.key", "client": work / "client.pem",
             "auth": work / "auth.yaml"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.cert_chain_pems[0].write_to_path(str(files["cert"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    ca.issue_cert("bench.example", common_name="bench").private_key_and_cert_chain_pem.write_to_path(str(files["client"]))
    files["auth"].write_text(json.dumps({"tokens": [{"name": "bench", "role": "admin", "token": TOKEN}],
                                         "identities": [{"name": "bench", "role": "admin", "subject": "bench"}]}))
    return files


def mesh_args(kind: str, pki: dict[str, Path]) -> list[str]:
    tls = ["--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"])]
    if kind == "plain":
        return []
    if kind == "tls":
        return [*tls, "--auth", "on", "--auth-file", str(pki["auth"])]
    return [*tls, "--tls-client-ca", str(pki["ca"]), "--tls-client-auth", "require", "--auth", "on",
            "--auth-file", str(pki["auth"])]


def client_env(kind: str, pki: dict[str, Path]) -> dict[str, str]:
    if kind == "plain":
        return {}
    if kind == "tls":
        return {"LOADGEN_CA": str(pki["ca"]), "LOADGEN_TOKEN": TOKEN}
    return {"LOADGEN_CA": str(pki["ca"]), "LOADGEN_CERT": str(pki["client"])}


def load_model(rest: str, model: str, kind: str, pki: dict[str, Path]) -> None:
    import ssl

    ctx = None
    headers = {}
    if kind != "plain":
        ctx = ssl.create_default_context(cafile=str(pki["ca"]))
        if kind == "mtls":
            ctx.load_cert_chain(str(pki["client"]))
        else:
            headers["authorization"] = f"Bearer {TOKEN}"
    req = urllib.request.Request(f"{rest}/v2/repository/models/{model}/load", data=b"", method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=120, context=ctx) as resp:
        resp.read()


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from kserve_mesh.protocol import rest as codec

    with tempfile.TemporaryDirectory(prefix="kserve-mesh-tls-bench-") as tmp, Processes() as procs:
        work = Path(tmp)
        models = work / "models"
        models.mkdir()
        entry = make_model(args.model, models)
        pki = make_pki(work)
        rest_body = json.dumps(entry["request"]).encode()
        request, _ = codec.parse_infer_request(rest_body, args.model)
        bodies = {"rest": work / "request.json", "grpc": work / "request.pb"}
        bodies["rest"].write_bytes(rest_body)
        bodies["grpc"].write_bytes(request.SerializeToString())
        quiet = {"KSERVE_MESH_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
        servers = {kind: procs.server(kind, [sys.executable, "-m", "kserve_mesh.cli", "up", "--models", str(models),
                                             "--rest-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                                             *mesh_args(kind, pki)], READY, work / f"{kind}.log", quiet)
                   for kind in MESHES}
        addresses: dict[str, dict[str, str]] = {}
        for kind, server in servers.items():
            m = server.wait_ready(120)
            addresses[kind] = {"rest": m.group(1), "grpc": m.group(2)}
            load_model(m.group(1), args.model, kind, pki)
        gens = {(kind, t): procs.loadgen(f"{kind}-{t}", t, addresses[kind][t], args.model, bodies[t],
                                         client_env(kind, pki))
                for kind in MESHES for t in ("rest", "grpc")}
        rows = {key: Row(*key) for key in gens}
        console.print(f"measuring {len(rows)} rows: {args.rounds} rounds x {args.requests} sequential requests, "
                      f"then {args.seconds:g} s at concurrency {args.concurrency} each")
        for _ in range(args.rounds):
            for key, gen in gens.items():
                answer = gen.ask(op="seq", n=args.requests, warmup=50)
                rows[key].samples_ns += answer["samples_ns"]
                rows[key].errors += answer["errors"]
                rows[key].first_error = rows[key].first_error or answer["error"]
        for key, gen in gens.items():
            answer = gen.ask(op="tput", concurrency=args.concurrency, seconds=args.seconds)
            rows[key].throughput_rps = answer["count"] / answer["seconds"]
            rows[key].errors += answer["errors"]
            rows[key].first_error = rows[key].first_error or answer["error"]
        for row in rows.values():
            ms = np.asarray(row.samples_ns, dtype=np.float64) / 1e6
            row.p50_ms, row.p99_ms = (float(v) for v in np.percentile(ms, [50, 99]))
    table = Table(title=f"TLS and authentication: {args.model}, {args.rounds}x{args.requests} sequential, "
                        f"{args.concurrency} clients for {args.seconds:g} s")
    for col in ("mesh", "transport", "p50 ms", "p99 ms", "req/s", "p50 vs plain", "req/s vs plain", "errors"):
        table.add_column(col, justify="left" if col in ("mesh", "transport") else "right")
    out: dict[str, Any] = {"model": args.model, "rows": []}
    for (kind, transport), row in rows.items():
        base = rows[("plain", transport)]
        added = row.p50_ms - base.p50_ms
        ratio = row.throughput_rps / base.throughput_rps if base.throughput_rps else 0.0
        table.add_row(kind, transport, f"{row.p50_ms:.3f}", f"{row.p99_ms:.3f}", f"{row.throughput_rps:,.0f}",
                      f"{added:+.3f} ms" if kind != "plain" else "-", f"{ratio:.2f}x" if kind != "plain" else "-",
                      str(row.errors))
        out["rows"].append({**{k: v for k, v in asdict(row).items() if k != "samples_ns"},
                            "added_p50_ms": added, "throughput_ratio": ratio})
    console.print(table)
    if any(r.errors for r in rows.values()):
        console.print("[red]errors:[/red] " + "; ".join(f"{k}: {r.first_error}" for k, r in rows.items() if r.errors))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="sklearn-iris")
    p.add_argument("--requests", type=int, default=500, help="sequential requests per row and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    console = Console()
    began = time.monotonic()
    out = run(args, console)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2))
    console.print(f"done in {time.monotonic() - began:.0f} s")
    return 1 if any(r["errors"] for r in out["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
