"""heap.dismantle: a big transient freed piece by piece, never touching what is shared."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from metafs import heap


class _Model(BaseModel):
    labels: dict[str, str]
    nested: list[dict[str, list[int]]]


@pytest.mark.timeout(30)
def test_what_is_owned_is_emptied_and_what_is_shared_is_not() -> None:
    shared = {"still": ["in", "use"]}
    kept_model = _Model(labels={"a": "b"}, nested=[{"x": [1]}])
    doc = {
        "units": [{"labels": {"zone": "z1"}, "ports": ["80/tcp"]} for _ in range(3)],
        "shared": shared,
        "model": kept_model,
        "owned_model": _Model(labels={"c": "d"}, nested=[{"y": [2]}]),
    }
    inner = doc["units"]
    heap.dismantle(doc)
    assert doc == {}
    assert shared == {"still": ["in", "use"]}
    assert kept_model.labels == {"a": "b"} and kept_model.nested == [{"x": [1]}]
    # `inner` was referenced from here too: left whole, with everything below it
    assert inner == [{"labels": {"zone": "z1"}, "ports": ["80/tcp"]}] * 3


@pytest.mark.timeout(30)
def test_several_and_nested_owned_containers_are_all_emptied() -> None:
    a: list[object] = [[{"k": {1, 2}}], {"v": [[[]]]}]
    b = {"x": [1, 2, 3]}
    heap.dismantle(a, b)
    assert (a, b) == ([], {})
