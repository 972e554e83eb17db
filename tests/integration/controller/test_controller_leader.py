"""Leader election of two ``kserve-mesh controller`` processes through a coordination.k8s.io/v1
Lease, against kmock and a real mesh: one leads and reconciles, the other waits without starting
its operator; when the leader stops renewing (frozen with SIGSTOP, as a hung or partitioned
replica would be) the follower takes over after the lease duration and reconciles; the old leader,
thawed, finds the Lease gone and exits (status 1) instead of reconciling beside the new one; a
leader stopped on purpose hands the Lease back at once. Short lease times, bounded waits."""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Controller, Kube, wait_for
from mesh_process import MeshProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SYSTEM = "lead-system"
NS = "lead-a"
LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM}/leases/kserve-mesh-test-leader"
ISVCS = f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices"
# lease 3 s, the leader steps down after 2 s without a renewal, everyone retries every 0.3 s
FLAGS = ("--controller-namespace", SYSTEM, "--no-deployments", "--leader-election-lease", "kserve-mesh-test-leader",
         "--lease-duration", "3", "--lease-renew-deadline", "2", "--lease-retry-period", "0.3")


def isvc(name: str, storage_uri: str) -> dict[str, Any]:
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": name, "namespace": NS,
                         "annotations": {"serving.kserve.io/deploymentMode": "ModelMesh"}},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": storage_uri}}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def role(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
        return str(json.loads(resp.read())["role"])


def holder(kube: Kube) -> str:
    return ((kube.get(LEASE) or {}).get("spec") or {}).get("holderIdentity") or ""


def loaded(kube: Kube, name: str) -> bool:
    obj = kube.get(f"{ISVCS}/{name}") or {}
    return (((obj.get("status") or {}).get("modelStatus") or {}).get("states") or {}).get(
        "activeModelState") == "Loaded"


def test_one_leader_reconciles_and_a_follower_takes_over_when_its_lease_expires(
        kube: Kube, mesh: MeshProcess, start_controller: Callable[..., Controller], models_dir: Path) -> None:
    kube.namespace(SYSTEM, enabled=False)
    kube.namespace(NS, enabled=True)
    a_health, b_health = free_port(), free_port()
    a = start_controller(*FLAGS, "--health-port", str(a_health), env={"KSERVE_MESH_POD_NAME": "ctl-a"})
    assert holder(kube).startswith("ctl-a_")
    lease = kube.get(LEASE)
    assert lease["spec"]["leaseDurationSeconds"] == 3 and lease["spec"]["leaseTransitions"] == 0

    b = start_controller(*FLAGS, "--health-port", str(b_health), env={"KSERVE_MESH_POD_NAME": "ctl-b"},
                         started_when="waits; ctl-a_")
    # Both are alive for the kubelet; each says its role.
    assert role(a_health) == "leader" and role(b_health) == "follower"
    kube.create(ISVCS, isvc("iris-1", str(models_dir / "sklearn-iris")))
    wait_for("iris-1 Loaded by the leader", lambda: loaded(kube, "iris-1"), timeout=90, log=a.log)
    # The follower never started its operator: it watched, patched and posted nothing.
    assert "Initial authentication has finished" not in b.log()
    assert holder(kube).startswith("ctl-a_")  # renewed all along (lease 3 s, many seconds have passed)

    # The leader freezes: its Lease is no longer renewed, and the follower takes over after ~3 s.
    a.proc.send_signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        wait_for("the follower to take the Lease", lambda: holder(kube).startswith("ctl-b_"), timeout=30,
                 log=b.log)
        took = time.monotonic() - frozen_at
        assert 2.0 <= took < 20, took  # not before the lease duration has passed since the last renewal
        assert kube.get(LEASE)["spec"]["leaseTransitions"] == 1
        wait_for("the new leader's operator", lambda: "Initial authentication has finished" in b.log(),
                 timeout=60, log=b.log)
        assert role(b_health) == "leader"
        kube.create(ISVCS, isvc("iris-2", str(models_dir / "sklearn-iris")))
        wait_for("iris-2 Loaded by the new leader", lambda: loaded(kube, "iris-2"), timeout=90, log=b.log)
    finally:
        a.proc.send_signal(signal.SIGCONT)
    # Thawed, the old leader finds it could not renew (and another holds the Lease): it exits.
    wait_for("the old leader to step down and exit", lambda: a.proc.poll() is not None, timeout=30, log=a.log)
    assert a.proc.returncode == 1, a.log()[-3000:]
    assert "leadership lost" in a.log()
    assert holder(kube).startswith("ctl-b_")

    # A leader stopped on purpose hands the Lease back at once.
    b.proc.send_signal(signal.SIGTERM)
    assert b.proc.wait(30) == 0, b.log()[-3000:]
    assert holder(kube) == "", kube.get(LEASE)
    assert "released lease" in b.log()
