"""The controller against the most real Kubernetes API that runs here (kmock, FACTS.md) and a real
mesh: InferenceServices become vmodels with status, runtime Deployments and a Service appear,
Serverless InferenceServices and namespaces not labelled modelmesh-enabled are left alone, load
failures become Warning Events, deletion removes the vmodel and scales the runtime to zero; each
namespace gets its tokens Secret before its runtime pods, tls.secretName gates the pods on a usable
TLS Secret and secures them, and config keys without effect are Warning Events."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from conftest import ROOT, Controller, Kube, wait_for
from mesh_process import MeshProcess
from slow_http import serve_dir

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ISVCS = "/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices"
PREDICTORS = "/apis/serving.kserve.io/v1alpha1/namespaces/{ns}/predictors"
MODELMESH = {"serving.kserve.io/deploymentMode": "ModelMesh"}
CONTROLLER_NS = "mesh-system"


def isvc(name: str, ns: str, storage_uri: str, *, modelmesh: bool = True, fmt: str = "sklearn") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if modelmesh:
        meta["annotations"] = dict(MODELMESH)
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": meta,
            "spec": {"predictor": {"model": {"modelFormat": {"name": fmt}, "storageUri": storage_uri}}}}


def states(obj: dict[str, Any] | None) -> dict[str, Any]:
    return ((obj or {}).get("status") or {}).get("modelStatus") or {}


def ok_body(reply: tuple[int, Any]) -> Any:
    return reply[1] if reply[0] == 200 else None


def events_for(kube: Kube, ns: str, name: str) -> list[dict[str, Any]]:
    listing = kube.get(f"/api/v1/namespaces/{ns}/events") or {"items": []}
    return [e for e in listing["items"] if e.get("involvedObject", {}).get("name") == name]


@pytest.fixture(scope="module")
def controller(kube: Kube, start_controller: Callable[..., Controller]) -> Controller:
    kube.namespace(CONTROLLER_NS, enabled=False)
    kube.create(f"/api/v1/namespaces/{CONTROLLER_NS}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "model-serving-config"},
        "data": {"config.yaml": "podsPerRuntime: 1\nscaleToZero: {enabled: true, gracePeriodSeconds: 0}\n"
                                "enableAccessLogging: true\npodsPerRutnime: 3\nheadlessService: 'no'\n"
                                "imagePullSecrets: [{name: regcred}]\n"}})
    return start_controller("--controller-namespace", CONTROLLER_NS)


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def mm_container(dep: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "mm")


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_modelmesh_isvc_is_served_with_status_and_runtime_deployment(
        kube: Kube, mesh: MeshProcess, controller: Controller, models_dir: Path) -> None:
    ns = "team-a"
    kube.namespace(ns, enabled=True)
    path = ISVCS.format(ns=ns)
    # A slow model server: the load takes seconds, so Loading shows up before Loaded.
    with serve_dir(models_dir, delay_s=2.0) as base:
        kube.create(path, isvc("iris-a", ns, f"{base}/sklearn-iris/model.joblib"))
        kube.create(path, isvc("iris-serverless", ns, str(models_dir / "sklearn-iris"), modelmesh=False))

        vmodel = wait_for("the vmodel in the mesh", lambda: ok_body(mesh.call("GET", "/mesh/v1/vmodels/iris-a")),
                          log=controller.log)
        assert vmodel["activeModelId"].startswith("iris-a__isvc-")
        seen: list[str] = []

        def loaded() -> dict[str, Any] | None:
            obj = kube.get(f"{path}/iris-a")
            state = states(obj).get("states", {}).get("activeModelState")
            if state and (not seen or seen[-1] != state):
                seen.append(state)
            return obj if state == "Loaded" else None

        obj = wait_for("iris-a to be Loaded", loaded, timeout=90, interval=0.1, log=controller.log)
    assert "Loading" in seen, seen
    status = obj["status"]
    assert status["modelStatus"]["transitionStatus"] == "UpToDate"
    assert status["modelStatus"]["copies"]["totalCopies"] >= 1
    assert status["url"] == "grpc://modelmesh-serving.team-a:8033"
    assert status["components"]["predictor"]["restUrl"] == "http://modelmesh-serving.team-a:8008"
    ready = {c["type"]: c["status"] for c in status["conditions"]}
    assert ready["PredictorReady"] == "True"
    assert obj["metadata"]["finalizers"] == ["kserve-mesh.kserve.io/finalizer"]

    # The runtime in use runs as a Deployment (config from the ConfigMap: podsPerRuntime 1), behind the Service.
    dep = wait_for("the runtime Deployment", lambda: kube.get(
        f"/apis/apps/v1/namespaces/{ns}/deployments/modelmesh-serving-kserve-mesh-python"), log=controller.log)
    assert dep["spec"]["replicas"] == 1
    containers = {c["name"]: c for c in dep["spec"]["template"]["spec"]["containers"]}
    assert set(containers) == {"mm", "kserve-mesh-runtime"}
    assert containers["mm"]["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "ClusterServingRuntime"
    svc = wait_for("the Service", lambda: kube.get(f"/api/v1/namespaces/{ns}/services/modelmesh-serving"))
    assert {p["port"] for p in svc["spec"]["ports"]} == {8033, 8008, 2112}

    # The namespace's tokens Secret exists, and the instance authenticates with it.
    secret = kube.get(f"/api/v1/namespaces/{ns}/secrets/modelmesh-serving-auth")
    tokens = decoded(secret)
    assert set(tokens) == {"auth.yaml", "admin-token", "infer-token", "peer-token"}
    assert len({tokens["admin-token"], tokens["infer-token"], tokens["peer-token"].strip()}) == 3
    assert tokens["admin-token"] in tokens["auth.yaml"]
    mm = mm_container(dep)
    assert flag(mm["args"], "--host") == "0.0.0.0" and flag(mm["args"], "--auth") == "on"
    assert flag(mm["args"], "--auth-file") == "/etc/kserve-mesh/auth/auth.yaml"
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["mesh-auth"]["secret"]["secretName"] == "modelmesh-serving-auth"
    assert not any(a.startswith("--tls") for a in mm["args"])  # no tls.secretName in this config
    # The config key with no effect was reported on the ConfigMap, once.
    reported = wait_for("a Warning Event on the ConfigMap", lambda: [
        e for e in events_for(kube, CONTROLLER_NS, "model-serving-config") if e["reason"] == "ConfigKeyHasNoEffect"],
        log=controller.log)
    assert len(reported) == 1 and reported[0]["message"].startswith("enableAccessLogging:")
    assert reported[0]["type"] == "Warning" and reported[0]["involvedObject"]["kind"] == "ConfigMap"
    assert "enableAccessLogging" in controller.log()
    # An unknown key and a bad value are Events naming them; the rest of the config was used
    # (podsPerRuntime 1 above, imagePullSecrets here; headlessService kept its default).
    by_reason = {e["reason"]: e["message"] for e in events_for(kube, CONTROLLER_NS, "model-serving-config")}
    assert by_reason["ConfigKeyUnknown"].startswith("podsPerRutnime: unknown key")
    assert by_reason["ConfigKeyInvalid"].startswith("headlessService: must be true or false")
    assert dep["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert svc["spec"]["clusterIP"] == "None"

    # The Serverless InferenceService was never touched: no status, no finalizer, no annotation, no vmodel.
    other = kube.get(f"{path}/iris-serverless")
    assert "status" not in other
    assert "finalizers" not in other["metadata"]
    assert set(other["metadata"].get("annotations") or {}) == set()
    assert mesh.call("GET", "/mesh/v1/vmodels/iris-serverless")[0] == 404

    # Deleting the InferenceService removes its vmodel, releases the object, and the unused runtime
    # scales to zero (grace period 0 in the ConfigMap).
    assert kube.call("DELETE", f"{path}/iris-a")[0] == 200
    wait_for("the vmodel to go", lambda: mesh.call("GET", "/mesh/v1/vmodels/iris-a")[0] == 404, log=controller.log)
    wait_for("the object to go", lambda: kube.get(f"{path}/iris-a") is None, log=controller.log)
    wait_for("the runtime to scale to zero", lambda: kube.get(
        f"/apis/apps/v1/namespaces/{ns}/deployments/modelmesh-serving-kserve-mesh-python")["spec"]["replicas"] == 0,
        log=controller.log)


def test_load_failures_and_missing_runtimes_become_status_and_events(
        kube: Kube, mesh: MeshProcess, controller: Controller, tmp_path: Path) -> None:
    ns = "team-b"
    kube.namespace(ns, enabled=True)
    path = ISVCS.format(ns=ns)
    kube.create(path, isvc("missing-b", ns, str(tmp_path / "no-such-model")))
    kube.create(path, isvc("pmml-b", ns, str(tmp_path), fmt="pmml"))

    def failed(name: str, reason: str) -> Callable[[], dict[str, Any] | None]:
        def probe() -> dict[str, Any] | None:
            model_status = states(kube.get(f"{path}/{name}"))
            info = model_status.get("lastFailureInfo") or {}
            active = model_status.get("states", {}).get("activeModelState")
            return info if info.get("reason") == reason and active == "FailedToLoad" else None
        return probe

    info = wait_for("missing-b to fail to load", failed("missing-b", "ModelLoadFailed"), timeout=90,
                    log=controller.log)
    assert info["modelRevisionName"].startswith("missing-b__isvc-") and info["message"]
    obj = kube.get(f"{path}/missing-b")
    assert {c["type"]: c["status"] for c in obj["status"]["conditions"]}["PredictorReady"] == "False"
    event = wait_for("a Warning Event for missing-b", lambda: [
        e for e in events_for(kube, ns, "missing-b") if e["reason"] == "ModelLoadFailed"], log=controller.log)[0]
    assert event["type"] == "Warning" and event["involvedObject"]["kind"] == "InferenceService"

    info = wait_for("pmml-b to report NoSupportingRuntime", failed("pmml-b", "NoSupportingRuntime"), log=controller.log)
    assert "pmml" in info["message"]
    wait_for("a Warning Event for pmml-b", lambda: [
        e for e in events_for(kube, ns, "pmml-b") if e["reason"] == "NoSupportingRuntime"], log=controller.log)
    # One event per failure, not one per status pass.
    assert len([e for e in events_for(kube, ns, "pmml-b") if e["reason"] == "NoSupportingRuntime"]) == 1


def test_predictors_are_served_and_unlabelled_namespaces_ignored(
        kube: Kube, mesh: MeshProcess, controller: Controller, models_dir: Path) -> None:
    kube.namespace("team-c", enabled=True)
    kube.namespace("elsewhere", enabled=False)
    kube.create(ISVCS.format(ns="elsewhere"), isvc("iris-elsewhere", "elsewhere", str(models_dir / "sklearn-iris")))
    kube.create(PREDICTORS.format(ns="team-c"), {
        "apiVersion": "serving.kserve.io/v1alpha1", "kind": "Predictor",
        "metadata": {"name": "iris-predictor", "namespace": "team-c"},
        "spec": {"modelType": {"name": "sklearn"}, "path": str(models_dir / "sklearn-iris")}})
    def predictor_loaded() -> dict[str, Any] | None:
        o = kube.get(f"{PREDICTORS.format(ns='team-c')}/iris-predictor")
        return o if (o or {}).get("status", {}).get("activeModelState") == "Loaded" else None

    obj = wait_for("the Predictor to be Loaded", predictor_loaded, timeout=90, log=controller.log)
    assert obj["status"]["available"] is True
    assert mesh.call("GET", "/mesh/v1/vmodels/iris-predictor")[1]["owner"] == "ksp"
    # By now the controller has handled later events: the InferenceService of the unlabelled
    # namespace got nothing.
    other = kube.get(f"{ISVCS.format(ns='elsewhere')}/iris-elsewhere")
    assert "status" not in other and "finalizers" not in other["metadata"]
    assert set(other["metadata"]["annotations"]) == set(MODELMESH)
    assert mesh.call("GET", "/mesh/v1/vmodels/iris-elsewhere")[0] == 404

    # Labelling the namespace later brings its InferenceService in.
    assert kube.call("PATCH", "/api/v1/namespaces/elsewhere",
                     {"metadata": {"labels": {"modelmesh-enabled": "true"}}})[0] == 200
    wait_for("iris-elsewhere to be Loaded", lambda: states(kube.get(
        f"{ISVCS.format(ns='elsewhere')}/iris-elsewhere")).get("states", {}).get("activeModelState") == "Loaded",
        timeout=90, log=controller.log)


def test_namespace_scope_serves_its_namespace_only_with_namespaced_runtimes(
        kube: Kube, mesh: MeshProcess, controller: Controller, start_controller: Callable[..., Controller],
        models_dir: Path) -> None:
    # Neither namespace is labelled: the cluster-scope controller leaves both alone.
    kube.namespace("scoped", enabled=False)
    kube.namespace("scoped-other", enabled=False)
    runtime = yaml.safe_load((ROOT / "manifests/base/runtimes/kserve-mesh-python.yaml").read_text())
    runtime["kind"] = "ServingRuntime"
    runtime["metadata"]["namespace"] = "scoped"
    kube.create("/apis/serving.kserve.io/v1alpha1/namespaces/scoped/servingruntimes", runtime)
    scoped = start_controller("--namespace", "scoped", "--no-deployments")
    kube.create(ISVCS.format(ns="scoped-other"), isvc("iris-scoped-other", "scoped-other",
                                                       str(models_dir / "sklearn-iris")))
    kube.create(ISVCS.format(ns="scoped"), isvc("iris-scoped", "scoped", str(models_dir / "sklearn-iris")))
    def scoped_loaded() -> dict[str, Any] | None:
        o = kube.get(f"{ISVCS.format(ns='scoped')}/iris-scoped")
        return o if states(o).get("states", {}).get("activeModelState") == "Loaded" else None

    obj = wait_for("iris-scoped to be Loaded", scoped_loaded, timeout=90, log=scoped.log)
    assert obj["status"]["url"] == "grpc://modelmesh-serving.scoped:8033"
    assert kube.get("/apis/apps/v1/namespaces/scoped/deployments")["items"] == []  # --no-deployments
    other = kube.get(f"{ISVCS.format(ns='scoped-other')}/iris-scoped-other")
    assert "status" not in other and "finalizers" not in other["metadata"]
    assert mesh.call("GET", "/mesh/v1/vmodels/iris-scoped-other")[0] == 404


def test_tls_secret_gates_the_runtime_pods_and_secures_them(
        kube: Kube, controller: Controller, start_controller: Callable[..., Controller], models_dir: Path) -> None:
    """A second controller, scoped to one namespace, whose config names a TLS Secret with mutual TLS."""
    ns = "secure"
    kube.namespace(ns, enabled=False)  # the cluster-scope controller leaves it alone
    kube.create(f"/api/v1/namespaces/{CONTROLLER_NS}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "secure-config"},
        "data": {"config.yaml": "podsPerRuntime: 1\ntls: {secretName: mesh-tls, clientAuth: require}\n"}})
    runtime = yaml.safe_load((ROOT / "manifests/base/runtimes/kserve-mesh-python.yaml").read_text())
    runtime["kind"] = "ServingRuntime"
    runtime["metadata"]["namespace"] = ns
    kube.create(f"/apis/serving.kserve.io/v1alpha1/namespaces/{ns}/servingruntimes", runtime)
    scoped = start_controller("--namespace", ns, "--controller-namespace", CONTROLLER_NS,
                              "--config-map", "secure-config")
    kube.create(ISVCS.format(ns=ns), isvc("iris-secure", ns, str(models_dir / "sklearn-iris")))
    deployment = f"/apis/apps/v1/namespaces/{ns}/deployments/modelmesh-serving-kserve-mesh-python"

    # No TLS Secret yet: a Warning Event naming it, and no runtime pods that could not start.
    event = wait_for("a TLSSecretMissing Event", lambda: [
        e for e in events_for(kube, ns, "mesh-tls") if e["reason"] == "TLSSecretMissing"], log=scoped.log)[0]
    assert event["type"] == "Warning" and "mesh-tls" in event["message"]
    assert kube.get(deployment) is None
    assert kube.get(f"/api/v1/namespaces/{ns}/secrets/modelmesh-serving-auth") is not None  # made first

    # The Secret arrives (as cert-manager would make it): the Deployment follows, with mutual TLS.
    ca = trustme.CA()
    cert = ca.issue_cert(f"modelmesh-serving.{ns}")
    data = {"tls.crt": cert.cert_chain_pems[0].bytes(), "tls.key": cert.private_key_pem.bytes(),
            "ca.crt": ca.cert_pem.bytes()}
    kube.create(f"/api/v1/namespaces/{ns}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": "mesh-tls"},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()}})
    dep = wait_for("the runtime Deployment", lambda: kube.get(deployment), timeout=90, log=scoped.log)
    mm = mm_container(dep)
    args = mm["args"]
    assert flag(args, "--tls-cert") == "/etc/kserve-mesh/tls/tls.crt"
    assert flag(args, "--tls-client-ca") == flag(args, "--tls-ca") == "/etc/kserve-mesh/tls/ca.crt"
    assert flag(args, "--tls-client-auth") == "require"
    assert flag(args, "--tls-server-name") == f"modelmesh-serving.{ns}"
    assert "exec" in mm["readinessProbe"]  # the kubelet has no client certificate
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["mesh-tls"]["secret"]["secretName"] == "mesh-tls"
    svc = wait_for("the Service", lambda: kube.get(f"/api/v1/namespaces/{ns}/services/modelmesh-serving"))
    assert {p["port"] for p in svc["spec"]["ports"]} == {8033, 8008, 2112}  # ports unchanged
    rest = wait_for("the https restUrl", lambda: (((kube.get(f"{ISVCS.format(ns=ns)}/iris-secure") or {}).get(
        "status") or {}).get("components") or {}).get("predictor", {}).get("restUrl"), log=scoped.log)
    assert rest == f"https://modelmesh-serving.{ns}:8008"
