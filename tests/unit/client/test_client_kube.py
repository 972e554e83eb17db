"""``apply`` / ``isvcs`` / ``isvc`` / ``delete_isvc`` over the KServe-integration routes, against a
stub server that answers them (the mesh's own routes are being added by the KServe integration),
plus the YAML checks the client makes before sending anything, and the bearer token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kserve_mesh.client import InvalidInputError, NotFoundError, connect

ISVC_YAML = """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: iris
  namespace: team-a
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
spec:
  predictor:
    model:
      modelFormat: {name: sklearn}
      storageUri: s3://models/iris
"""


def test_apply_posts_yaml_and_returns_the_actions(kube_stub: Any) -> None:
    with connect(kube_stub.url) as mesh:
        result = mesh.apply(ISVC_YAML)
    assert result == [{"kind": "InferenceService", "namespace": "team-a", "name": "iris", "action": "created"}]
    method, path, headers, body = kube_stub.requests[-1]
    assert (method, path) == ("POST", "/mesh/v1/apply")
    assert headers["content-type"] == "application/yaml"
    assert body.decode() == ISVC_YAML


def test_apply_reads_a_file(kube_stub: Any, tmp_path: Path) -> None:
    path = tmp_path / "isvc.yaml"
    path.write_text(ISVC_YAML + "---\n" + ISVC_YAML.replace("name: iris", "name: iris-2"))
    with connect(kube_stub.url) as mesh:
        assert mesh.apply(path)[0]["action"] == "created"
        assert mesh.apply(str(path))[0]["name"] == "iris"
    assert kube_stub.requests[-1][3].decode().count("kind: InferenceService") == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: InferenceService\nmetadata: {name: [x\n", r"invalid YAML at line 3, column 1"),
        ("", "the YAML is empty"),
        ("---\n---\n", "holds no document"),
        ("- a\n- b\n", "document 1 is not a Kubernetes object"),
        ("missing.yaml", "cannot read missing.yaml"),
    ],
)
def test_apply_refuses_bad_yaml_before_sending(kube_stub: Any, text: str, message: str) -> None:
    with connect(kube_stub.url) as mesh:
        with pytest.raises(InvalidInputError, match=message):
            mesh.apply(text)
    assert kube_stub.requests == []


def test_apply_carries_the_server_message(kube_stub: Any) -> None:
    with connect(kube_stub.url) as mesh:
        with pytest.raises(InvalidInputError, match="spec.predictor is required") as err:
            mesh.apply("kind: Broken\nmetadata: {name: x}\n")
    assert err.value.status == 400


def test_isvcs_lists_and_filters_by_namespace(kube_stub: Any) -> None:
    with connect(kube_stub.url) as mesh:
        assert [i["metadata"]["name"] for i in mesh.isvcs()] == ["iris", "wine"]
        assert [i["metadata"]["name"] for i in mesh.isvcs("team-b")] == ["wine"]
        assert mesh.isvcs("nobody") == []
        assert mesh.isvc("team-a", "iris")["status"]["url"] == "http://iris.team-a"
        mesh.delete_isvc("team-a", "iris")
        with pytest.raises(NotFoundError, match="team-a/nope not found"):
            mesh.isvc("team-a", "nope")
        with pytest.raises(NotFoundError, match="not found"):
            mesh.delete_isvc("team-a", "nope")
    paths = [(m, p) for m, p, _, _ in kube_stub.requests]
    assert ("GET", "/mesh/v1/inferenceservices?namespace=team-b") in paths
    assert ("DELETE", "/mesh/v1/inferenceservices/team-a/iris") in paths


def test_token_is_sent_as_bearer(kube_stub: Any) -> None:
    with connect(kube_stub.url, token="s3cret") as mesh:
        mesh.isvcs()
    with connect(kube_stub.url) as mesh:
        mesh.isvcs()
    assert kube_stub.requests[0][2]["authorization"] == "Bearer s3cret"
    assert "authorization" not in kube_stub.requests[1][2]
