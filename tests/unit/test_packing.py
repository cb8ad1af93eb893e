"""Peers kept packed in the mount's views (metafs/mount/packing.py): the same tree as
unpacked, a fraction of the bytes, unpacked within a bound and gone with their view."""

from __future__ import annotations

import gc
from typing import Any

from metafs import tree
from metafs.mount.packing import PackedDir, PeerPacker, Unpacked, zdict_of


def view_meta(peers: int, rev: int = 1) -> dict[str, Any]:
    def leaf(v: Any) -> dict[str, Any]:
        return {"r": rev, "m": 1.5, "v": v}

    def peer(i: int) -> dict[str, Any]:
        host = {"r": rev, "m": 1.5, "c": {"name": leaf("h1"), "labels": {"r": rev, "m": 1.5, "c": {}}}}
        fields = {
            "hostname": leaf(f"s-{i}"),
            "cardinal_value": leaf(i),
            "ports": leaf(["80/tcp"]),
            "host": host,
        }
        return {"r": rev, "m": 1.5, "c": fields}

    all_hosts = {"r": rev, "m": 1.5, "c": {f"u{i:03d}": peer(i) for i in range(peers)}}
    service = {"r": rev, "m": 1.5, "c": {"all_hosts": all_hosts, "service_domain": leaf("svc.example")}}
    return {"r": rev, "m": 1.5, "c": {"self": peer(0), "service": service}}


def test_a_packed_view_reads_as_the_plain_one_and_is_a_fraction_of_its_json() -> None:
    data = view_meta(100)
    packer = PeerPacker(Unpacked(1 << 20), None)
    packed = tree.merge_meta(None, data, pack=packer)
    plain = tree.from_meta(data)
    assert tree.to_meta(packed) == tree.to_meta(plain) == data
    peers = tree.descend(packed, ["service", "all_hosts"])
    assert isinstance(peers, tree.Dir) and all(type(p) is PackedDir for p in peers.children.values())
    assert type(tree.descend(packed, ["self"])) is tree.Dir  # only peers are packed
    assert packer.peers == 100 and packer.packed_bytes * 8 < packer.json_bytes
    assert packer.weight(packer.json_bytes) == packer.packed_bytes + 100 * 200


def test_a_delta_packs_the_changed_peers_against_the_services_dictionary() -> None:
    owner = Unpacked(1 << 20)
    old = tree.merge_meta(None, view_meta(10), pack=PeerPacker(owner, None))
    assert isinstance(old, tree.Dir)
    zdict = zdict_of(old)
    assert zdict is not None
    changed = view_meta(10, rev=2)
    peers = changed["c"]["service"]["c"]["all_hosts"]["c"]
    for name in list(peers)[1:]:
        peers[name] = tree.KEEP
    new = tree.merge_meta(old, changed, pack=PeerPacker(owner, zdict))
    before, after = (tree.descend(t, ["service", "all_hosts"]) for t in (old, new))
    assert isinstance(before, tree.Dir) and isinstance(after, tree.Dir)
    assert all(after.children[n] is before.children[n] for n in list(peers)[1:])  # kept: the same
    first = after.children["u000"]
    assert first is not before.children["u000"] and first.rev == 2 and zdict_of(new) is zdict
    assert tree.to_json(first) == tree.to_json(before.children["u000"])


def test_unpacked_peers_stay_within_the_bound_and_leave_with_their_view() -> None:
    owner = Unpacked(1200)  # two peers' trees (229 bytes of JSON each: ~550 estimated)
    root = tree.merge_meta(None, view_meta(5), pack=PeerPacker(owner, None))
    peers = tree.descend(root, ["service", "all_hosts"])
    assert isinstance(peers, tree.Dir)
    for name in ["u000", "u001", "u002"]:
        hostname = tree.descend(peers, [name, "hostname"])
        assert isinstance(hostname, tree.Leaf) and hostname.value == f"s-{int(name[1:])}"
    assert len(owner) == 2 and 0 < owner.size <= 1200
    first = peers.children["u000"]
    assert isinstance(first, PackedDir) and first._kids is None  # packed again
    assert tree.descend(first, ["cardinal_value"]) == tree.Leaf(0, 1, 1.5)  # and unpacked on use
    del root, peers, first, hostname
    gc.collect()
    assert (len(owner), owner.size) == (0, 0)
