"""How long a mount's event loop is held while it loads a big service's peers: the
mount's own view cache and client (as tests/bench/fleet.py drives them), a trio task
ticking every millisecond beside it, the longest gap between its ticks. The baseline is
what the loop was held when the peers were decoded and packed on it: ``json.loads`` and
:func:`~metafs.tree.merge_meta` of the same answer, timed here."""

from __future__ import annotations

import json
import time

import httpx
import trio

from metafs.mount.packing import PeerPacker, Unpacked
from metafs.protocol import PEERS_AT
from metafs.tree import Dir, merge_meta
from tests.support.servers import HEADERS
from tests.support.viewcaches import running_cache


async def _held(url: str, unit: str) -> float:
    worst, loading = 0.0, True

    async def tick() -> None:
        nonlocal worst
        last = time.perf_counter()
        while loading:
            await trio.sleep(0.001)
            now = time.perf_counter()
            worst, last = max(worst, now - last), now

    async with running_cache(url) as cache, trio.open_nursery() as nursery:
        await cache.get(unit)  # the view alone first: its peers are what is measured
        nursery.start_soon(tick)
        listed = await cache.node_at(unit, PEERS_AT, listing=True)
        assert isinstance(listed, Dir) and listed.children
        loading = False
    return worst * 1e3


def loop_held(url: str, unit: str, rounds: int = 5) -> tuple[list[float], float]:
    """Milliseconds: the longest the loop was held in each of ``rounds`` loads, and the
    median time to decode and pack the same answer on the calling thread."""
    held = [trio.run(_held, url, unit) for _ in range(rounds)]
    peers = httpx.get(f"{url}/v1/view/{unit}/service/all_hosts/", params={"format": "meta"}, headers=HEADERS)
    peers.raise_for_status()
    inline = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        merge_meta(
            None, json.loads(peers.content), pack=PeerPacker(Unpacked(256 << 20), None), path=PEERS_AT[:-1]
        )
        inline.append((time.perf_counter() - t0) * 1e3)
    return held, sorted(inline)[len(inline) // 2]
