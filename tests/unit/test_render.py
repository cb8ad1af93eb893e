"""The big-view renderer: JSON in pieces is exactly json.dumps."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings

from metafs.server.render import json_pieces
from tests.support.strategies import json_values


@pytest.mark.timeout(60)
@settings(max_examples=200, deadline=None)
@given(json_values(width=20, leaves=200))
def test_pieces_are_json_dumps(value: Any) -> None:
    assert "".join(json_pieces(value)) == json.dumps(value, separators=(",", ":"))
