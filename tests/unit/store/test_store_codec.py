"""Record codecs: exact round trips, compact output, tolerance of new fields, clear corruption."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kserve_mesh.core.errors import InternalError
from kserve_mesh.core.ids import InstanceId, ModelId, VModelId
from kserve_mesh.core.records import (
    FailureRecord,
    InstanceRecord,
    ModelInfo,
    ModelRecord,
    VModelRecord,
)
from kserve_mesh.store.codec import (
    CorruptRecord,
    decode_instance,
    decode_model,
    decode_vmodel,
    encode_instance,
    encode_model,
    encode_vmodel,
)

ids = st.text(min_size=1, max_size=20)
ints = st.integers(min_value=0, max_value=2**63)

models = st.builds(
    ModelRecord,
    model_id=ids.map(ModelId),
    info=st.builds(ModelInfo, type=st.text(), path=st.text(), key=st.text()),
    last_used_ms=ints,
    auto_delete=st.booleans(),
    refcount=st.integers(0, 1000),
    instances=st.dictionaries(ids.map(InstanceId), ints, max_size=4),
    failures=st.lists(
        st.builds(FailureRecord, instance=ids.map(InstanceId), time_ms=ints, message=st.text()),
        max_size=3,
    ).map(tuple),
    min_copies=st.integers(0, 10),
    max_copies=st.integers(0, 10),
)
vmodels = st.builds(
    VModelRecord,
    vmodel_id=ids.map(VModelId),
    owner=st.text(),
    active=ids.map(ModelId),
    target=ids.map(ModelId),
    failed=st.booleans(),
)
instances = st.builds(
    InstanceRecord,
    instance_id=ids.map(InstanceId),
    endpoint=st.text(),
    capacity_bytes=ints,
    used_bytes=ints,
    model_count=st.integers(0, 10**6),
    lru_time_ms=ints,
    loading_threads=st.integers(0, 64),
    loads_in_progress=st.integers(0, 64),
    requests_per_minute=ints,
    shutting_down=st.booleans(),
    recycling=st.booleans(),
    start_time_ms=ints,
    version=st.text(),
    zone=st.text(),
    labels=st.lists(st.text(), max_size=3).map(tuple),
    victim_value=st.integers(-1, 10**12),
)


@given(models)
def test_model_round_trip(record: ModelRecord) -> None:
    assert decode_model(encode_model(record)) == record


@given(vmodels)
def test_vmodel_round_trip(record: VModelRecord) -> None:
    assert decode_vmodel(encode_vmodel(record)) == record


@given(instances)
def test_instance_round_trip(record: InstanceRecord) -> None:
    assert decode_instance(encode_instance(record)) == record


def test_encoding_is_compact_and_omits_defaults() -> None:
    data = encode_model(ModelRecord(ModelId("m"), ModelInfo("sklearn", "p"), 5))
    assert data == b'{"id":"m","type":"sklearn","path":"p","lastUsed":5}'
    vm = encode_vmodel(VModelRecord(VModelId("v"), "isvc", ModelId("a"), ModelId("a")))
    assert vm == b'{"id":"v","owner":"isvc","active":"a","target":"a"}'


def test_unknown_fields_are_ignored_and_missing_optionals_default() -> None:
    data = json.dumps(
        {"id": "m", "type": "onnx", "lastUsed": 7, "fromTheFuture": {"x": 1}, "refCount": 2}
    ).encode()
    assert decode_model(data) == ModelRecord(ModelId("m"), ModelInfo("onnx"), 7, refcount=2)
    inst = json.dumps(
        {"id": "i", "endpoint": "e", "capacity": 1, "used": 0, "models": 0, "lruTime": 3, "gpu": 1}
    ).encode()
    assert decode_instance(inst).loading_threads == 1


def test_victim_value_is_optional_and_old_records_decode() -> None:
    old = b'{"id":"i","endpoint":"e","capacity":10,"used":5,"models":1,"lruTime":3}'
    assert decode_instance(old).victim_value == -1  # written before issue 12: unknown
    rec = decode_instance(old)
    assert encode_instance(rec) == old  # the default is left out: old readers see the same bytes
    with_value = dataclasses.replace(rec, victim_value=1234)
    data = encode_instance(with_value)
    assert b'"victimValue":1234' in data
    assert decode_instance(data) == with_value
    with pytest.raises(CorruptRecord, match="corrupt instance record.*victimValue"):
        decode_instance(data.replace(b"1234", b'"x"'))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"type": "x", "lastUsed": 1}', "required field 'id' is missing"),
        (b'{"id": "m", "type": 3, "lastUsed": 1}', "field 'type' should be str"),
        (b'{"id": "m", "type": "x", "lastUsed": true}', "field 'lastUsed' should be int"),
        (b'{"id": "m", "type": "x", "lastUsed": 1, "instances": {"i": "x"}}', "instances"),
        (b'{"id": "m", "type": "x", "lastUsed": 1, "failures": [["i", 1]]}', "failure entry"),
    ],
)
def test_corrupt_model_data_raises_a_clear_error(data: bytes, problem: str) -> None:
    with pytest.raises(CorruptRecord, match=problem) as info:
        decode_model(data)
    assert isinstance(info.value, InternalError)
    assert "corrupt model record" in str(info.value)


def test_corrupt_vmodel_and_instance_name_their_kind() -> None:
    with pytest.raises(CorruptRecord, match="corrupt vmodel record.*'active'"):
        decode_vmodel(b'{"id": "v", "owner": "o", "target": "t"}')
    with pytest.raises(CorruptRecord, match="corrupt instance record.*labels"):
        decode_instance(
            b'{"id":"i","endpoint":"e","capacity":1,"used":0,"models":0,"lruTime":3,"labels":[1]}'
        )
