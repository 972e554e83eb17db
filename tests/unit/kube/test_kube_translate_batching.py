"""Adaptive batching from an InferenceService / Predictor into the model key (issue 15): KServe's
``spec.predictor.batcher`` (``maxBatchSize``, ``maxLatency`` in ms) and the annotations
``serving.kserve.io/max-batch-size`` / ``serving.kserve.io/max-batch-delay-ms``, refused clearly
when malformed; resources without them keep their model ids and keys."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
from kube_docs_examples import PREDICTOR, QUICKSTART_STORAGE_URI

from kserve_mesh.kube.core.errors import InvalidSpec
from kserve_mesh.kube.core.manifest import load_documents
from kserve_mesh.kube.core.parse import parse
from kserve_mesh.kube.core.resources import Batching, InferenceService, Predictor
from kserve_mesh.kube.core.runtimes import BUILTIN_RUNTIMES
from kserve_mesh.kube.core.translate import spec_hash, translate
from kserve_mesh.runtime.builtin.models import BatchSettings, resolve_model_spec

ISVC = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: batched
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
{annotations}spec:
  predictor:
{batcher}    model:
      modelFormat:
        name: sklearn
      storageUri: s3://models/sklearn/iris.joblib
"""


def isvc(batcher: str = "", annotations: str = "") -> InferenceService | Predictor:
    (doc,) = load_documents(ISVC.format(batcher=batcher, annotations=annotations))
    return parse(doc)  # type: ignore[return-value]


def key_of(resource: InferenceService | Predictor) -> dict[str, object]:
    return json.loads(translate(resource, BUILTIN_RUNTIMES).info.key)


def test_kserve_batcher_field_goes_into_the_model_key() -> None:
    resource = isvc(batcher="    batcher:\n      maxBatchSize: 8\n      maxLatency: 2\n      timeout: 60\n")
    assert resource.model.batching == Batching(8, 2)
    key = key_of(resource)
    assert key["batching"] == {"max_batch_size": 8, "max_batch_delay_ms": 2}
    # what the built-in runtime reads back
    spec = translate(resource, BUILTIN_RUNTIMES)
    assert resolve_model_spec(spec.info.type, spec.info.key).batching == BatchSettings(8, 2.0)


def test_annotations_set_batching_and_the_field_wins_where_both_are_given() -> None:
    notes = "    serving.kserve.io/max-batch-size: '16'\n    serving.kserve.io/max-batch-delay-ms: '1.5'\n"
    assert key_of(isvc(annotations=notes))["batching"] == {"max_batch_size": 16, "max_batch_delay_ms": 1.5}
    both = isvc(batcher="    batcher:\n      maxBatchSize: 4\n", annotations=notes)
    assert key_of(both)["batching"] == {"max_batch_size": 4, "max_batch_delay_ms": 1.5}
    off = isvc(annotations="    serving.kserve.io/max-batch-size: '0'\n")
    assert key_of(off)["batching"] == {"max_batch_size": 0}


def test_a_predictor_takes_the_annotations() -> None:
    text = PREDICTOR.replace("  name: example-mnist-predictor\n", "  name: example-mnist-predictor\n  annotations:\n"
                             "    serving.kserve.io/max-batch-delay-ms: '3'\n")
    (doc,) = load_documents(text)
    assert key_of(parse(doc))["batching"] == {"max_batch_delay_ms": 3}  # type: ignore[arg-type]


def test_without_batching_keys_and_ids_are_unchanged() -> None:
    (doc,) = load_documents(QUICKSTART_STORAGE_URI)
    resource = parse(doc)
    spec = translate(resource, BUILTIN_RUNTIMES)  # type: ignore[arg-type]
    assert "batching" not in json.loads(spec.info.key)
    assert isvc().model.batching is None
    batched = translate(isvc(batcher="    batcher:\n      maxBatchSize: 8\n"), BUILTIN_RUNTIMES)
    assert batched.model_id != translate(isvc(), BUILTIN_RUNTIMES).model_id  # a new spec: a new model


def test_spec_hash_is_stable_for_resources_without_batching() -> None:
    source = isvc().model
    doc = dataclasses.asdict(source)
    del doc["batching"]
    doc["parameters"] = dict(sorted(source.parameters.items()))
    expected = hashlib.sha1(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:10]
    assert spec_hash(source) == expected


@pytest.mark.parametrize(("batcher", "annotations", "where", "message"), [
    ("    batcher:\n      maxBatchSize: -1\n", "", "spec.predictor.batcher.maxBatchSize", r"from 0 \(off\) to 65536"),
    ("    batcher:\n      maxBatchSize: '8'\n", "", "spec.predictor.batcher.maxBatchSize", "must be an integer"),
    ("    batcher:\n      maxLatency: fast\n", "", "spec.predictor.batcher.maxLatency", "number of milliseconds"),
    ("    batcher:\n      maxLatency: 100000\n", "", "spec.predictor.batcher.maxLatency", "from 0 to 60000"),
    ("    batcher:\n      maxBatch: 8\n", "", "spec.predictor.batcher", "maxBatch"),
    ("", "    serving.kserve.io/max-batch-size: many\n", "serving.kserve.io/max-batch-size", "must be an integer"),
    ("", "    serving.kserve.io/max-batch-size: '100000'\n", "serving.kserve.io/max-batch-size", "to 65536"),
    ("", "    serving.kserve.io/max-batch-delay-ms: soon\n", "serving.kserve.io/max-batch-delay-ms", "milliseconds"),
    ("", "    serving.kserve.io/max-batch-delay-ms: '-1'\n", "serving.kserve.io/max-batch-delay-ms", "from 0 to"),
])
def test_bad_batching_values_are_refused_naming_the_field(batcher: str, annotations: str, where: str,
                                                         message: str) -> None:
    with pytest.raises(InvalidSpec, match=message) as info:
        isvc(batcher=batcher, annotations=annotations)
    assert where in str(info.value)
