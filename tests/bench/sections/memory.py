"""What a kept thing costs, measured with tracemalloc in this process (not RSS): a built
service view per unit, a mount's view tree per byte of its JSON and per view, an entry
of the mount's inode table. The bounds' estimates (catalog/views.py BYTES_PER_UNIT,
mount/viewcache.py TREE_PER_JSON_BYTE) are taken from these figures."""

from __future__ import annotations

import asyncio
import gc
import json
import tempfile
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from metafs import tree
from metafs.catalog import Writes
from metafs.catalog.views import BYTES_PER_UNIT, ServiceViews, service_view, view_tree
from metafs.mount.inodes import InodeTable
from metafs.mount.packing import TREE_PER_JSON_BYTE, PeerPacker, Unpacked
from metafs.store import open_store

from ..harness import Report, single
from ..workloads import big_service

SERVICES, UNITS = 20, 100


@contextmanager
def allocated() -> Iterator[list[int]]:
    """``with allocated() as got:``: afterwards ``got[0]`` is the bytes that what the block
    made still holds (tracemalloc, after a collection)."""
    got = [0]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    try:
        yield got
    finally:
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        got[0] = sum(s.size_diff for s in after.compare_to(before, "filename"))


def document() -> dict[str, Any]:
    doc: dict[str, Any] = {"accounts": {"9": {"stacks": {"bench": {"services": {}}}}}}
    services = doc["accounts"]["9"]["stacks"]["bench"]["services"]
    for s in range(SERVICES):
        services.update(big_service(UNITS, f"mem{s}")["accounts"]["9"]["stacks"]["bench"]["services"])
    return doc


async def measure(db: Path) -> dict[str, float]:
    store = open_store(f"sqlite://{db}")
    async with store.running():
        await Writes(store).load(document())
        cache = ServiceViews(1 << 40)
        names = [f"mem{s}" for s in range(SERVICES)]
        async with store.snapshot() as snap:
            with allocated() as views:
                for name in names:
                    await service_view(snap, "9", "bench", name, cache)
            bodies = []
            for name in names:
                view = await view_tree(snap, f"{name}-00000", cache)
                assert view is not None
                bodies.append(json.dumps(tree.to_meta(view), separators=(",", ":")).encode())
    await store.close()
    with allocated() as trees:
        kept = [tree.from_meta(json.loads(b)) for b in bodies]
    json_bytes = sum(map(len, bodies))
    owner = Unpacked(1 << 40)
    with allocated() as packed:  # the packers (and their zlib state) go, as after a fetch
        packers = [PeerPacker(owner, None) for _ in bodies]
        kept_packed = [
            tree.merge_meta(None, json.loads(b), pack=k) for b, k in zip(bodies, packers, strict=True)
        ]
        estimate = sum(k.weight(len(b)) for b, k in zip(bodies, packers, strict=True))
        del packers
    table = InodeTable(())
    paths = [(f"u{i:05d}", "self", "hostname") for i in range(10_000)]
    with allocated() as inodes:
        for p in paths:
            table.looked_up(table.ino(p))
    assert len(kept) == len(kept_packed) == SERVICES and len(table) == len(paths) + 1
    return {
        "service_view_per_unit": views[0] / (SERVICES * UNITS),
        "tree_per_json_byte": trees[0] / json_bytes,
        "tree_per_view": trees[0] / SERVICES,
        "json_per_view": json_bytes / SERVICES,
        "packed_per_view": packed[0] / SERVICES,
        "packed_estimate": estimate / SERVICES,
        "per_inode": inodes[0] / len(paths),
    }


def run(report: Report) -> None:
    print(f"memory: what kept things cost (tracemalloc; {SERVICES} services of {UNITS} units)")
    with tempfile.TemporaryDirectory(prefix="metafs-memory-") as d:
        m = asyncio.run(measure(Path(d) / "mem.db"))

    per_unit = ("the estimate (BYTES_PER_UNIT)", float(BYTES_PER_UNIT))
    report.record(
        "memory", "server: a kept service view, per unit", single(m["service_view_per_unit"]), "B", per_unit
    )
    per_byte = ("the estimate (TREE_PER_JSON_BYTE)", TREE_PER_JSON_BYTE)
    report.record(
        "memory", "mount: a view's tree, per byte of its JSON", single(m["tree_per_json_byte"]), "B", per_byte
    )
    report.record("memory", "mount: a view of a 100-unit service", single(m["tree_per_view"] / 1024), "KB")
    report.record("memory", "mount: its meta JSON", single(m["json_per_view"] / 1024), "KB")
    report.record(
        "memory",
        "mount: the same view, peers packed (as kept)",
        single(m["packed_per_view"] / 1024),
        "KB",
        ("the estimate (PeerPacker.weight)", m["packed_estimate"] / 1024),
    )
    report.record("memory", "mount: an inode the kernel holds", single(m["per_inode"]), "B")
