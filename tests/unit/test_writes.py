"""What a write reports beyond its revision: whether it was big enough that the server
hands the heap back after it (a full collection holds the GIL: not after a small one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from metafs.catalog.paths import parse_doc_path
from metafs.catalog.writes import Writes
from metafs.store import open_store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.timeout(60)
@pytest.mark.anyio
async def test_a_write_is_big_from_a_thousand_operations_and_a_small_delete_is_not(tmp_path: Path) -> None:
    store = open_store(f"sqlite://{tmp_path / 'w.db'}")
    writes = Writes(store)
    try:
        units = {f"u-{i:05d}": {"cardinal_value": i, "hostname": f"h{i}"} for i in range(1_100)}
        small = {"x-0": {"cardinal_value": 0, "hostname": "x"}}
        services = {"big": {"units": units}, "small": {"units": small}}
        loaded = await writes.load({"accounts": {"7": {"stacks": {"s": {"services": services}}}}})
        assert loaded.big and loaded.changed >= 1_100
        gone = await writes.delete(parse_doc_path(["accounts", "7", "stacks", "s", "services", "small"]))
        assert not gone.big and gone.revision > loaded.revision
        all_gone = await writes.delete(parse_doc_path(["accounts", "7"]))
        assert all_gone.big  # one index deletion per unit
    finally:
        await store.close()
