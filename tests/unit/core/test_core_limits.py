"""Bounds on what a caller hands the mesh: modelInfo type/path/key (``core.ids.check_model_info``),
the nesting of JSON documents (``core.limits``), and credentials kept out of listed model paths
(``core.limits.redacted_path``). A refusal names the field and never echoes a huge value."""

from __future__ import annotations

import json
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.core.ids import (
    MAX_KEY_BYTES,
    MAX_PATH_BYTES,
    MAX_PATH_COMPONENTS,
    MAX_TYPE_BYTES,
    check_ids,
    check_model_info,
)
from kserve_mesh.core.limits import MAX_NESTING, check_nesting, loads_json, nesting_depth, redacted_path
from kserve_mesh.core.records import ModelInfo

# -- modelInfo bounds ------------------------------------------------------------------------------


@pytest.mark.parametrize("info", [
    ModelInfo("sklearn", "sklearn/mnist-svm.joblib"),
    ModelInfo("t" * MAX_TYPE_BYTES, "p" * MAX_PATH_BYTES, "k" * MAX_KEY_BYTES),
    ModelInfo("rt:triton-2.x", "/".join(["a"] * MAX_PATH_COMPONENTS)),
    ModelInfo("string", "s3://bucket/" + "/".join(["d"] * (MAX_PATH_COMPONENTS - 2))),  # 's3:' and the bucket count
    ModelInfo("modèle", "dossier/modèle é.joblib"),
    ModelInfo("sklearn", "https://h/m.joblib?X-Amz-Signature=abc&X-Amz-Date=1", '{"storage_key": "s3"}'),
    ModelInfo("sklearn", "m", '{\n  "storage_key": "s3",\n\t"bucket": "b"\n}'),  # a pretty-printed key
    ModelInfo("sklearn", "m", "{not json"),  # not JSON: the storage layer says what is wrong with it
    ModelInfo("sklearn", "m", "[" * MAX_NESTING + "]" * MAX_NESTING),
])
def test_model_info_within_bounds_passes(info: ModelInfo) -> None:
    assert check_model_info(info) is info


@pytest.mark.parametrize(("info", "fragment"), [
    (ModelInfo("t" * (MAX_TYPE_BYTES + 1), "m"), "modelInfo.type is 129 bytes long; at most 128 bytes"),
    (ModelInfo("é" * 65, "m"), "modelInfo.type is 130 bytes long"),
    (ModelInfo("sk\nlearn", "m"), "modelInfo.type 'sk\\nlearn' contains the control character U+000A"),
    (ModelInfo("sklearn", "p" * (MAX_PATH_BYTES + 1)), "modelInfo.path is 4097 bytes long; at most 4096 bytes"),
    (ModelInfo("sklearn", "a/" * 150_000), "modelInfo.path is 300000 bytes long"),
    (ModelInfo("sklearn", "a/" * (MAX_PATH_COMPONENTS + 1)), "modelInfo.path has 257 components; at most 256"),
    (ModelInfo("sklearn", "a\\" * (MAX_PATH_COMPONENTS + 1)), "modelInfo.path has 257 components"),
    (ModelInfo("sklearn", "m.joblib\n2031-01-01 WARNING forged"), "control character U+000A at position 8"),
    (ModelInfo("sklearn", "m\x00.joblib"), "U+0000"),
    (ModelInfo("sklearn", "m\r"), "U+000D"),
    (ModelInfo("sklearn", "m\x85"), "U+0085"),
    (ModelInfo("sklearn", "m\udc80"), "modelInfo.path 'm\\udc80' is not valid Unicode text"),
    (ModelInfo("sklearn", "m", "k" * (MAX_KEY_BYTES + 1)), "modelInfo.key is 16385 bytes long; at most 16384"),
    (ModelInfo("sklearn", "m", '{"a":' * 2000 + "1" + "}" * 2000), "modelInfo.key is nested more than 100 levels"),
    (ModelInfo("sklearn", "m", "[" * 8000 + "]" * 8000), "modelInfo.key is nested more than 100 levels"),
    (ModelInfo("sklearn", "m", "\udc80"), "modelInfo.key '\\udc80' is not valid Unicode text"),
])
def test_model_info_out_of_bounds_is_refused_naming_the_field(info: ModelInfo, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(fragment)) as err:
        check_model_info(info)
    assert len(str(err.value)) < 300  # a huge value is shown cut short


def test_check_ids_checks_the_model_info_and_names_the_model() -> None:
    check_ids(model_id="m", info=ModelInfo("sklearn", "m"))
    with pytest.raises(InvalidArgument, match=re.escape("model 'm1': modelInfo.type is 1048576 bytes long")) as err:
        check_ids(model_id="m1", info=ModelInfo("s" * (1 << 20), "m"))
    assert len(str(err.value)) < 300
    with pytest.raises(InvalidArgument, match="model id"):  # the id is checked first
        check_ids(model_id="x" * 1000, info=ModelInfo("s" * (1 << 20), "m"))


def test_a_long_path_is_refused_at_once() -> None:
    for path in ("a/" * 150_000, "a/" * (1 << 20)):
        started = time.perf_counter()
        with pytest.raises(InvalidArgument):
            check_model_info(ModelInfo("string", path))
        assert time.perf_counter() - started < 0.1


@given(st.text(max_size=300), st.text(max_size=300), st.text(max_size=300))
def test_check_model_info_only_raises_invalid_argument(type_: str, path: str, key: str) -> None:
    try:
        check_model_info(ModelInfo(type_, path, key))
    except InvalidArgument as exc:
        assert len(str(exc)) < 400


# -- nesting ---------------------------------------------------------------------------------------


def _nested(depth: int) -> object:
    value: object = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@pytest.mark.parametrize(("value", "depth"), [
    (1, 0), ("text", 0), ([], 1), ({}, 1), ([1, [2, [3]]], 3), ({"a": [{"b": 1}], "c": 2}, 3),
    (_nested(100), 100), ((1, (2,)), 2),
])
def test_nesting_depth(value: object, depth: int) -> None:
    assert nesting_depth(value) == depth


def test_nesting_depth_stops_counting_past_the_limit_and_never_recurses() -> None:
    assert nesting_depth(_nested(100_000), limit=10) == 11
    assert nesting_depth(_nested(5_000), limit=10_000) == 5_000


def test_check_nesting() -> None:
    value = _nested(MAX_NESTING)
    assert check_nesting(value, "body") is value
    with pytest.raises(InvalidArgument, match="body is nested more than 100 levels deep"):
        check_nesting(_nested(MAX_NESTING + 1), "body")
    with pytest.raises(InvalidArgument, match="nested more than 3 levels"):
        check_nesting([[[[1]]]], "body", limit=3)


@pytest.mark.parametrize("text", [
    "[" * 100_000 + "]" * 100_000, b"[" * 100_000 + b"]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000,
    "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1),
])
def test_loads_json_refuses_deep_documents_naming_the_nesting(text: str | bytes) -> None:
    with pytest.raises(InvalidArgument, match="the body is nested more than 100 levels deep"):
        loads_json(text, "the body")


def test_loads_json_passes_other_documents_and_malformed_json_raises_value_error() -> None:
    assert loads_json('{"ready": true}', "body") == {"ready": True}
    assert loads_json(b"[" * MAX_NESTING + b"]" * MAX_NESTING, "body") is not None
    with pytest.raises(json.JSONDecodeError):
        loads_json("{", "body")
    with pytest.raises(ValueError):  # bytes that are not text: the caller's ValueError branch
        loads_json(b"\xff\xfe\xfa", "body")


# -- credentials in listed model paths --------------------------------------------------------------


@pytest.mark.parametrize(("path", "shown"), [
    ("http://alice:S3cret-pw@127.0.0.1:9/model.string?X-Amz-Signature=0123abcd",
     "http://***@127.0.0.1:9/model.string?X-Amz-Signature=***"),
    ("https://token@example.com/m.joblib", "https://***@example.com/m.joblib"),
    ("https://a:b@c@example.com/m", "https://***@example.com/m"),
    ("https://h/m?X-Amz-Credential=AKIA%2F&X-Amz-Date=2024&X-Amz-Signature=ff",
     "https://h/m?X-Amz-Credential=***&X-Amz-Date=***&X-Amz-Signature=***"),
    ("https://acct.blob.core.windows.net/c/m?sv=2021&sig=abc%3D", "https://acct.blob.core.windows.net/c/m?sv=***&sig=***"),
    ("https://h/m?bare-token&k=", "https://h/m?***&k="),
    ("https://h/m#secret", "https://h/m#***"),
    ("https://h/m?", "https://h/m?"),
    ("https://h/user@part/m", "https://h/user@part/m"),  # an @ in the path is not user info
    ("s3://bucket/dir/model.joblib", "s3://bucket/dir/model.joblib"),
    ("gs://b/m?x=1", "gs://b/m?x=***"),
    ("HTTP://u:p@H/m", "HTTP://***@H/m"),
    ("http://[::1", "http://[::1"),
    ("http://u:p@[::1/m?a=b", "http://***@[::1/m?a=***"),
    ("models/a?b=c", "models/a?b=c"),  # a local path: '?' is part of the file name
    ("/data/user@host/m#1", "/data/user@host/m#1"),
    ("pvc://claim/dir/m", "pvc://claim/dir/m"),
    ("", ""),
])
def test_redacted_path(path: str, shown: str) -> None:
    assert redacted_path(path) == shown


@given(st.text(alphabet="ab:@/?#&=%", max_size=40))
def test_redacted_path_never_shows_user_info_or_query_values(rest: str) -> None:
    out = redacted_path("https://" + rest)
    authority = re.match(r"https://([^/?#]*)", out)
    assert authority is not None and "@" not in authority.group(1).removeprefix("***@")
    if "?" in out.split("#")[0]:
        query = out.split("#")[0].split("?", 1)[1]
        assert all(item in ("", "***") or item.endswith(("=***", "=")) for item in query.split("&"))


def test_a_listed_model_key_hides_storage_param_secrets() -> None:
    import json as _json

    from kserve_mesh.core.limits import redacted_key

    key = _json.dumps({"storage_key": "s3", "storage_params": {
        "type": "s3", "bucket": "models", "secret_access_key": "TOPSECRET", "headers": '{"Authorization": "x"}',
        "endpoint_url": "http://user:pw@minio:9000"}})
    shown = _json.loads(redacted_key(key))
    assert shown["storage_key"] == "s3"
    assert shown["storage_params"] == {"type": "s3", "bucket": "models", "secret_access_key": "***",
                                       "headers": "***", "endpoint_url": "http://***@minio:9000"}
    assert redacted_key("myStorage") == "myStorage" and redacted_key('{"storage_key": "a"}') == '{"storage_key": "a"}'
