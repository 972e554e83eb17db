"""The smoke test's comparison (tolerance, missing outputs, shapes) and the components' input
checks, tested as the plain functions that KFP copies into each component."""

from __future__ import annotations

import json
import math

import pytest
from kserve_mesh_pipelines import helpers as h


def _response(*outputs: dict) -> dict:
    return {"model_name": "m", "outputs": list(outputs)}


def _out(name: str, data: list, shape: list | None = None, datatype: str = "FP64") -> dict:
    return {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}


# -- comparison --------------------------------------------------------------------------------
def test_equal_outputs_pass_and_report_what_was_checked() -> None:
    got = _response(_out("output-0", [0, 1, 2], datatype="INT64"))
    result = h.compare_outputs(got, {"outputs": [{"name": "output-0", "data": [0, 1, 2]}]}, 0.0)
    assert result == {"outputs_checked": 1, "max_abs_error": 0.0}


def test_numbers_within_tolerance_pass_and_the_largest_difference_is_reported() -> None:
    got = _response(_out("p", [0.1000004, 0.2, 0.3]))
    result = h.compare_outputs(got, {"outputs": [{"name": "p", "data": [0.1, 0.2, 0.3000001]}]}, 1e-6)
    assert result["outputs_checked"] == 1
    assert result["max_abs_error"] == pytest.approx(4e-7, rel=1e-3)


def test_a_difference_beyond_tolerance_names_the_output_the_index_and_both_values() -> None:
    got = _response(_out("probabilities", [0.5, 0.25, 0.25]))
    with pytest.raises(RuntimeError) as err:
        h.compare_outputs(got, {"outputs": [{"name": "probabilities", "data": [0.5, 0.2, 0.25]}]}, 0.01)
    msg = str(err.value)
    assert msg.startswith("smoke test failed: output 'probabilities': 1 of 3 values differ")
    assert "[1] got 0.25, expected 0.2" in msg and "> tolerance 0.01" in msg


def test_tolerance_is_inclusive() -> None:
    got = _response(_out("y", [1.5]))
    assert h.compare_outputs(got, {"outputs": [{"name": "y", "data": [1.0]}]}, 0.5)["max_abs_error"] == 0.5


def test_a_missing_output_is_named_with_what_the_model_returned() -> None:
    got = _response(_out("output-0", [1]), _out("output-1", [2]))
    with pytest.raises(RuntimeError, match=r"output 'scores' is missing \(the model returned: output-0, output-1\)"):
        h.compare_outputs(got, {"outputs": [{"name": "scores", "data": [1]}]}, 0.0)


def test_only_the_expected_outputs_are_checked() -> None:
    got = _response(_out("a", [1]), _out("b", [99]))
    assert h.compare_outputs(got, {"outputs": [{"name": "a", "data": [1]}]}, 0.0)["outputs_checked"] == 1


def test_shape_datatype_and_length_mismatches_are_reported_for_every_output() -> None:
    got = _response(_out("a", [1, 2, 3, 4], shape=[2, 2]), _out("b", [1, 2], datatype="FP32"))
    expected = {"outputs": [{"name": "a", "data": [1, 2, 3, 4], "shape": [4]},
                            {"name": "b", "data": [1, 2, 3], "datatype": "FP64"}]}
    with pytest.raises(RuntimeError) as err:
        h.compare_outputs(got, expected, 0.0)
    msg = str(err.value)
    assert "output 'a': shape [2, 2] != expected [4]" in msg
    assert "output 'b': datatype FP32 != expected FP64" in msg
    assert "output 'b': 2 values != expected 3" in msg


def test_nested_rows_are_flattened_before_comparing() -> None:
    got = _response(_out("a", [1.0, 2.0, 3.0, 4.0], shape=[2, 2]))
    assert h.compare_outputs(got, {"outputs": [{"name": "a", "data": [[1, 2], [3, 4]]}]}, 0.0)["outputs_checked"] == 1


def test_strings_and_booleans_must_be_equal_whatever_the_tolerance() -> None:
    got = _response(_out("s", ["hello", True], datatype="BYTES"))
    assert h.compare_outputs(got, {"outputs": [{"name": "s", "data": ["hello", True]}]}, 10.0)
    with pytest.raises(RuntimeError, match=r"\[0\] got 'hello', expected 'world'"):
        h.compare_outputs(got, {"outputs": [{"name": "s", "data": ["world", True]}]}, 10.0)
    with pytest.raises(RuntimeError, match=r"\[1\] got True, expected 1"):
        h.compare_outputs(got, {"outputs": [{"name": "s", "data": ["hello", 1]}]}, 10.0)


def test_nan_matches_only_nan() -> None:
    got = _response(_out("x", [math.nan, 1.0]))
    assert h.compare_outputs(got, {"outputs": [{"name": "x", "data": [math.nan, 1.0]}]}, 0.0)
    with pytest.raises(RuntimeError, match=r"\[0\] got nan, expected 0.0"):
        h.compare_outputs(got, {"outputs": [{"name": "x", "data": [0.0, 1.0]}]}, 1e9)


def test_many_differences_are_summarised() -> None:
    got = _response(_out("x", list(range(10))))
    with pytest.raises(RuntimeError) as err:
        h.compare_outputs(got, {"outputs": [{"name": "x", "data": [v + 1 for v in range(10)]}]}, 0.0)
    assert "10 of 10 values differ" in str(err.value) and "and 5 more" in str(err.value)


@pytest.mark.parametrize("bad", [-1e-9, math.inf, math.nan, "abc"])
def test_a_bad_tolerance_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="tolerance must be"):
        h.compare_outputs(_response(_out("x", [1])), {"outputs": [{"name": "x", "data": [1]}]}, bad)  # type: ignore[arg-type]


# -- input checks ------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["", "127.0.0.1:8008", "ftp://mesh:8008", "http://", None])
def test_mesh_url_must_be_http(url: str) -> None:
    with pytest.raises(ValueError, match="mesh_url must be an http:// or https:// URL"):
        h.validate_mesh_url(url)


def test_mesh_url_loses_its_trailing_slash() -> None:
    assert h.validate_mesh_url(" https://mesh.example:8008/ ") == "https://mesh.example:8008"


@pytest.mark.parametrize("name", ["", "  ", "a/b", " padded"])
def test_names_used_in_rest_paths_are_checked(name: str) -> None:
    with pytest.raises(ValueError, match="model_id must not"):
        h.validate_name(name, "model_id")


@pytest.mark.parametrize("timeout", [0, -3, math.inf, math.nan, "soon", None])
def test_timeout_must_be_positive_seconds(timeout: object) -> None:
    with pytest.raises(ValueError, match="timeout_s must be"):
        h.validate_timeout(timeout)  # type: ignore[arg-type]


def test_storage_key_becomes_a_modelmesh_model_key() -> None:
    assert h.storage_key_json("") == ""
    assert json.loads(h.storage_key_json("localS3")) == {"storage_key": "localS3"}
    given = '{"storage_key": "s", "bucket": "b"}'
    assert h.storage_key_json(given) == given
    with pytest.raises(ValueError, match="storage_key looks like JSON but does not parse"):
        h.storage_key_json("{nope")


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "request_json is not valid JSON"),
    ("[1, 2]", "request_json must be a JSON object with an 'inputs' list"),
    ('{"inputs": []}', "request_json must hold a non-empty 'inputs' list"),
    ('{"inputs": [{"data": [1]}]}', r"request_json: inputs\[0\] must be an object with a 'name' and 'data'"),
])
def test_request_json_is_checked_before_sending(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        h.parse_json_object(text, "request_json", "inputs")


ISVC = """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: iris
  annotations: {serving.kserve.io/deploymentMode: ModelMesh}
spec:
  predictor:
    model: {modelFormat: {name: sklearn}, storageUri: "s3://models/iris"}
"""


def test_isvc_identity_reads_name_and_namespace() -> None:
    assert h.isvc_identity(ISVC) == ("default", "iris")
    assert h.isvc_identity(ISVC.replace("  name: iris", "  name: iris\n  namespace: team-a")) == ("team-a", "iris")


@pytest.mark.parametrize(("text", "message"), [
    ("kind: [unclosed", "isvc_yaml is not valid YAML"),
    ("", "exactly one InferenceService, found 0"),
    (ISVC + "---\n" + ISVC, "exactly one InferenceService, found 2"),
    (ISVC.replace("kind: InferenceService", "kind: Deployment"), "must be a kind: InferenceService, got 'Deployment'"),
    (ISVC.replace("serving.kserve.io/v1beta1", "apps/v1"), "apiVersion must be serving.kserve.io"),
    (ISVC.replace("  name: iris\n", ""), "metadata.name must be set"),
])
def test_bad_isvc_yaml_is_refused_with_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        h.isvc_identity(text)


def test_isvc_url_prefers_the_predictor_rest_url() -> None:
    status = {"status": {"url": "http://iris.default", "components": {"predictor": {"restUrl": "http://rest"}}}}
    assert h.isvc_url(status, "http://mesh", "iris") == "http://rest"
    assert h.isvc_url({"status": {"url": "http://iris.default"}}, "http://mesh", "iris") == "http://iris.default"
    assert h.isvc_url({}, "http://mesh", "iris") == "http://mesh/v2/models/iris"


def test_applied_namespace_comes_from_the_apply_answer() -> None:
    answer = [{"kind": "ServingRuntime", "namespace": "x", "name": "iris", "action": "created"},
              {"kind": "InferenceService", "namespace": "team-a", "name": "iris", "action": "configured"}]
    assert h.applied_namespace(answer, "iris", "default") == "team-a"
    assert h.applied_namespace({"kind": "InferenceService", "metadata": {"name": "iris", "namespace": "b"}},
                               "iris", "default") == "b"
    assert h.applied_namespace([], "iris", "default") == "default"
    assert h.applied_namespace(None, "iris", "default") == "default"
