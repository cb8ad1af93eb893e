"""Unit tests of the model's validation messages and of the tree's names and rendering."""

from __future__ import annotations

import pytest
import yaml

from metafs import model, tree
from tests.support.servers import EXAMPLE


def errors(data: object) -> list[str]:
    with pytest.raises(model.ModelError) as exc:
        model.validate(model.Document, data)
    return exc.value.details


def unit_doc(**unit: object) -> dict[str, object]:
    return {"accounts": {"5": {"stacks": {"t": {"services": {"s": {"units": {"x": unit}}}}}}}}


def test_example_is_valid() -> None:
    doc = model.validate(model.Document, yaml.safe_load(EXAMPLE.read_text()))
    assert isinstance(doc, model.Document)
    assert model.duplicate_unit_ids(doc) == []
    assert len(doc.hosts) == 3 and sorted(doc.accounts) == ["5", "7"]


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        ({"cardinal_value": "1", "hostname": "h"}, "cardinal_value: expected an integer"),
        ({"cardinal_value": True, "hostname": "h"}, "cardinal_value: expected an integer"),
        ({"cardinal_value": -1, "hostname": "h"}, "cardinal_value: must be >= 0"),
        ({"cardinal_value": 1}, "hostname: required field is missing"),
        ({"cardinal_value": 1, "hostname": "h", "colour": "red"}, "colour: unknown field"),
        (
            {"cardinal_value": 1, "hostname": "h", "virt_ip_address": "10.0.0"},
            "virt_ip_address: '10.0.0' is not an IPv4",
        ),
        ({"cardinal_value": 1, "hostname": "h", "ports": "80"}, "ports: expected a list"),
        (
            {"cardinal_value": 1, "hostname": "h", "ports": ["a\nb"]},
            "ports.0: list items cannot contain a newline",
        ),
        (
            {"cardinal_value": 1, "hostname": "h", "labels": {"k": {"x": 1}}},
            "labels.k: expected a string, number or boolean",
        ),
        ({"cardinal_value": 1, "hostname": "h", "host": "../etc"}, "host: invalid name '../etc'"),
    ],
)
def test_errors_name_the_field(unit: dict[str, object], expected: str) -> None:
    assert any(
        e.startswith("accounts.5.stacks.t.services.s.units.x." + expected) for e in errors(unit_doc(**unit))
    ), errors(unit_doc(**unit))


def test_metadata_errors_point_inside_the_value() -> None:
    doc = {"accounts": {"5": {"stacks": {"t": {"services": {"s": {"metadata": {"a": {"b": [1, None]}}}}}}}}}
    assert errors(doc) == [
        "accounts.5.stacks.t.services.s.metadata.a.b.1: null is not allowed (leave the key out instead)"
    ]
    deep: dict[str, object] = {"v": 1}
    for _ in range(model.MAX_DEPTH + 2):
        deep = {"d": deep}
    assert (
        "nested deeper than"
        in errors({"accounts": {"5": {"stacks": {"t": {"services": {"s": {"metadata": deep}}}}}}})[0]
    )


def test_bad_names_and_duplicates() -> None:
    assert errors({"accounts": {"a/b": {}}})[0].startswith("accounts.a/b: invalid name")
    assert errors({"hosts": {"h": {"agent_ip": 5}}}) == ["hosts.h.agent_ip: expected a string"]
    dup = {
        "accounts": {
            a: {
                "stacks": {
                    "t": {"services": {"s": {"units": {"u1": {"cardinal_value": 1, "hostname": "h"}}}}}
                }
            }
            for a in ("1", "2")
        }
    }
    doc = model.validate(model.Document, dup)
    assert model.duplicate_unit_ids(doc) == [
        "accounts.2.stacks.t.services.s.units.u1: unit id already used at "
        "accounts.1.stacks.t.services.s.units.u1"
    ]


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ("io.example/role", "io.example%2Frole"),
        ("50%", "50%25"),
        (".", "%2E"),
        ("..", "%2E%2E"),
        ("a\nb", "a%0Ab"),
        ("plain name", "plain name"),
    ],
)
def test_names_encode_and_decode(name: str, encoded: str) -> None:
    assert tree.encode_name(name) == encoded
    assert tree.decode_name(encoded) == name
    assert "/" not in encoded and encoded not in (".", "..", "")


def test_rendering() -> None:
    assert tree.leaf_bytes("x") == b"x\n"
    assert tree.leaf_bytes(True) == b"true\n"
    assert tree.leaf_bytes(2.5) == b"2.5\n"
    assert tree.leaf_bytes(["a", 1]) == b"a\n1\n"
    assert tree.leaf_bytes([]) == b""
    node = tree.build({"b": {"c": 1}, "a/x": "v", "l": [{"k": 1}]}, lambda p: (len(p), 1.0))
    assert tree.render_text(node) == b"a%2Fx\nb/\nl/\n"
    assert tree.to_json(node) == {"b": {"c": 1}, "a/x": "v", "l": [{"k": 1}]}
    assert tree.to_json(tree.from_meta(tree.to_meta(node))) == tree.to_json(node)
    assert node.rev == 3  # a directory changed when its newest leaf did
