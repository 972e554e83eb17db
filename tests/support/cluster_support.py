"""Helpers for tests of a mesh of several instances: start etcd + N instance processes, call them,
and watch every instance's used bytes against its capacity through its metrics."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mesh_process import MeshProcess

from kserve_mesh.store.etcd_server import EtcdServer

USED = re.compile(r"^modelmesh_instance_used_bytes(?:\{[^}]*\})? (\S+)$", re.M)
CAPACITY = re.compile(r"^modelmesh_instance_capacity_bytes(?:\{[^}]*\})? (\S+)$", re.M)


def string_models(root: Path, ids: list[str], pad: int = 1000) -> Path:
    for model_id in ids:
        (root / model_id).mkdir(parents=True, exist_ok=True)
        (root / model_id / "model.string").write_text(f"{model_id}:" + "z" * pad)
    return root


def string_request() -> dict:
    return {"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}


@dataclass
class Mesh:
    etcd: EtcdServer
    instances: list[MeshProcess]
    capacity_violations: list[str] = field(default_factory=list)
    samples: int = 0

    def infer(self, i: int, model_id: str, timeout: float = 30.0) -> tuple[int, object]:
        return self.instances[i].call("POST", f"/v2/models/{model_id}/infer", string_request(), timeout=timeout)

    def placements(self, i: int = 0) -> dict[str, list[str]]:
        return self.instances[i].call("GET", "/mesh/v1/status")[1]["placements"]

    def holders(self, model_id: str, i: int = 0, timeout: float = 15.0) -> list[str]:
        """The instances holding ``model_id`` as instance ``i`` sees them, once it sees one (a copy
        loaded on a peer reaches this view through the store a moment later)."""
        deadline = time.monotonic() + timeout
        while not (where := self.placements(i).get(model_id)):
            if time.monotonic() > deadline:
                raise AssertionError(f"instance {i} never saw a copy of {model_id}")
            time.sleep(0.05)
        return where

    def instance_ids(self) -> list[str]:
        return [p.call("GET", "/mesh/v1/status")[1]["instanceId"] for p in self.instances]

    def watch_capacity(self, stop: threading.Event) -> threading.Thread:
        """Scrape every live instance's metrics until ``stop``; record any used > capacity."""
        def run() -> None:
            while not stop.is_set():
                for p in self.instances:
                    if p.proc.poll() is not None:
                        continue
                    try:
                        text = p.metrics_text()
                    except OSError:
                        continue
                    used, cap = USED.search(text), CAPACITY.search(text)
                    if used and cap:
                        self.samples += 1
                        if float(used.group(1)) > float(cap.group(1)):
                            self.capacity_violations.append(f"{p.rest}: {used.group(1)} > {cap.group(1)}")
                time.sleep(0.05)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


def start_mesh(etcd: EtcdServer, n: int, *args: str) -> Mesh:
    instances: list[MeshProcess] = []
    try:
        for i in range(n):
            instances.append(MeshProcess.start("--etcd-endpoints", etcd.client_url, "--instance-id", f"i{i}",
                                               "--shutdown-grace-s", "8", *args, command="instance", timeout=90))
    except BaseException:
        for p in instances:
            p.stop()
        raise
    mesh = Mesh(etcd, instances)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # every instance sees all the others
        if all(len(p.call("GET", "/mesh/v1/status")[1]["instances"]) == n for p in instances):
            return mesh
        time.sleep(0.1)
    raise AssertionError("instances did not see each other")


