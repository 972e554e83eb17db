"""The example pipeline: train a tiny sklearn model -> upload it to S3 -> register it on a mesh
(``s3://`` URI, credentials from the mesh's storage-config entry ``storage_key``) -> smoke test.

Compile it (the checked-in ``example_pipeline.yaml`` must stay equal to the output; a test checks)::

    python -m kserve_mesh_pipelines.example_pipeline [OUT.yaml]

The S3 credentials are pipeline parameters so the example runs anywhere (kfp's local runner in the
tests); in a cluster leave them empty and give the upload step credentials from a Secret (boto3
reads ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` from the environment). The mesh reads the
same bucket with its own credentials, from its storage-config entry ``storage_key``.
"""

import sys
from pathlib import Path

from kfp import compiler, dsl

from .components import register_model, smoke_test
from .example_components import train_iris_model, upload_to_s3

PIPELINE_NAME = "kserve-mesh-example"
COMPILED = Path(__file__).resolve().with_name("example_pipeline.yaml")


@dsl.pipeline(name=PIPELINE_NAME,
              description="Train a tiny sklearn model, upload it to S3, serve it on kserve-mesh, smoke-test it.")
def example_pipeline(
    mesh_url: str,
    s3_endpoint: str = "",
    s3_access_key: str = "",
    s3_secret_key: str = "",
    bucket: str = "models",
    object_key: str = "kfp-example/iris/model.joblib",
    storage_key: str = "localS3",
    model_id: str = "iris-kfp-example",
    tolerance: float = 1e-6,
    timeout_s: float = 120.0,
):
    trained = train_iris_model()
    uploaded = upload_to_s3(model=trained.outputs["model"], bucket=bucket, object_key=object_key,
                            endpoint_url=s3_endpoint, access_key=s3_access_key, secret_key=s3_secret_key)
    registered = register_model(mesh_url=mesh_url, model_id=model_id, model_format="sklearn",
                                storage_uri=uploaded.output, storage_key=storage_key, timeout_s=timeout_s)
    smoke_test(mesh_url=mesh_url, model_name=registered.outputs["model_id"],
               request_json=trained.outputs["request_json"], expected_json=trained.outputs["expected_json"],
               tolerance=tolerance, timeout_s=timeout_s)


def compile_pipeline(path: str | Path = COMPILED) -> Path:
    """Compile the example pipeline to ``path`` (the checked-in YAML by default)."""
    compiler.Compiler().compile(example_pipeline, str(path))
    return Path(path)


if __name__ == "__main__":
    print(f"wrote {compile_pipeline(*sys.argv[1:2])}")
