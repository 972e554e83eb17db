"""The two steps of the example pipeline that do not talk to the mesh: train a tiny model, upload it.

``train_iris_model`` fits a scikit-learn classifier on the iris data that ships with scikit-learn
(no download), saves it with joblib, and outputs a V2 request for three sample rows together with
the predictions the trained model itself gives for them: the smoke test later checks that the
mesh serves exactly this model. ``upload_to_s3`` puts the file into any S3-protocol store with
boto3 and outputs its ``s3://`` URI.

The package ranges match kserve-mesh's own extras, so the model is read by the same scikit-learn
major version that the mesh's runtime runs.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Input, Model, Output

from .components import BASE_IMAGE

SKLEARN_PACKAGES = ["scikit-learn>=1.4,<2"]
BOTO3_PACKAGES = ["boto3>=1.34"]


@dsl.component(base_image=BASE_IMAGE, packages_to_install=SKLEARN_PACKAGES)
def train_iris_model(
    model: Output[Model],
    max_iter: int = 1000,
) -> NamedTuple("TrainedModel", [("request_json", str), ("expected_json", str)]):
    """Fit a LogisticRegression on iris; write it (joblib) to ``model``; output a V2 request for one
    row of each class and the model's own predictions for it (V2 ``outputs`` form)."""
    import json
    from collections import namedtuple

    import joblib
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    x = np.asarray(data.data, dtype=np.float64)
    clf = LogisticRegression(max_iter=max_iter, random_state=0).fit(x, data.target)
    with open(model.path, "wb") as f:
        joblib.dump(clf, f)
    model.metadata["framework"] = "sklearn"
    model.metadata["accuracy"] = float(clf.score(x, data.target))
    sample = x[[0, 50, 100]]
    request = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": list(sample.shape),
                           "data": sample.ravel().tolist()}]}
    predicted = [int(v) for v in clf.predict(sample)]
    expected = {"outputs": [{"name": "output-0", "shape": [len(predicted)], "data": predicted}]}
    return namedtuple("TrainedModel", ["request_json", "expected_json"])(json.dumps(request), json.dumps(expected))


@dsl.component(base_image=BASE_IMAGE, packages_to_install=BOTO3_PACKAGES)
def upload_to_s3(
    model: Input[Model],
    bucket: str,
    object_key: str,
    endpoint_url: str = "",
    access_key: str = "",
    secret_key: str = "",
    region: str = "us-east-1",
) -> str:
    """Upload the model file to ``s3://{bucket}/{object_key}`` and output that URI. An empty
    ``endpoint_url`` means AWS; empty keys mean boto3's default credentials (environment, role)."""
    import boto3
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    if not bucket or "/" in bucket:
        raise ValueError(f"bucket must be a bucket name without '/', got '{bucket}'")
    key = (object_key or "").strip().lstrip("/")
    if not key:
        raise ValueError("object_key must not be empty")
    uri = f"s3://{bucket}/{key}"
    client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url or None, region_name=region or None,
        aws_access_key_id=access_key or None, aws_secret_access_key=secret_key or None,
    )
    try:
        client.upload_file(model.path, bucket, key)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise RuntimeError(f"upload to {uri} failed: {err.get('Code')}: {err.get('Message')}") from None
    except (BotoCoreError, S3UploadFailedError) as exc:
        raise RuntimeError(f"upload to {uri} failed: {exc}") from None
    print(f"uploaded {model.path} to {uri}")
    return uri
