"""The client SDK's apply / isvcs against a real mesh (the KServe routes mounted in the server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mesh_process import MeshProcess

from kserve_mesh.client import connect
from kserve_mesh.client.errors import MeshClientError

pytestmark = pytest.mark.integration

ISVC = """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: sdk-iris
  namespace: team-a
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
spec:
  predictor:
    model:
      modelFormat:
        name: sklearn
      storageUri: {path}
"""


def test_apply_then_isvcs_then_infer_then_delete(mesh: MeshProcess, example_models: tuple[Path, dict[str, Any]]) -> None:
    models_dir, _ = example_models
    client = connect(mesh.rest)
    try:
        result = client.apply(ISVC.format(path=models_dir / "sklearn-iris"))
        assert result == [{"kind": "InferenceService", "namespace": "team-a", "name": "sdk-iris", "action": "created"}]
        items = client.isvcs("team-a")
        assert [i["metadata"]["name"] for i in items] == ["sdk-iris"]
        out = client.infer("sdk-iris", np.array([[5.1, 3.5, 1.4, 0.2]]))
        assert out["output-0"].tolist() == [0]
        isvc = client.isvc("team-a", "sdk-iris")
        assert isvc["status"]["modelStatus"]["states"]["activeModelState"] == "Loaded", isvc["status"]
        with pytest.raises(MeshClientError) as err:
            client.apply("apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata:\n"
                         "  name: bad\n  annotations: {serving.kserve.io/deploymentMode: ModelMesh}\n"
                         "spec: {predictor: {nope: 1}}\n")
        assert "spec.predictor" in err.value.message and "nope" in err.value.message, err.value.message
        client.delete_isvc("team-a", "sdk-iris")
        assert client.isvcs("team-a") == []
    finally:
        client.close()
