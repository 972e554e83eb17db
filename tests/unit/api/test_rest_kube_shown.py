"""KServe resources as readers see them: no credentials in a storage URI (api/rest_kube.py)."""

from __future__ import annotations

from kserve_mesh.api.rest_kube import shown


def test_storage_uris_lose_their_credentials_and_nothing_else_changes() -> None:
    isvc = {"kind": "InferenceService", "metadata": {"name": "m"},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"},
                                             "storageUri": "https://bob:pw@models.example/m.joblib?X-Amz-Signature=abc"}}},
            "status": {"url": "grpc://modelmesh-serving.ns:8033", "modelStatus": {"copies": {"totalCopies": 1}}},
            "list": [{"storage": {"path": "s3://bucket/m?token=t"}}]}
    out = shown(isvc)
    assert out["spec"]["predictor"]["model"]["storageUri"] == "https://***@models.example/m.joblib?X-Amz-Signature=***"
    assert out["list"][0]["storage"]["path"] == "s3://bucket/m?token=***"
    assert out["status"] == isvc["status"] and out["metadata"] == {"name": "m"}
