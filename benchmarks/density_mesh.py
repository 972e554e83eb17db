"""The mesh a density run measures: one local etcd and N instance processes, plus what is read off them.

Everything runs on 127.0.0.1 ephemeral ports and is stopped by its own handle (``DensityMesh`` is a
context manager; the instances are ``procs.ServerProcess`` handles, etcd an ``EtcdServer``), also
when the run fails or is interrupted. Instances run in their own session, so a Ctrl-C reaches the
benchmark only and the benchmark stops them in order.

Readings come from outside the processes, so measuring never changes what is measured: memory is
``VmRSS`` from ``/proc/<pid>/status``, CPU time ``utime + stime`` from ``/proc/<pid>/stat``, and
model counts the instances' own Prometheus gauges (``modelmesh_models_managed_total``: registered
models the instance knows of; ``modelmesh_instance_models_total``: copies it holds).
"""

from __future__ import annotations

import os
import re
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from procs import ProcessFailed, Processes, ServerProcess

from kserve_mesh.store.etcd_server import EtcdServer

READY = r"kserve-mesh ready: rest=(\S+) grpc=(\S+) metrics=(\S+)"
START_TIMEOUT_S = 120.0
_TICKS = os.sysconf("SC_CLK_TCK")
_GAUGE = r"^{name}(?:\{{[^}}]*\}})? (\S+)$"


def model_id(i: int) -> str:
    """The id of the i-th model of a run: short, fixed width, sorts in order (``d000042``)."""
    return f"d{i:06d}"


def write_model_files(folder: Path, count: int) -> list[Path]:
    """``count`` string-model files; file i's text is ``model_id(i)``, so an answer names its model.

    Model i of the run uses file ``i % count``: the loaded models (the first ``count``) each have
    their own file, the registered-only ones share them (they are never loaded).
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{model_id(i)}.string"
        path.write_text(model_id(i))
        paths.append(path)
    return paths


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (``VmRSS``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ProcessFailed(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15)


@dataclass
class InstanceHandle:
    """One mesh instance process and its endpoints."""

    name: str
    server: ServerProcess
    rest: str  # http://127.0.0.1:PORT
    grpc: str  # 127.0.0.1:PORT
    metrics: str  # http://127.0.0.1:PORT/metrics

    @property
    def pid(self) -> int:
        return self.server.pid()

    @property
    def rest_hostport(self) -> tuple[str, int]:
        host, port = self.rest.removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def gauge(self, name: str) -> float:
        with urllib.request.urlopen(self.metrics, timeout=30) as resp:
            text = resp.read().decode()
        m = re.search(_GAUGE.format(name=re.escape(name)), text, re.M)
        if m is None:
            raise ProcessFailed(f"{self.name}: metric {name} not found at {self.metrics}")
        return float(m.group(1))

    def registered(self) -> int:
        return int(self.gauge("modelmesh_models_managed_total"))

    def copies(self) -> int:
        return int(self.gauge("modelmesh_instance_models_total"))

    def check_alive(self) -> None:
        code = self.server.proc.poll()
        if code is not None:
            raise ProcessFailed(f"instance {self.name} exited with code {code}; log {self.server.log_path}:\n"
                                f"{self.server.log_tail()}")


class DensityMesh:
    """etcd + ``count`` instances (in-process runtime), started in ``__enter__``, stopped in ``__exit__``."""

    def __init__(self, count: int, capacity_bytes: int, log_dir: Path, *, max_loading_concurrency: int = 8,
                 etcd_fsync: bool = True, launcher: tuple[str, ...] = (sys.executable, "-m", "kserve_mesh.cli"),
                 models_dir: Path | None = None) -> None:
        self.count = count
        self.models_dir = models_dir  # the folder the registered model paths are in (--allow-local-path)
        self.launcher = launcher  # how an instance is started (an experiment may wrap the CLI)
        self.capacity_bytes = capacity_bytes
        self.log_dir = log_dir
        self.max_loading_concurrency = max_loading_concurrency
        self.etcd = EtcdServer(unsafe_no_fsync=not etcd_fsync, new_session=True)  # own temp dir, removed on close
        self.procs = Processes()
        self.instances: list[InstanceHandle] = []

    def __enter__(self) -> DensityMesh:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.etcd.start()
        servers = []
        for i in range(self.count):  # start all, then wait: their start-up overlaps
            name = f"i{i}"
            cmd = [*self.launcher, "instance", "--etcd-endpoints", self.etcd.client_url,
                   "--instance-id", name, "--rest-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                   "--capacity-bytes", str(self.capacity_bytes), "--runtime", "inprocess",
                   "--max-loading-concurrency", str(self.max_loading_concurrency), "--shutdown-grace-s", "0"]
            if self.models_dir is not None:
                cmd += ["--allow-local-path", str(self.models_dir)]
            servers.append((name, self.procs.server(name, cmd, READY, self.log_dir / f"{name}.log",
                                                    env={"KSERVE_MESH_LOG_LEVEL": "WARNING"})))
        for name, server in servers:
            m = server.wait_ready(START_TIMEOUT_S)
            self.instances.append(InstanceHandle(name, server, m.group(1), m.group(2), m.group(3)))
        self._wait_membership()

    def _wait_membership(self, timeout_s: float = 30.0) -> None:
        """Every instance sees every other one (so placement can choose among all of them)."""
        import json

        deadline = time.monotonic() + timeout_s
        while True:
            seen = []
            for inst in self.instances:
                inst.check_alive()
                with urllib.request.urlopen(inst.rest + "/mesh/v1/status", timeout=30) as resp:
                    seen.append(len(json.loads(resp.read())["instances"]))
            if all(n == self.count for n in seen):
                return
            if time.monotonic() > deadline:
                raise ProcessFailed(f"instances did not see each other within {timeout_s:g} s (saw {seen})")
            time.sleep(0.1)

    def check_alive(self) -> None:
        for inst in self.instances:
            inst.check_alive()
        if not self.etcd.running:
            raise ProcessFailed(f"etcd exited; log:\n{self.etcd.log_tail()}")

    def etcd_rss(self) -> int:
        pid = self.etcd.pid
        return rss_bytes(pid) if pid is not None else 0

    def etcd_cpu(self) -> float:
        pid = self.etcd.pid
        return cpu_seconds(pid) if pid is not None else 0.0

    def stop(self) -> None:
        self.procs.stop_all()  # instances first (they leave the mesh through etcd), then etcd
        self.etcd.close()


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs of the machine have been busy since boot (``/proc/stat``)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class CpuWatch:
    """CPU used during one phase by each process of the run, and by everything else on the machine.

    ``pids`` are live processes read from ``/proc``; ``children`` is a callable giving the CPU time of
    reaped children (the wrk processes of the phase); this process counts as ``client``.
    """

    def __init__(self, mesh: DensityMesh, children) -> None:  # type: ignore[no-untyped-def]
        self.mesh = mesh
        self.children = children
        self._t0 = time.monotonic()
        self._start = self._sample()

    def _sample(self) -> dict[str, float]:
        s = {inst.name: inst.cpu() for inst in self.mesh.instances}
        s["etcd"] = self.mesh.etcd_cpu()
        s["client"] = cpu_seconds(os.getpid())
        s["wrk"] = self.children()
        s["machine"] = machine_busy_seconds()
        return s

    def stop(self) -> dict[str, float]:
        """Mean CPU cores used per process over the phase (plus ``others``: the rest of the machine)."""
        end = self._sample()
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        used = {k: (end[k] - self._start[k]) / elapsed for k in end}
        machine = used.pop("machine")
        used["others"] = max(0.0, machine - sum(used.values()))
        return {k: round(v, 2) for k, v in used.items()}
