"""The model / vmodel id rules: not empty, at most 256 bytes of UTF-8, no control characters; a
refusal names the rule and never echoes a huge id."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.core.ids import MAX_ID_BYTES, check_id, check_ids, shown


@pytest.mark.parametrize("value", ["sklearn-iris", "a", "x" * MAX_ID_BYTES, "modèle-é", "a b", "ü" * 128,
                                   "isvc__isvc-0123abcd", "名前/with:odd@chars", "\u00a0nbsp"])
def test_ids_that_follow_the_rules_pass(value: str) -> None:
    assert check_id(value) == value


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "must not be empty"),
        ("x" * (MAX_ID_BYTES + 1), "is 257 bytes long; ids are at most 256 bytes"),
        ("ü" * 129, "is 258 bytes long"),
        ("a\x00b", "control character U+0000 at position 1"),
        ("line\nbreak", "U+000A"),
        ("del\x7f", "U+007F"),
        ("c1\x85", "U+0085"),
        ("tab\tx", "U+0009"),
        ("bad\udc80", "lone surrogate"),
    ],
)
def test_ids_that_break_a_rule_are_refused_naming_it(value: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(fragment)):
        check_id(value)


def test_a_huge_id_is_not_echoed() -> None:
    huge = "m" * (1 << 20)
    with pytest.raises(InvalidArgument) as info:
        check_id(huge, "vmodel id")
    message = str(info.value)
    assert message.startswith("vmodel id is 1048576 bytes long")
    assert len(message) < 300 and "(1048576 characters)" in message


def test_check_ids_names_which_id() -> None:
    check_ids()
    check_ids(model_id="m", vmodel_id="v")
    with pytest.raises(InvalidArgument, match="^vmodel id must not be empty"):
        check_ids(model_id="m", vmodel_id="")
    with pytest.raises(InvalidArgument, match="^model id 'a\\\\nb' contains"):
        check_ids(model_id="a\nb", vmodel_id="v")


def test_shown_cuts_and_escapes() -> None:
    assert shown("abc") == "'abc'"
    assert shown("a\x00") == "'a\\x00'"
    assert shown("x" * 100, limit=4) == "'xxxx'... (100 characters)"


@given(st.text(max_size=300))
def test_the_rules_hold_for_any_text(value: str) -> None:
    try:
        check_id(value)
    except InvalidArgument:
        encoded = value.encode("utf-8", "surrogatepass")
        assert (not value or len(encoded) > MAX_ID_BYTES
                or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in value))
    else:
        assert value and len(value.encode("utf-8")) <= MAX_ID_BYTES
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value)
