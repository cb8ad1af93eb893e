"""The big-view renderer: JSON in pieces is exactly json.dumps."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metafs.server.render import dumps_in_pieces

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=20) | st.dictionaries(st.text(max_size=6), inner, max_size=20),
    max_leaves=200,
)


@pytest.mark.timeout(60)
@settings(max_examples=200, deadline=None)
@given(_JSON)
def test_pieces_are_json_dumps(value: Any) -> None:
    assert dumps_in_pieces(value) == json.dumps(value, separators=(",", ":"))
