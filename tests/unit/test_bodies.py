"""Request bodies and the mount's big answers: a big JSON document is parsed event by
event (metafs/jsonstream.py), to the same data as ``json.loads``, with the same refusals."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metafs.catalog import bodies
from metafs.catalog.errors import BadRequest
from metafs.jsonstream import STREAM_AFTER, pieces, streamed
from tests.support.strategies import json_values


@pytest.mark.timeout(60)
@settings(max_examples=200, deadline=None)
@given(json_values())
def test_streamed_is_json_loads(value: Any) -> None:
    raw = json.dumps(value, ensure_ascii=False).encode()
    got = streamed(raw)
    assert got == json.loads(raw)
    assert json.dumps(got) == json.dumps(json.loads(raw))  # same types (int vs float) too


@pytest.mark.timeout(30)
def test_repeated_keys_keep_the_last_like_json_loads() -> None:
    assert streamed(b'{"a": 1, "a": {"b": 2}}') == {"a": {"b": 2}}
    assert not math.isnan(streamed(b"[0.5]")[0])


def _big(doc: bytes) -> bytes:
    """``doc`` (an object) padded past the size at which bodies are streamed."""
    pad = b'"pad": "' + b"x" * STREAM_AFTER + b'", '
    return doc[:1] + pad + doc[1:]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"a": 1} x', "trailing garbage"),
        (b'{"a": 1', "premature EOF"),
        (b'{"a": 1, }', "invalid object key"),
        (b'{"a": NaN}', "invalid char"),
        (b'{"a": 18446744073709551616}', "integer overflow"),
        (b'{"a": ' + b"[" * 600 + b"]" * 600 + b"}", "nested too deeply"),
    ],
)
def test_a_big_bad_body_is_refused_naming_why(body: bytes, message: str) -> None:
    big = _big(body)
    assert len(big) > STREAM_AFTER
    with pytest.raises(BadRequest) as err:
        bodies.parse_body(big, "application/json", "load document")
    assert str(err.value).startswith("load document: ") and message in str(err.value), err.value


@pytest.mark.timeout(30)
def test_a_big_body_parses_whole() -> None:
    doc = {"accounts": {"9": {"stacks": {}}}, "hosts": {"h": {"hostname": "h", "n": [1, 2.5, None]}}}
    data = bodies.parse_body(_big(json.dumps(doc).encode()), "application/json", "load document")
    assert len(data.pop("pad")) == STREAM_AFTER and data == doc


@pytest.mark.timeout(60)
@settings(max_examples=300, deadline=None)
@given(json_values(), st.integers(min_value=0, max_value=4), st.sampled_from([None, 1, 2]))
def test_pieces_is_json_loads(value: Any, levels: int, indent: int | None) -> None:
    raw = json.dumps({"c": {"a": value, "b": [value]}, "r": 1}, ensure_ascii=False, indent=indent).encode()
    assert pieces(raw, levels) == json.loads(raw)
    top = json.dumps(value).encode()
    assert pieces(b" \n" + top + b"\t ", levels) == json.loads(top)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1} x',
        b'{"a": 1',
        b'{"a": 1, }',
        b"{a: 1}",
        b'{"a" 1}',
        b'{"a": 1 "b": 2}',
        b"",
        b'{"a": {"b": }}',
    ],
)
def test_pieces_refuses_what_json_loads_refuses(raw: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(raw)
    with pytest.raises(ValueError):
        pieces(raw, 3)
