"""Property-based tests (hypothesis) of the model, the catalog and the store together:
random documents and update sequences keep the invariants. More examples with
METAFS_FUZZ_EXAMPLES=500."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metafs import model, tree
from metafs.catalog import CatalogError
from metafs.catalog import Writes as Catalog
from metafs.catalog.layouts import document_tree
from metafs.catalog.paths import seed_to_target
from metafs.catalog.views import view_tree
from metafs.store import open_store

EXAMPLES = int(os.environ.get("METAFS_FUZZ_EXAMPLES", "25"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,6}", fullmatch=True)
text = st.text(st.characters(blacklist_categories=["Cs", "Cc"]), min_size=0, max_size=12)
keys = st.text(st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=10)
scalars = st.one_of(
    text, st.integers(-(2**40), 2**40), st.booleans(), st.floats(allow_nan=False, allow_infinity=False)
)
labels = st.dictionaries(keys, scalars, max_size=4)
metadata = st.recursive(
    scalars,
    lambda inner: st.dictionaries(keys, inner, max_size=3) | st.lists(inner, max_size=3),
    max_leaves=8,
)
units = st.fixed_dictionaries(
    {"cardinal_value": st.integers(0, 1000), "hostname": text.filter(bool)},
    optional={"ports": st.lists(text.filter(lambda t: "\n" not in t), max_size=3), "labels": labels},
)
services = st.fixed_dictionaries(
    {"units": st.dictionaries(names, units, max_size=4)},
    optional={
        "service_domain": text,
        "scale": st.integers(0, 50),
        "labels": labels,
        "metadata": st.dictionaries(keys, metadata, max_size=3),
    },
)
stacks = st.fixed_dictionaries(
    {"services": st.dictionaries(names, services, max_size=3)}, optional={"labels": labels}
)
documents = st.fixed_dictionaries(
    {
        "accounts": st.dictionaries(
            names, st.fixed_dictionaries({"stacks": st.dictionaries(names, stacks, max_size=2)}), max_size=2
        )
    }
)


def unique_unit_ids(doc: dict[str, Any]) -> dict[str, Any]:
    """Unit ids are unique server-wide: rename them u0, u1, ..."""
    n = 0
    for acc in doc["accounts"].values():
        for stack in acc["stacks"].values():
            for svc in stack["services"].values():
                renamed = {}
                for unit in svc["units"].values():
                    renamed[f"u{n}"] = unit
                    n += 1
                svc["units"] = renamed
    return doc


def run(fn: Any) -> Any:
    with tempfile.TemporaryDirectory() as d:
        store = open_store(f"sqlite://{d}/p.db")

        async def main() -> Any:
            try:
                return await fn(Catalog(store))
            finally:
                await store.close()

        return anyio.run(main)


def clean(value: Any) -> Any:
    """What a value looks like after a JSON round trip."""
    return json.loads(json.dumps(value))


@SETTINGS
@given(documents.map(unique_unit_ids))
def test_a_loaded_document_is_what_every_view_shows(doc: dict[str, Any]) -> None:
    async def check(cat: Catalog) -> None:
        result = await cat.load(doc)
        assert result.revision == (1 if result.changed else 0)
        again = await cat.load(doc)
        assert (again.revision, again.changed) == (result.revision, 0)  # idempotent
        async with cat.store.snapshot() as snap:
            for a, acc in doc["accounts"].items():
                for t, stack in acc["stacks"].items():
                    for s, svc in stack["services"].items():
                        for u, unit in svc["units"].items():
                            view = await view_tree(snap, u)
                            assert view is not None
                            data = tree.to_json(view)
                            me = data["self"]
                            assert me["deployment_unit_id"] == f"{a}/{t}/{s}/{u}"
                            assert (me["cardinal_value"], me["hostname"]) == (
                                unit["cardinal_value"],
                                unit["hostname"],
                            )
                            assert me["labels"] == clean(unit.get("labels", {}))
                            assert me.get("ports") == unit.get("ports")
                            assert sorted(data["service"]["all_hosts"]) == sorted(svc["units"])
                            assert data["service"]["metadata"] == clean(svc.get("metadata", {}))
                            assert data["revision"] <= result.revision
                            # every file name is a single, reversible path component
                            labels_dir = tree.descend(view, ["self", "labels"])
                            assert isinstance(labels_dir, tree.Dir)
                            for name in tree.listing(labels_dir).splitlines():
                                assert "/" not in name and name not in (".", "..")
                                assert tree.encode_name(tree.decode_name(name)) == name
            exported = tree.to_json(await document_tree(snap, ["accounts"]))  # type: ignore[arg-type]
        assert model.validate(model.Document, {"accounts": exported})  # what GET shows, load takes

    run(check)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("hostname"), st.integers(0, 5), text),
        st.tuples(st.just("cardinal"), st.integers(0, 5), st.one_of(st.integers(-3, 100), text)),
        st.tuples(st.just("label"), st.integers(0, 5), keys, scalars),
        st.tuples(st.just("delete"), st.integers(0, 5), st.none()),
        st.tuples(st.just("bad-load"), st.integers(0, 5), st.none()),
    ),
    max_size=12,
)


@SETTINGS
@given(ops)
def test_update_sequences_keep_the_invariants(sequence: list[tuple[Any, ...]]) -> None:
    """Each committed change adds exactly one revision, a refused one changes nothing, and
    the store always holds what a plain dict model says it should."""
    base = {f"u{i}": {"cardinal_value": i, "hostname": f"h{i}"} for i in range(6)}
    doc = {"accounts": {"1": {"stacks": {"t": {"services": {"s": {"units": base}}}}}}}

    async def check(cat: Catalog) -> None:
        expected = json.loads(json.dumps(base))
        rev = (await cat.load(doc)).revision
        for op in sequence:
            kind, i, *args = op
            uid = f"u{i}"
            seed = seed_to_target(["1", "t", "s", uid])
            try:
                if kind == "hostname":
                    res = await cat.put(
                        seed_to_target(["1", "t", "s", uid, "hostname"]),
                        args[0].encode(),
                        "text/plain",
                    )
                    if uid in expected and args[0]:
                        expected[uid]["hostname"] = args[0]
                elif kind == "cardinal":
                    res = await cat.put(
                        seed_to_target(["1", "t", "s", uid, "cardinal_value"]),
                        json.dumps(args[0]).encode(),
                        "application/json",
                    )
                    if uid in expected and isinstance(args[0], int) and args[0] >= 0:
                        expected[uid]["cardinal_value"] = args[0]
                elif kind == "label":
                    body = json.dumps(args[1]).encode()
                    res = await cat.put(
                        seed_to_target(["1", "t", "s", uid, "labels", args[0]]),
                        body,
                        "application/json",
                    )
                    if uid in expected:
                        expected[uid].setdefault("labels", {})[args[0]] = clean(args[1])
                elif kind == "delete":
                    res = await cat.delete(seed)
                    expected.pop(uid, None)
                else:  # a document that is half good, half bad: nothing of it may land
                    bad = json.loads(json.dumps(doc))
                    bad["accounts"]["1"]["stacks"]["t"]["services"]["s"]["units"] = {
                        "new-good": {"cardinal_value": 1, "hostname": "ok"},
                        uid: {"cardinal_value": "not a number", "hostname": "x"},
                    }
                    res = await cat.load(bad)
                    raise AssertionError("a bad document was accepted")
            except (CatalogError, model.ModelError):
                assert await cat.store.revision() == rev
                continue
            assert res.revision == rev + (1 if res.changed else 0)
            rev = res.revision
        async with cat.store.snapshot() as snap:
            node = await document_tree(snap, ["accounts", "1", "stacks", "t", "services", "s", "units"])
        actual = tree.to_json(node) if node is not None else {}
        want = {u: {"labels": {}, "sidekicks": {}, **v} for u, v in expected.items()}
        assert actual == want

    run(check)
