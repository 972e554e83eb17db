"""The key layout: one module builds and parses every key; odd ids survive a round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.store.keys import KeyKind, Keys, ParsedKey

KEYS = Keys(root="kserve-mesh/default")


def test_layout_matches_reference() -> None:
    assert KEYS.model("m1") == "kserve-mesh/default/registry/m1"
    assert KEYS.vmodel("vm") == "kserve-mesh/default/vmodels/vm"
    assert KEYS.instance("i-1") == "kserve-mesh/default/instances/i-1"
    assert KEYS.leader() == "kserve-mesh/default/leader"
    assert KEYS.config() == "kserve-mesh/default/config"
    assert KEYS.isvc("ns", "name") == "kserve-mesh/default/isvcs/ns/name"
    assert KEYS.isvcs_prefix("ns") == "kserve-mesh/default/isvcs/ns/"
    assert Keys.for_namespace("team a") == Keys("kserve-mesh/team%20a")


def test_ids_with_slashes_stay_one_segment_and_prefixes_do_not_overlap() -> None:
    key = KEYS.model("a/b")
    assert key == "kserve-mesh/default/registry/a%2Fb"
    assert KEYS.model_id_of(key) == "a/b"
    # The prefix of model "a" is not a prefix of the key of model "a/b": ranges stay exact.
    assert not key.startswith(KEYS.model("a") + "/")
    assert not KEYS.model("a%2F").startswith(KEYS.model("a/"))
    assert KEYS.model("a%2F") != KEYS.model("a/")


@given(st.text(min_size=1))
def test_any_id_round_trips(raw: str) -> None:
    assert KEYS.model_id_of(KEYS.model(raw)) == raw
    assert KEYS.vmodel_id_of(KEYS.vmodel(raw)) == raw
    assert KEYS.instance_id_of(KEYS.instance(raw)) == raw
    assert KEYS.isvc_of(KEYS.isvc(raw, raw + "x")) == (raw, raw + "x")
    assert "/" not in KEYS.model(raw)[len(KEYS.models_prefix()) :]


def test_parse_classifies_every_kind() -> None:
    assert KEYS.parse(KEYS.model("m/1")) == ParsedKey(KeyKind.MODEL, "m/1")
    assert KEYS.parse(KEYS.vmodel("v")) == ParsedKey(KeyKind.VMODEL, "v")
    assert KEYS.parse(KEYS.instance("i")) == ParsedKey(KeyKind.INSTANCE, "i")
    assert KEYS.parse(KEYS.leader()) == ParsedKey(KeyKind.LEADER)
    assert KEYS.parse(KEYS.config()) == ParsedKey(KeyKind.CONFIG)
    assert KEYS.parse(KEYS.isvc("ns", "n")) == ParsedKey(KeyKind.ISVC, "ns/n")
    for key in KEYS.models_prefix(), KEYS.vmodels_prefix(), KEYS.instances_prefix():
        assert key.startswith(KEYS.root_prefix())


@pytest.mark.parametrize(
    "key",
    [
        "other-root/registry/m",
        "kserve-mesh/default/unknown/x",
        "kserve-mesh/default/registry/",
        "kserve-mesh/default/registry/a/b",
        "kserve-mesh/default/registry/%FF",
        "kserve-mesh/default/isvcs/ns",
    ],
)
def test_foreign_or_malformed_keys_are_rejected_clearly(key: str) -> None:
    with pytest.raises(InvalidArgument, match="key"):
        KEYS.parse(key)


@pytest.mark.parametrize("root", ["", "/abs", "trailing/"])
def test_bad_roots_are_rejected(root: str) -> None:
    with pytest.raises(InvalidArgument, match="root"):
        Keys(root)


def test_empty_ids_are_rejected() -> None:
    with pytest.raises(InvalidArgument, match="empty"):
        KEYS.model("")
